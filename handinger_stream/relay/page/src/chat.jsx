import { useChat } from '@ai-sdk/react';
import { DefaultChatTransport, WebSocketChatTransport } from 'ai';
import { useEffect, useLayoutEffect, useRef, useState } from 'react';
import { Message } from './parts.jsx';

// The relay's resume (GET api/chat/{id}/stream, or a WebSocket "resume") plays the running
// turn from its first event: a replay, which the SDK folds from scratch. Both transports
// say so (resumeStreamIsReplay is true for them by default; it is spelled out for SSE).
// With a token: the Authorization header on every request of SSE's transport; a browser's
// WebSocket cannot carry one, so the token is offered as the subprotocol after
// handinger.bearer (the relay accepts handinger.bearer alone, never echoing the token).
function makeTransport(kind, api, socket, token) {
  if (kind === 'ws') {
    const protocols = token ? ['handinger.bearer', token] : undefined;
    return new WebSocketChatTransport({ url: socket, protocols });
  }
  const headers = token ? { Authorization: `Bearer ${token}` } : undefined;
  return new DefaultChatTransport({ api, headers, resumeStreamIsReplay: true });
}

export function Chat({ id, initialMessages, transport: kind, transportLabel, api, socket, token }) {
  const [transport] = useState(() => makeTransport(kind, api, socket, token));
  // A WebSocket stays open between turns: closed when this chat goes (another transport
  // chosen, another chat id). A later request would open a new one.
  useEffect(() => () => transport.close?.(), [transport]);
  const { messages, sendMessage, status, error, stop } = useChat({
    id,
    messages: initialMessages,
    transport,
    resume: true,
  });
  const [draft, setDraft] = useState('');
  const list = useRef(null);
  const pinned = useRef(true);
  const busy = status === 'submitted' || status === 'streaming';

  useEffect(() => {
    // After useChat's own effects, which start the resume request.
    document.body.dataset.ready = '1';
    return () => {
      delete document.body.dataset.ready;
    };
  }, []);

  // Follow the answer as it grows, unless the reader scrolled up to read something.
  useLayoutEffect(() => {
    const el = list.current;
    if (el && pinned.current) el.scrollTop = el.scrollHeight;
  }, [messages]);
  const onScroll = () => {
    const el = list.current;
    pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  };

  const send = () => {
    const text = draft.trim();
    if (!text || busy) return;
    setDraft('');
    pinned.current = true;
    sendMessage({ text });
  };
  const onKeyDown = (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      send();
    }
  };

  return (
    <>
      <main id="messages" ref={list} onScroll={onScroll}>
        {messages.length === 0 && <p className="empty">Ask the worker something.</p>}
        {messages.map((message) => (
          <Message key={message.id} message={message} />
        ))}
      </main>
      <footer>
        <div className="status-line">
          <span id="status" data-status={status}>
            {status}
          </span>
          <span id="transport-used" data-transport={kind}>
            over {transportLabel}
          </span>
          {error && <span id="error">{error.message}</span>}
        </div>
        <form
          className="composer"
          onSubmit={(event) => {
            event.preventDefault();
            send();
          }}
        >
          <textarea
            id="prompt"
            rows={1}
            placeholder="Message the worker (Enter sends, Shift+Enter for a new line)"
            value={draft}
            onChange={(event) => setDraft(event.target.value)}
            onKeyDown={onKeyDown}
          />
          {busy ? (
            // Stops reading here; the worker on the server keeps going.
            <button id="stop" type="button" onClick={() => stop()}>
              Stop
            </button>
          ) : (
            <button id="send" type="submit" disabled={!draft.trim()}>
              Send
            </button>
          )}
        </form>
      </footer>
    </>
  );
}
