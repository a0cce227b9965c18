// Vercel's resumable-stream behind a small Node HTTP server: a peer of the relay in the
// fan-out benchmark (benchmarks/fanout.py). Routes as the relay's:
//   POST /api/chat               starts a resumable stream of the chat's turn, streamed back;
//   GET  /api/chat/:id/stream    resumes it (resumeExistingStream): the turn from its start.
// The producer reads the same upstream the relay's does (the benchmark server's
// POST /api/workers with the user's text as input) and passes its SSE text through.
// Environment: UPSTREAM (base URL), REDIS_URL, PORT (0: any). Prints {"port": N}.
import http from "node:http";
import { Readable } from "node:stream";
import { createClient } from "redis";
import { createResumableStreamContext } from "resumable-stream";

const upstream = process.env.UPSTREAM;
// The redis clients as resumable-stream's README says, connected here since we pass them.
const publisher = createClient({ url: process.env.REDIS_URL });
const subscriber = createClient({ url: process.env.REDIS_URL });
await Promise.all([publisher.connect(), subscriber.connect()]);
const context = createResumableStreamContext({ publisher, subscriber });

const HEADERS = {
  "content-type": "text/event-stream",
  "cache-control": "no-cache",
  "x-vercel-ai-ui-message-stream": "v1",
};

// resumable-stream's producer is a function returning a stream of strings at once: the
// fetch answers later, so its text is piped into a stream handed back now.
function upstreamText(input) {
  const { readable, writable } = new TransformStream();
  fetch(`${upstream}/api/workers`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ input, stream: true }),
  })
    .then((response) => response.body.pipeThrough(new TextDecoderStream()).pipeTo(writable))
    .catch((error) => writable.abort(error).catch(() => {}));
  return readable;
}

function send(res, stream) {
  res.writeHead(200, HEADERS);
  // Readable.fromWeb and pipe: the socket's backpressure reaches the stream.
  Readable.fromWeb(stream).pipe(res);
}

async function body(req) {
  const parts = [];
  for await (const part of req) parts.push(part);
  return JSON.parse(Buffer.concat(parts).toString("utf8"));
}

async function handle(req, res) {
  const url = new URL(req.url, "http://localhost");
  const joined = url.pathname.match(/^\/api\/chat\/([^/]+)\/stream$/);
  if (req.method === "POST" && url.pathname === "/api/chat") {
    const chat = await body(req);
    const text = chat.messages
      .at(-1)
      .parts.filter((part) => part.type === "text")
      .map((part) => part.text)
      .join("");
    const stream = await context.createNewResumableStream(chat.id, () => upstreamText(text));
    if (!stream) {
      res.writeHead(409).end();
      return;
    }
    send(res, stream);
  } else if (req.method === "GET" && joined) {
    const stream = await context.resumeExistingStream(decodeURIComponent(joined[1]));
    if (stream === undefined) res.writeHead(204).end(); // no such stream
    else if (stream === null) res.writeHead(422).end("Stream is already done");
    else send(res, stream);
  } else {
    res.writeHead(404).end();
  }
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((error) => {
    console.error(`${req.method} ${req.url}: ${error}`);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});
server.listen({ port: Number(process.env.PORT || 0), host: "127.0.0.1", backlog: 4096 }, () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
// Exit on SIGTERM through process.exit, so that --cpu-prof and the like write their files.
process.on("SIGTERM", () => process.exit(0));
