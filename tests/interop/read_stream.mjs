// The AI SDK as a consumer: POSTs to a Handinger-shaped server (our emulator)
// and folds the answer with the SDK's own parser and readUIMessageStream.
//
//   node read_stream.mjs <base-url> <input>     (API key from HANDINGER_API_KEY)
//
// Prints {"workerId", "status", "message", "errors"} as one JSON line.

import { fold } from "./sdk.mjs";

const [baseUrl, input] = process.argv.slice(2);
const response = await fetch(`${baseUrl}/api/workers`, {
  method: "POST",
  headers: {
    authorization: `Bearer ${process.env.HANDINGER_API_KEY ?? ""}`,
    "content-type": "application/json",
    accept: "text/event-stream",
  },
  body: JSON.stringify({ input, stream: true }),
});
const result = {
  workerId: response.headers.get("x-handinger-worker-id"),
  status: response.status,
  contentType: response.headers.get("content-type"),
  uiMessageStream: response.headers.get("x-vercel-ai-ui-message-stream"),
};
Object.assign(result, response.ok ? await fold(response.body) : { body: await response.text() });
process.stdout.write(`${JSON.stringify(result)}\n`);
