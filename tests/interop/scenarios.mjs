// Scenarios: UI message streams made by the AI SDK's own producers.
//
// Each scenario returns { stream, keepAliveMs? }: a stream of UI message
// chunks built with createUIMessageStream (and its writer) or with streamText
// over the SDK's mock model. The SDK serialises it; nothing here writes SSE.
// Ids and clocks are fixed so that regenerating gives the same bytes.
//
// These are the scenarios of both majors (ai6/ and ai7/); scenarios-ai7.mjs
// adds 7's own. Each major's fixtures are what that major makes of them.

import {
  createUIMessageStream,
  dynamicTool,
  stepCountIs,
  streamText,
  tool,
} from "ai";
import * as aiTest from "ai/test";
import { z } from "zod";

const { convertArrayToReadableStream, mockId } = aiTest;

// The mock of the major's own model specification: V4 in ai 7, V3 in ai 6.
// The parts below are written as V3 parts; `forSpec` turns the one part whose
// shape V4 changed (a file's data, now tagged) into its V4 form.
export const MockModel = aiTest.MockLanguageModelV4 ?? aiTest.MockLanguageModelV3;
const SPEC_V4 = MockModel === aiTest.MockLanguageModelV4;

export function forSpec(part) {
  if (SPEC_V4 && (part.type === "file" || part.type === "reasoning-file") && typeof part.data === "string") {
    return { ...part, data: { type: "data", data: part.data } };
  }
  return part;
}

export const usage = (input, output) => ({
  inputTokens: { total: input, noCache: input, cacheRead: 0, cacheWrite: 0 },
  outputTokens: { total: output, text: output, reasoning: 0 },
});

export const finish = (unified = "stop", input = 10, output = 20) => ({
  type: "finish",
  finishReason: { unified, raw: unified },
  usage: usage(input, output),
});

export const head = (id = "resp-0") => [
  { type: "stream-start", warnings: [] },
  { type: "response-metadata", id, modelId: "mock-model-id", timestamp: new Date(0) },
];

export const textParts = (id, pieces) => [
  { type: "text-start", id },
  ...pieces.map((delta) => ({ type: "text-delta", id, delta })),
  { type: "text-end", id },
];

// A mock model that answers each call (step) with the next list of stream parts.
export function model(...steps) {
  let call = 0;
  return new MockModel({
    doStream: async () => {
      const parts = steps[Math.min(call, steps.length - 1)];
      call += 1;
      return { stream: convertArrayToReadableStream(parts.map(forSpec)) };
    },
  });
}

// streamText over the mock model, as a UI message stream with a fixed message id.
export function fromModel(name, steps, { tools, toUI = {}, stopWhen, ...rest } = {}) {
  const result = streamText({
    model: model(...steps),
    prompt: "interop",
    tools,
    stopWhen,
    _internal: { generateId: mockId({ prefix: "id" }), now: () => 0 },
    // The error reaches the UI stream as a chunk; the console needs no copy.
    onError: () => {},
    ...rest,
  });
  return result.toUIMessageStream({
    originalMessages: [],
    generateMessageId: () => `msg-${name}`,
    ...toUI,
  });
}

// createUIMessageStream with the writer; `execute` writes the chunks.
export function fromWriter(name, execute, { onError } = {}) {
  return createUIMessageStream({
    execute,
    generateId: () => `msg-${name}`,
    ...(onError ? { onError } : {}),
  });
}

export const writeAll = (chunks) => ({ writer }) => {
  for (const chunk of chunks) writer.write(chunk);
};

export const weatherTool = tool({
  description: "Weather in a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => ({ city, celsius: 21 }),
});

const brokenTool = tool({
  description: "Always fails",
  inputSchema: z.object({ q: z.string() }),
  execute: async () => {
    throw new Error("search backend down");
  },
});

const streamingTool = tool({
  description: "Reports progress, then a result",
  inputSchema: z.object({ n: z.number() }),
  async *execute({ n }) {
    for (let i = 1; i < n; i += 1) yield { progress: i / n };
    yield { progress: 1, done: true };
  },
});

const lookupTool = dynamicTool({
  description: "Dynamically registered lookup",
  inputSchema: z.object({ key: z.string() }),
  execute: async (input) => ({ value: `v:${input.key}` }),
});

export const toolCall = (toolCallId, toolName, input, deltas) => [
  { type: "tool-input-start", id: toolCallId, toolName },
  ...deltas.map((delta) => ({ type: "tool-input-delta", id: toolCallId, delta })),
  { type: "tool-input-end", id: toolCallId },
  { type: "tool-call", toolCallId, toolName, input },
];

export const UNICODE =
  "Line\u2028separator, paragraph\u2029separator, NEL\u0085here; " +
  "emoji 👩🏽‍💻🚀, CJK 漢字かなカナ한국어, combining e\u0301, RTL שלום, NUL-free \u00a0nbsp \ufeffbom";

// Split a string into pieces by code point, a few at a time, so deltas cut words.
export function pieces(text, size) {
  const points = Array.from(text);
  const out = [];
  for (let i = 0; i < points.length; i += size) out.push(points.slice(i, i + size).join(""));
  return out;
}

export const scenarios = {
  "plain-text": {
    about: "streamText: one text part in deltas, start with a message id, finish",
    build: (name) => ({
      stream: fromModel(name, [[...head(), ...textParts("t0", ["Hello", ", ", "world", "!"]), finish()]]),
    }),
  },

  "text-parts": {
    about: "writer: several text parts, two of them open at once and interleaved",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "text-start", id: "a" },
          { type: "text-delta", id: "a", delta: "First " },
          { type: "text-start", id: "b", providerMetadata: { mock: { part: "b" } } },
          { type: "text-delta", id: "b", delta: "Second " },
          { type: "text-delta", id: "a", delta: "part." },
          { type: "text-end", id: "a" },
          { type: "text-delta", id: "b", delta: "part." },
          { type: "text-end", id: "b", providerMetadata: { mock: { ended: true } } },
          { type: "text-start", id: "c" },
          { type: "text-delta", id: "c", delta: "Third." },
          { type: "text-end", id: "c" },
          { type: "finish", finishReason: "stop" },
        ]),
      ),
    }),
  },

  reasoning: {
    about: "streamText with reasoning before the answer (sendReasoning)",
    build: (name) => ({
      stream: fromModel(name, [
        [
          ...head(),
          { type: "reasoning-start", id: "r0", providerMetadata: { mock: { signature: "sig" } } },
          { type: "reasoning-delta", id: "r0", delta: "The user wants " },
          { type: "reasoning-delta", id: "r0", delta: "a greeting." },
          { type: "reasoning-end", id: "r0" },
          ...textParts("t0", ["Hi ", "there."]),
          finish(),
        ],
      ]),
    }),
  },

  sources: {
    about: "streamText with source-url and source-document parts (sendSources)",
    build: (name) => ({
      stream: fromModel(
        name,
        [
          [
            ...head(),
            {
              type: "source",
              sourceType: "url",
              id: "src-1",
              url: "https://example.com/a",
              title: "Example A",
            },
            { type: "source", sourceType: "url", id: "src-2", url: "https://example.com/b" },
            {
              type: "source",
              sourceType: "document",
              id: "doc-1",
              mediaType: "application/pdf",
              title: "Annual report",
              filename: "report.pdf",
              providerMetadata: { mock: { page: 3 } },
            },
            ...textParts("t0", ["Cited ", "answer."]),
            finish(),
          ],
        ],
        { toUI: { sendSources: true } },
      ),
    }),
  },

  files: {
    about: "streamText emitting a generated file, and a writer file part by URL",
    build: (name) => ({
      stream: createUIMessageStream({
        generateId: () => `msg-${name}`,
        execute: ({ writer }) => {
          writer.merge(
            fromModel(name, [
              [
                ...head(),
                { type: "file", mediaType: "text/plain", data: "aGVsbG8gZmlsZQ==" },
                ...textParts("t0", ["Here is a file."]),
                finish(),
              ],
            ]),
          );
        },
      }),
    }),
  },

  "file-url": {
    about: "writer: file parts by URL, with and without provider metadata",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start", messageId: "m-files" },
          { type: "file", url: "https://files.example.com/report.csv", mediaType: "text/csv" },
          {
            type: "file",
            url: "data:image/png;base64,iVBORw0KGgo=",
            mediaType: "image/png",
            providerMetadata: { mock: { width: 1 } },
          },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "tools-static": {
    about: "streamText, two steps: streamed tool input, output, an output error, then text",
    build: (name) => ({
      stream: fromModel(
        name,
        [
          [
            ...head("resp-0"),
            ...toolCall("call-1", "weather", '{"city":"Paris"}', ['{"ci', 'ty":"Pa', 'ris"}']),
            ...toolCall("call-2", "search", '{"q":"news"}', ['{"q":', '"news"}']),
            finish("tool-calls"),
          ],
          [...head("resp-1"), ...textParts("t1", ["It is ", "21°C."]), finish()],
        ],
        { tools: { weather: weatherTool, search: brokenTool }, stopWhen: stepCountIs(3) },
      ),
    }),
  },

  "tool-input-error": {
    about: "streamText: a tool call whose input fails the schema, and one for a tool that does not exist",
    build: (name) => ({
      stream: fromModel(
        name,
        [
          [
            ...head(),
            ...toolCall("call-bad", "weather", '{"town":"Paris"}', ['{"town":"Paris"}']),
            { type: "tool-call", toolCallId: "call-none", toolName: "teleport", input: "{}" },
            finish("tool-calls"),
          ],
          [...head("resp-1"), ...textParts("t1", ["Sorry."]), finish()],
        ],
        { tools: { weather: weatherTool }, stopWhen: stepCountIs(2) },
      ),
    }),
  },

  "tools-dynamic": {
    about: "streamText with a dynamic tool and a preliminary-output (generator) tool",
    build: (name) => ({
      stream: fromModel(
        name,
        [
          [
            ...head(),
            ...toolCall("call-d", "lookup", '{"key":"k1"}', ['{"key"', ':"k1"}']),
            { type: "tool-call", toolCallId: "call-p", toolName: "progress", input: '{"n":3}' },
            finish("tool-calls"),
          ],
          [...head("resp-1"), ...textParts("t1", ["Done."]), finish()],
        ],
        { tools: { lookup: lookupTool, progress: streamingTool }, stopWhen: stepCountIs(2) },
      ),
    }),
  },

  "tools-writer": {
    about: "writer: dynamic tool chunks, provider-executed tools, titles, approval and denial",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "start-step" },
          {
            type: "tool-input-start",
            toolCallId: "c1",
            toolName: "mcp_fetch",
            dynamic: true,
            title: "Fetch a page",
          },
          { type: "tool-input-delta", toolCallId: "c1", inputTextDelta: '{"url":"https://ex' },
          { type: "tool-input-delta", toolCallId: "c1", inputTextDelta: 'ample.com"}' },
          {
            type: "tool-input-available",
            toolCallId: "c1",
            toolName: "mcp_fetch",
            input: { url: "https://example.com" },
            dynamic: true,
            providerMetadata: { mock: { call: 1 } },
          },
          {
            type: "tool-output-available",
            toolCallId: "c1",
            output: { status: 200 },
            dynamic: true,
            providerMetadata: { mock: { result: 1 } },
          },
          {
            type: "tool-input-available",
            toolCallId: "c2",
            toolName: "web_search",
            input: { query: "x" },
            providerExecuted: true,
          },
          {
            type: "tool-output-available",
            toolCallId: "c2",
            output: [{ url: "https://example.com" }],
            providerExecuted: true,
          },
          {
            type: "tool-input-available",
            toolCallId: "c3",
            toolName: "delete_file",
            input: { path: "/tmp/x" },
          },
          { type: "tool-approval-request", toolCallId: "c3", approvalId: "ap-1" },
          {
            type: "tool-input-available",
            toolCallId: "c4",
            toolName: "delete_file",
            input: { path: "/etc" },
          },
          { type: "tool-approval-request", toolCallId: "c4", approvalId: "ap-2" },
          { type: "tool-output-denied", toolCallId: "c4" },
          {
            type: "tool-input-error",
            toolCallId: "c5",
            toolName: "mcp_fetch",
            input: "not json",
            errorText: "Invalid input",
            dynamic: true,
          },
          { type: "tool-input-start", toolCallId: "c6", toolName: "shell", inputEncoding: "text" },
          { type: "tool-input-delta", toolCallId: "c6", inputTextDelta: "ls -" },
          { type: "tool-input-delta", toolCallId: "c6", inputTextDelta: "la" },
          { type: "tool-output-error", toolCallId: "c6", errorText: "sandbox refused" },
          { type: "tool-input-start", toolCallId: "c7", toolName: "calc" },
          { type: "tool-input-delta", toolCallId: "c7", inputTextDelta: '{"expr":"1+' },
          {
            type: "tool-input-start",
            toolCallId: "c8",
            toolName: "mcp_write",
            dynamic: true,
            toolMetadata: { server: "files", risk: "high" },
          },
          {
            type: "tool-input-available",
            toolCallId: "c8",
            toolName: "mcp_write",
            input: { path: "a.txt" },
            dynamic: true,
          },
          {
            type: "tool-approval-request",
            toolCallId: "c8",
            approvalId: "ap-3",
            approvalDescriptor: { summary: "Write a.txt" },
            inputSchemaInput: null,
            signature: "sig-3",
          },
          { type: "tool-output-available", toolCallId: "c8", output: "ok", toolMetadata: { risk: "low" } },
          {
            type: "tool-input-available",
            toolCallId: "c9",
            toolName: "mcp_fetch",
            input: { url: "https://down.example.com" },
            dynamic: true,
          },
          { type: "tool-output-error", toolCallId: "c9", errorText: "connection refused", dynamic: true },
          { type: "finish-step" },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "data-parts": {
    about: "writer: data parts with ids (replaced in place), without ids, and transient",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "data-weather", id: "w1", data: { city: "Paris", status: "loading" } },
          { type: "text-start", id: "t" },
          { type: "text-delta", id: "t", delta: "Checking." },
          { type: "data-log", data: "first" },
          { type: "data-log", data: "second" },
          { type: "data-weather", id: "w1", data: { city: "Paris", status: "done", celsius: 21 } },
          { type: "data-weather", id: "w2", data: { city: "Oslo" } },
          { type: "data-notice", data: { text: "only for onData" }, transient: true },
          { type: "data-progress", id: "p", data: 0.5, transient: true },
          { type: "data-empty", id: "e", data: null },
          { type: "text-end", id: "t" },
          { type: "finish" },
        ]),
      ),
    }),
  },

  metadata: {
    about: "writer: message metadata at start, middle and finish, merged deeply",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          {
            type: "start",
            messageId: "m-meta",
            messageMetadata: { model: "m1", usage: { inputTokens: 5 }, tags: ["a"] },
          },
          { type: "text-start", id: "t" },
          { type: "text-delta", id: "t", delta: "Metered." },
          {
            type: "message-metadata",
            messageMetadata: { usage: { outputTokens: 7 }, tags: ["b"], nested: { x: { y: 1 } } },
          },
          { type: "text-end", id: "t" },
          {
            type: "finish",
            finishReason: "stop",
            messageMetadata: {
              usage: { totalTokens: 12, cachedInputTokens: 2 },
              costs: { totalUsd: 0.0042 },
              nested: { x: { z: 2 } },
              model: null,
            },
          },
        ]),
      ),
    }),
  },

  "metadata-model": {
    about: "streamText with a messageMetadata callback (start and finish usage)",
    build: (name) => ({
      stream: fromModel(name, [[...head(), ...textParts("t0", ["Counted."]), finish("stop", 11, 3)]], {
        toUI: {
          messageMetadata: ({ part }) => {
            if (part.type === "start") return { createdAt: 0 };
            if (part.type === "finish") return { usage: part.totalUsage };
            return undefined;
          },
        },
      }),
    }),
  },

  steps: {
    about: "streamText over three steps; the model reuses text ids across steps",
    build: (name) => ({
      stream: fromModel(
        name,
        [
          [
            ...head(),
            ...textParts("t", ["Let me check. "]),
            ...toolCall("call-1", "weather", '{"city":"Rome"}', ['{"city":"Rome"}']),
            finish("tool-calls"),
          ],
          [
            ...head("resp-1"),
            ...textParts("t", ["And Oslo. "]),
            ...toolCall("call-2", "weather", '{"city":"Oslo"}', ['{"city":"Oslo"}']),
            finish("tool-calls"),
          ],
          [...head("resp-2"), ...textParts("t", ["Both are 21°C."]), finish()],
        ],
        { tools: { weather: weatherTool }, stopWhen: stepCountIs(5) },
      ),
    }),
  },

  "error-after-text": {
    about: "writer: text, then execute throws; createUIMessageStream writes an error chunk",
    build: (name) => ({
      stream: fromWriter(
        name,
        async ({ writer }) => {
          writer.write({ type: "start" });
          writer.write({ type: "text-start", id: "t" });
          writer.write({ type: "text-delta", id: "t", delta: "Partial answer" });
          throw new Error("model overloaded");
        },
        { onError: (error) => `failed: ${error.message}` },
      ),
    }),
  },

  "model-error": {
    about: "streamText: the model stream errors after some text",
    build: (name) => ({
      stream: fromModel(
        name,
        [
          [
            ...head(),
            { type: "text-start", id: "t0" },
            { type: "text-delta", id: "t0", delta: "Half" },
            { type: "error", error: new Error("upstream 500") },
            finish("error"),
          ],
        ],
        { toUI: { onError: (error) => `model: ${error.message}` } },
      ),
    }),
  },

  abort: {
    about: "writer: an abort chunk after some text, as streamText writes on abort",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "text-start", id: "t" },
          { type: "text-delta", id: "t", delta: "Stopped mid" },
          { type: "abort", reason: "user cancelled" },
        ]),
      ),
    }),
  },

  "abort-model": {
    about: "streamText aborted by its signal while the model is streaming",
    build: (name) => {
      const controller = new AbortController();
      const parts = [...head(), { type: "text-start", id: "t0" }];
      for (let i = 0; i < 50; i += 1) parts.push({ type: "text-delta", id: "t0", delta: `w${i} ` });
      let pulled = 0;
      const stream = new ReadableStream({
        pull(c) {
          if (pulled === 6) controller.abort();
          if (pulled < parts.length) c.enqueue(parts[pulled++]);
          else c.close();
        },
      });
      const result = streamText({
        model: new MockModel({ doStream: async () => ({ stream }) }),
        prompt: "interop",
        abortSignal: controller.signal,
        _internal: { generateId: mockId({ prefix: "id" }), now: () => 0 },
      });
      return {
        stream: result.toUIMessageStream({ originalMessages: [], generateMessageId: () => `msg-${name}` }),
      };
    },
  },

  unicode: {
    about: "text and reasoning with U+2028, U+2029, U+0085, emoji, CJK, combining marks",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start", messageMetadata: { title: "ユニコード \u2028" } },
          { type: "reasoning-start", id: "r" },
          ...pieces(UNICODE, 3).map((delta) => ({ type: "reasoning-delta", id: "r", delta })),
          { type: "reasoning-end", id: "r" },
          { type: "text-start", id: "t" },
          ...pieces(UNICODE, 1).map((delta) => ({ type: "text-delta", id: "t", delta })),
          { type: "text-end", id: "t" },
          { type: "data-note", id: "n", data: { text: UNICODE } },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "long-20000": {
    about: "streamText: 20,000 text deltas",
    build: (name) => {
      const deltas = [];
      for (let i = 0; i < 20000; i += 1) deltas.push(i % 100 === 99 ? `${i}\n` : `${i} `);
      return { stream: fromModel(name, [[...head(), ...textParts("t0", deltas), finish("stop", 5, 20000)]]) };
    },
  },

  "keep-alive": {
    about: "createUIMessageStreamResponse with keepAliveMs: stream-open and keep-alive comments",
    build: (name) => ({
      keepAliveMs: 15,
      stream: fromWriter(name, async ({ writer }) => {
        writer.write({ type: "start" });
        writer.write({ type: "text-start", id: "t" });
        for (const delta of ["slow ", "but ", "steady"]) {
          await new Promise((resolve) => setTimeout(resolve, 40));
          writer.write({ type: "text-delta", id: "t", delta });
        }
        writer.write({ type: "text-end", id: "t" });
        writer.write({ type: "finish" });
      }),
    }),
  },

  "message-id-change": {
    about: "writer: a second start with another message id resets the message, as readUIMessageStream does",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start", messageId: "first" },
          { type: "text-start", id: "t" },
          { type: "text-delta", id: "t", delta: "Draft." },
          { type: "text-end", id: "t" },
          { type: "start", messageId: "second", messageMetadata: { retry: 1 } },
          { type: "text-start", id: "t" },
          { type: "text-delta", id: "t", delta: "Final." },
          { type: "text-end", id: "t" },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "trailing-step": {
    about: "writer: a step that starts and writes nothing is not in readUIMessageStream's last message",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "start-step" },
          { type: "text-start", id: "t" },
          { type: "text-delta", id: "t", delta: "One step." },
          { type: "text-end", id: "t" },
          { type: "finish-step" },
          { type: "start-step" },
          { type: "finish-step" },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "no-message-id": {
    about: "writer: no start chunk at all; the message keeps readUIMessageStream's empty id",
    build: (name) => ({
      stream: createUIMessageStream({
        generateId: () => `msg-${name}`,
        execute: writeAll([
          { type: "text-start", id: "t" },
          { type: "text-delta", id: "t", delta: "No start chunk." },
          { type: "text-end", id: "t" },
          { type: "finish" },
        ]),
      }),
    }),
  },

  "extra-fields": {
    about: "writer: known chunk types carrying fields no schema names, some before the known ones (loose objects keep them)",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start", "x-trace": "abc", messageId: "m-x", messageMetadata: { a: 1 } },
          { type: "start-step", attempt: 1 },
          { type: "reasoning-start", id: "r", effort: "low" },
          { type: "reasoning-delta", id: "r", delta: "Hm.", tokens: 1 },
          { type: "reasoning-end", id: "r", summary: null },
          { type: "text-start", lang: "en", id: "t" },
          { type: "text-delta", id: "t", delta: "Extra ", logprob: -0.25 },
          { type: "text-delta", seq: 2, id: "t", delta: "fields." },
          { type: "text-end", id: "t", checksum: "e3b0c442", "ünï": "cödé ✓" },
          { type: "source-url", sourceId: "s1", url: "https://example.com", rank: 1 },
          {
            type: "source-document",
            sourceId: "d1",
            mediaType: "text/plain",
            title: "Notes",
            pages: [1, 2],
          },
          { type: "file", url: "https://files.example.com/a.txt", mediaType: "text/plain", bytes: 12 },
          { type: "data-row", id: "r1", data: { n: 1 }, extra: { kept: true } },
          { type: "data-row", id: "r1", data: { n: 2 }, replacedWith: "data only" },
          { type: "data-log", note: "before data", data: "x" },
          { type: "tool-input-start", toolCallId: "c1", toolName: "weather", retries: 0 },
          { type: "tool-input-delta", toolCallId: "c1", inputTextDelta: '{"city":"Rome"}', offset: 0 },
          {
            type: "tool-input-available",
            toolCallId: "c1",
            toolName: "weather",
            input: { city: "Rome" },
            confidence: 0.75,
          },
          { type: "tool-output-available", toolCallId: "c1", output: { c: 21 }, cached: true },
          { type: "tool-input-available", toolCallId: "c2", toolName: "weather", input: { city: "Oslo" } },
          { type: "tool-approval-request", toolCallId: "c2", approvalId: "ap", expiresIn: 60 },
          { type: "tool-output-denied", toolCallId: "c2", by: "user" },
          {
            type: "tool-input-error",
            toolCallId: "c3",
            toolName: "weather",
            input: "?",
            errorText: "bad",
            hint: "use JSON",
          },
          { type: "tool-input-available", toolCallId: "c4", toolName: "weather", input: {} },
          { type: "tool-output-error", toolCallId: "c4", errorText: "down", code: 503 },
          { type: "finish-step", durationMs: 5 },
          { type: "message-metadata", messageMetadata: { b: 2 }, source: "server" },
          { type: "error", errorText: "soft failure", recoverable: true },
          { type: "finish", finishReason: "stop", region: "eu", messageMetadata: { c: 3 } },
        ]),
      ),
    }),
  },

  empty: {
    about: "writer that writes nothing: only the [DONE] marker; the SDK yields no message",
    build: (name) => ({ stream: fromWriter(name, () => {}) }),
  },
};
