// ai 7's own WebSocketChatTransport against the relay's WebSocket endpoint, folded
// with the SDK's own readUIMessageStream.
//
//   node ws_chat.mjs <scenario> <ws-url> <chat-id>...
//
// turn:      one message of one chat
// multiplex: one message of each chat, all at once, on one transport
// resume:    a message; after a few chunks a second transport (a reloaded page, a
//            socket of its own) reconnects to the running turn and replays it whole
//
// Prints one JSON line: {"sockets", "chats": {chatId: {"message", "errors", "chunks"}}}.

import { WebSocketChatTransport, readUIMessageStream } from "ai";

const [scenario, url, ...chatIds] = process.argv.slice(2);

// Node 22's global WebSocket, counted: the transport multiplexes on as few as it can.
let sockets = 0;
class CountedWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    sockets += 1;
  }
}

const transport = () => new WebSocketChatTransport({ url, webSocket: CountedWebSocket });

function send(chat, chatId, text) {
  return chat.sendMessages({
    chatId,
    trigger: "submit-message",
    messageId: undefined,
    messages: [{ id: `u-${chatId}`, role: "user", parts: [{ type: "text", text }] }],
    abortSignal: undefined,
  });
}

// Chunks -> the UIMessage, as useChat builds it; `take` stops after that many chunks.
async function fold(stream, take = Infinity) {
  const errors = [];
  let chunks = 0;
  let message = null;
  const counted = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        chunks += 1;
        controller.enqueue(chunk);
        if (chunks >= take) controller.terminate();
      },
    }),
  );
  for await (const snapshot of readUIMessageStream({
    stream: counted,
    onError: (error) => errors.push(error instanceof Error ? error.message : String(error)),
  })) {
    message = snapshot;
  }
  // JSON is the comparison's common ground: undefined fields vanish, as on the wire.
  return JSON.parse(JSON.stringify({ message, errors, chunks }));
}

const chats = {};
const one = transport();
if (scenario === "turn" || scenario === "multiplex") {
  const texts = ["What's the weather in Barcelona?", "Write a report on SSE history"];
  const streams = await Promise.all(chatIds.map((id, i) => send(one, id, texts[i % 2])));
  const folded = await Promise.all(streams.map((stream) => fold(stream)));
  chatIds.forEach((id, i) => (chats[id] = folded[i]));
} else if (scenario === "resume") {
  const [id] = chatIds;
  const first = await fold(await send(one, id, "Write a report on SSE history"), 5);
  const other = transport(); // a reloaded page: a socket of its own
  const stream = await other.reconnectToStream({ chatId: id, metadata: undefined });
  if (stream === null) throw new Error("no running turn to resume");
  chats[id] = { ...(await fold(stream)), before: first.chunks };
  other.close();
} else {
  throw new Error(`unknown scenario ${scenario}`);
}
one.close();
process.stdout.write(`${JSON.stringify({ sockets, chats })}\n`);
