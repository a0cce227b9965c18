// Writes the fixtures of the pinned major: for each scenario, the SSE bytes the
// SDK serialised (<name>.sse) and the UIMessage the SDK folded from them
// (<name>.json). Runs in a project's copy beside its node_modules; from the
// repository, regenerate.py puts it there and names the output folder:
//
//   node generate.mjs <dir>               (every scenario)
//   node generate.mjs <dir> unicode       (only the named ones)

import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { SDK_VERSION, fold, respond, scenarios } from "./sdk.mjs";

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
