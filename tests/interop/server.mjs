// The AI SDK as a live producer: a Handinger-shaped HTTP server on loopback.
//
// POST /api/workers {"input": "<scenario>", "stream": true} streams the
// scenario as createUIMessageStreamResponse serialises it. A tee of the very
// same SSE text is folded by readUIMessageStream; GET /sdk/<scenario> answers
// that fold ({message, errors}) once the stream has ended.
//
//   node server.mjs        prints {"port": N} on its first line of stdout

import { createServer } from "node:http";
import { Readable } from "node:stream";

import { fold, respond, scenarios } from "./sdk.mjs";

const folds = new Map();

function json(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

async function readJson(req) {
  const parts = [];
  for await (const part of req) parts.push(part);
  return JSON.parse(Buffer.concat(parts).toString("utf8") || "{}");
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, "http://localhost");
    if (req.method === "POST" && url.pathname === "/api/workers") {
      const { input } = await readJson(req);
      if (!(input in scenarios)) return json(res, 404, { error: { message: `no scenario ${input}` } });
      let done;
      folds.set(input, new Promise((resolve) => (done = resolve)));
      const response = respond(input, ({ stream }) => {
        fold(stream.pipeThrough(new TextEncoderStream())).then(done, (error) => done({ failed: String(error) }));
      });
      res.writeHead(response.status, Object.fromEntries(response.headers));
      Readable.fromWeb(response.body).pipe(res);
      return;
    }
    if (req.method === "GET" && url.pathname.startsWith("/sdk/")) {
      const pending = folds.get(decodeURIComponent(url.pathname.slice(5)));
      if (!pending) return json(res, 404, { error: { message: "no stream served yet" } });
      return json(res, 200, await pending);
    }
    json(res, 404, { error: { message: `no route ${req.method} ${url.pathname}` } });
  } catch (error) {
    json(res, 500, { error: { message: String(error) } });
  }
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
