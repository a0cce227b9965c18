// The SDK's fold of SSE files: one JSON line per file named, each
// {"file", "message", "errors"} as sdk.mjs's fold gives them.
//
//   node fold_file.mjs <a.sse> [<b.sse> ...]
//
// tests/protocol/test_compact.py hands it a stream and its compacted form and
// holds the two folds equal: compaction must not change what the SDK builds.

import { readFile } from "node:fs/promises";
import { fold } from "./sdk.mjs";

for (const file of process.argv.slice(2)) {
  const bytes = await readFile(file);
  const stream = new ReadableStream({
    start(controller) {
      controller.enqueue(new Uint8Array(bytes));
      controller.close();
    },
  });
  const result = await fold(stream);
  process.stdout.write(`${JSON.stringify({ file, ...result })}\n`);
}
