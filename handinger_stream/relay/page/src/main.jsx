import { createRoot } from 'react-dom/client';
import { useEffect, useState } from 'react';
import { Chat } from './chat.jsx';
import './style.css';

// Relative to the page, so the relay works mounted under a prefix such as /relay/.
const apiUrl = (path) => new URL(path, document.baseURI).href;

// The same address as a WebSocket: ws: beside http:, wss: beside https:.
function socketUrl(path) {
  const url = new URL(path, document.baseURI);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

// How the chat reaches the relay, kept in the query (?transport=ws) so that a reload,
// a bookmark or a link keeps it; the chat id stays in the fragment.
const TRANSPORTS = { sse: 'SSE', ws: 'WebSocket' };

function transportFromQuery() {
  const asked = new URLSearchParams(location.search).get('transport');
  return Object.hasOwn(TRANSPORTS, asked ?? '') ? asked : 'sse';
}

function putTransportInQuery(transport) {
  const url = new URL(location.href);
  if (transport === 'sse') url.searchParams.delete('transport');
  else url.searchParams.set('transport', transport);
  history.replaceState(null, '', url.href);
}

// A relay with access control wants a bearer token. The page takes it from its URL's
// fragment (#token=..., optionally &chat=ID), which no browser sends to a server, keeps it
// in sessionStorage (this tab only, gone when the tab closes), and takes it out of the URL
// at once, so that it is neither bookmarked, shared nor shown.
const TOKEN_KEY = 'handinger-relay-token';

function takeTokenFromHash() {
  if (!location.hash.startsWith('#token=')) return;
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  const chat = params.get('chat');
  const rest = chat ? `#${encodeURIComponent(chat)}` : '';
  history.replaceState(null, '', location.pathname + location.search + rest);
}

function relayToken() {
  return sessionStorage.getItem(TOKEN_KEY) || null;
}

function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function newChatId() {
  // randomUUID exists only in secure contexts; a relay on a LAN address over http is not one.
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function chatIdFromHash() {
  takeTokenFromHash();
  const id = decodeURIComponent(location.hash.slice(1));
  if (id) return id;
  const fresh = newChatId();
  // replaceState, unlike assigning location.hash, adds no history entry and fires no hashchange.
  history.replaceState(null, '', `#${encodeURIComponent(fresh)}`);
  return fresh;
}

function App() {
  const [chatId, setChatId] = useState(chatIdFromHash);
  const [transport, setTransport] = useState(transportFromQuery);
  const [history, setHistory] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [token] = useState(relayToken);

  useEffect(() => {
    const onHash = () => setChatId(chatIdFromHash());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    document.body.dataset.transport = transport;
  }, [transport]);

  const chooseTransport = (next) => {
    if (next === transport) return;
    putTransportInQuery(next);
    setTransport(next);
  };

  // The history is fetched again when the transport changes: the chat is mounted anew over
  // the other transport, as after a reload, and resumes a turn that is running.
  useEffect(() => {
    const abort = new AbortController();
    setHistory(null);
    setLoadError(null);
    delete document.body.dataset.ready;
    fetch(apiUrl(`api/chat/${encodeURIComponent(chatId)}`), {
      signal: abort.signal,
      headers: authHeaders(relayToken()),
    })
      .then(async (response) => {
        // A chat the relay has never seen (or not for this token) has no history yet.
        if (response.status === 404) return setHistory([]);
        if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
        const body = await response.json();
        setHistory(Array.isArray(body.messages) ? body.messages : []);
      })
      .catch((error) => {
        if (!abort.signal.aborted) setLoadError(String(error.message || error));
      });
    return () => abort.abort();
  }, [chatId, transport]);

  return (
    <div className="app">
      <header>
        <h1>handinger-stream relay</h1>
        <code className="chat-id" title="chat id">{chatId}</code>
        <TransportSwitch value={transport} onChange={chooseTransport} />
      </header>
      {history ? (
        // The chat mounts only once its history is in place, so that useChat's resume
        // continues the running turn after the history instead of racing it.
        <Chat
          key={`${chatId} ${transport}`}
          id={chatId}
          initialMessages={history}
          transport={transport}
          transportLabel={TRANSPORTS[transport]}
          api={apiUrl('api/chat')}
          socket={socketUrl('api/chat/ws')}
          token={relayToken() ?? token}
        />
      ) : (
        <>
          <main id="messages" />
          <footer>
            <div className="status-line">
              {loadError ? (
                <>
                  <span id="status">error</span>
                  <span id="error">could not load the chat: {loadError}</span>
                </>
              ) : (
                <span id="status">loading</span>
              )}
            </div>
          </footer>
        </>
      )}
    </div>
  );
}

function TransportSwitch({ value, onChange }) {
  return (
    <div className="transport" role="group" aria-label="transport">
      <span className="transport-label">transport</span>
      {Object.entries(TRANSPORTS).map(([key, label]) => (
        <button
          key={key}
          id={`transport-${key}`}
          type="button"
          aria-pressed={value === key}
          onClick={() => onChange(key)}
        >
          {label}
        </button>
      ))}
    </div>
  );
}

createRoot(document.getElementById('root')).render(<App />);
