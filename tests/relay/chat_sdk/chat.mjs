// The AI SDK's own Chat against the relay: AbstractChat (what @ai-sdk/react's Chat is,
// with React's state) over a plain ChatState, in the npm project of one SDK major.
//
//   node chat.mjs BASE CHAT_ID SCENARIO '{"text": "...", "transport": "sse", ...}'
//
// BASE is the relay's URL (ending in /). Scenarios:
//   turn    one Chat sends a message and reads the answer to its end;
//   reload  it sends, reads part of the answer, stops reading (as a page being reloaded
//           does); a new Chat is built from the history fetched then, and resumes;
//   tabs    while the first Chat reads, a second on the same chat id (built from the
//           history fetched then) resumes; both read to the end;
//   drop    the connection of the first Chat's turn breaks some way into the answer (a
//           network error); the same Chat resumes, as useChat does when the page is
//           seen again (its ~resumeStreamIfDisconnected).
// Options: text, transport ("sse": DefaultChatTransport, "ws": WebSocketChatTransport),
// resumeStreamIsReplay (given to DefaultChatTransport only when present), breakAfter
// (drop: the text deltas that arrive before the connection, or the socket, breaks).
// Prints one JSON object: each Chat's messages, status and error, and what was seen on
// the way (the most assistant messages at once; whether the answer ever shrank).
import * as ai from 'ai';

const [base, chatId, scenario, optionsJson = '{}'] = process.argv.slice(2);
const options = JSON.parse(optionsJson);
const text = options.text ?? 'Hi';
const WAIT_MS = 60_000;

setTimeout(() => {
  console.error(`chat.mjs: ${scenario} took longer than ${WAIT_MS} ms`);
  process.exit(3);
}, WAIT_MS * 1.5).unref();

// What AbstractChat reads and writes; each change is looked at, as a UI would render it.
class WatchedState {
  constructor(messages) {
    this.messages = messages;
    this.status = 'ready';
    this.error = undefined;
    this.statuses = [];
    this.mostAssistants = 0;
    this.shrank = 0;
    this.lastAnswer = '';
  }

  pushMessage = (message) => {
    this.messages = [...this.messages, message];
    this.seen();
  };

  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
    this.seen();
  };

  replaceMessage = (index, message) => {
    this.messages = this.messages.map((m, i) => (i === index ? this.snapshot(message) : m));
    this.seen();
  };

  // The chat keeps folding into its own message object: what is stored is a copy.
  snapshot = (value) => (value === undefined ? value : structuredClone(value));

  seen() {
    const assistants = this.messages.filter((m) => m.role === 'assistant');
    this.mostAssistants = Math.max(this.mostAssistants, assistants.length);
    const answer = textOf(assistants.at(-1));
    if (!answer.startsWith(this.lastAnswer)) this.shrank += 1;
    this.lastAnswer = answer;
  }
}

class WatchedChat extends ai.AbstractChat {
  constructor({ messages, ...init }) {
    const state = new WatchedState(messages);
    super({ ...init, state });
    this.watched = state;
    const setStatus = this.setStatus.bind(this);
    this.setStatus = (update) => {
      if (state.statuses.at(-1) !== update.status) state.statuses.push(update.status);
      setStatus(update);
    };
  }
}

function textOf(message) {
  if (!message) return '';
  return message.parts
    .filter((p) => p.type === 'text')
    .map((p) => p.text)
    .join('');
}

// A fetch whose first POST's body breaks, as a dropped network does, once `deltas` text
// deltas of the answer have come through.
function breakingFetch(deltas) {
  let broken = false;
  return async (url, init) => {
    const response = await fetch(url, init);
    if (broken || init?.method !== 'POST' || !response.body) return response;
    broken = true;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let seen = 0;
    const body = new ReadableStream({
      async pull(controller) {
        if (seen >= deltas) {
          await reader.cancel();
          return controller.error(new TypeError('network error (the test broke the connection)'));
        }
        const { done, value } = await reader.read();
        if (done) return controller.close();
        seen += decoder.decode(value, { stream: true }).split('"text-delta"').length - 1;
        controller.enqueue(value);
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}

// The same for the WebSocket: the first socket closes once `deltas` text deltas came.
function breakingSocket(deltas) {
  let broken = false;
  return class extends WebSocket {
    constructor(...args) {
      super(...args);
      if (broken) return;
      broken = true;
      let seen = 0;
      this.addEventListener('message', (event) => {
        if (String(event.data).includes('"text-delta"') && ++seen >= deltas) this.close();
      });
    }
  };
}

function makeTransport() {
  if (options.transport === 'ws') {
    const url = `${base.replace(/^http/, 'ws')}api/chat/ws`;
    const webSocket = options.breakAfter === undefined ? undefined : breakingSocket(options.breakAfter);
    return new ai.WebSocketChatTransport({ url, webSocket });
  }
  const init = { api: `${base}api/chat` };
  if (options.breakAfter !== undefined) init.fetch = breakingFetch(options.breakAfter);
  if (options.resumeStreamIsReplay !== undefined) {
    init.resumeStreamIsReplay = options.resumeStreamIsReplay;
  }
  return new ai.DefaultChatTransport(init);
}

const chats = [];
function newChat(messages) {
  const errors = [];
  const chat = new WatchedChat({
    id: chatId,
    messages,
    transport: makeTransport(),
    onError: (error) => errors.push(String(error?.message ?? error)),
  });
  chat.errors = errors;
  chats.push(chat);
  return chat;
}

async function history() {
  const response = await fetch(`${base}api/chat/${encodeURIComponent(chatId)}`);
  if (!response.ok) throw new Error(`history: ${response.status} ${await response.text()}`);
  return (await response.json()).messages;
}

async function until(predicate, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`waited ${WAIT_MS} ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// Some way into the answer: its text has begun and the turn is still running.
const midAnswer = (chat) =>
  until(
    () => textOf(chat.messages.at(-1)).length >= 30 && chat.status === 'streaming',
    'the answer to begin',
  );

function report(chat) {
  const { statuses, mostAssistants, shrank } = chat.watched;
  return {
    messages: chat.messages,
    status: chat.status,
    error: chat.error ? String(chat.error.message ?? chat.error) : null,
    errors: chat.errors,
    statuses,
    mostAssistants,
    shrank,
  };
}

const out = { scenario };
if (scenario === 'turn') {
  const a = newChat([]);
  await a.sendMessage({ text });
  out.a = report(a);
} else if (scenario === 'reload') {
  const a = newChat([]);
  const sending = a.sendMessage({ text });
  await midAnswer(a);
  out.before = textOf(a.messages.at(-1));
  await a.stop(); // the page goes: its request is cut, the turn goes on at the relay
  await sending;
  out.a = report(a);
  out.history = await history();
  const b = newChat(out.history);
  await b.resumeStream();
  out.b = report(b);
} else if (scenario === 'tabs') {
  const a = newChat([]);
  const sending = a.sendMessage({ text });
  await midAnswer(a);
  out.history = await history();
  const b = newChat(out.history);
  await Promise.all([sending, b.resumeStream()]);
  out.a = report(a);
  out.b = report(b);
} else if (scenario === 'drop') {
  const a = newChat([]);
  await a.sendMessage({ text });
  out.before = textOf(a.messages.at(-1));
  out.dropped = report(a);
  await a['~resumeStreamIfDisconnected']();
  out.a = report(a);
} else {
  throw new Error(`no scenario ${scenario}`);
}
for (const chat of chats) chat.transport.close?.();
process.stdout.write(`${JSON.stringify(out)}\n`);
