// Regenerates tests/interop/fixtures: for each scenario, the SSE bytes the SDK
// serialised (<name>.sse) and the UIMessage the SDK folded from them (<name>.json).
//
//   node generate.mjs fixtures            (every scenario)
//   node generate.mjs fixtures unicode    (only the named ones)

import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { scenarios } from "./scenarios.mjs";
import { SDK_VERSION, fold, respond } from "./sdk.mjs";

const [outDir = "fixtures", ...only] = process.argv.slice(2);
await mkdir(outDir, { recursive: true });

for (const name of only.length ? only : Object.keys(scenarios)) {
  const bytes = new Uint8Array(await respond(name).arrayBuffer());
  const { message, errors } = await fold(new Response(bytes).body);
  const record = { scenario: name, about: scenarios[name].about, sdk: `ai@${SDK_VERSION}`, message, errors };
  await writeFile(join(outDir, `${name}.sse`), bytes);
  await writeFile(join(outDir, `${name}.json`), `${JSON.stringify(record, null, 2)}\n`);
  console.log(`${name}: ${bytes.length} bytes, ${message ? message.parts.length : 0} parts, ${errors.length} errors`);
}
