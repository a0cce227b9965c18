// The AI SDK on both ends: its own serialisation and its own client-side fold.
//
// Shared by the projects in ai6/ and ai7/: this file runs beside either's
// node_modules (tests/nodejs.py copies it there), so `ai` is the pinned major.

import {
  createUIMessageStreamResponse,
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
} from "ai";

export const SDK_VERSION = (await import("ai/package.json", { with: { type: "json" } })).default
  .version;
export const SDK_MAJOR = Number(SDK_VERSION.split(".")[0]);

// Every major runs the scenarios both have; 7 adds its own (chunk types and fields 6 lacks).
export const { scenarios } = await import(SDK_MAJOR >= 7 ? "./scenarios-ai7.mjs" : "./scenarios.mjs");

// A scenario as the SDK serves it: a Response whose body is the SSE bytes.
export function respond(name, consumeSseStream) {
  const scenario = scenarios[name];
  if (!scenario) throw new Error(`unknown scenario ${JSON.stringify(name)}`);
  const { stream, keepAliveMs } = scenario.build(name);
  return createUIMessageStreamResponse({ stream, keepAliveMs, consumeSseStream });
}

// Bytes -> chunks -> UIMessage, the way the SDK's chat transport and
// readUIMessageStream do it. `message` is the last message yielded (null when
// none was); `errors` are the error texts readUIMessageStream reported.
export async function fold(byteStream) {
  const chunks = parseJsonEventStream({ stream: byteStream, schema: uiMessageChunkSchema }).pipeThrough(
    new TransformStream({
      transform(result, controller) {
        if (!result.success) throw result.error;
        controller.enqueue(result.value);
      },
    }),
  );
  const errors = [];
  let message = null;
  for await (const snapshot of readUIMessageStream({
    stream: chunks,
    onError: (error) => errors.push(error instanceof Error ? error.message : String(error)),
  })) {
    message = snapshot;
  }
  // JSON is the comparison's common ground: undefined fields vanish, as on the wire.
  return JSON.parse(JSON.stringify({ message, errors }));
}
