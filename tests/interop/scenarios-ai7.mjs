// The scenarios of ai 7: those of both majors (scenarios.mjs), and the chunk
// types and fields 7 added, made by 7's own producers: streamText over the
// mock of its model specification (V4), and createUIMessageStream's writer
// for what only an application writes (reset-step, automatic approvals,
// approval responses in the same stream). sdk.mjs loads this file under ai 7.

import { experimental_createSteering, stepCountIs, tool } from "ai";
import { z } from "zod";

import {
  finish,
  fromModel,
  fromWriter,
  head,
  scenarios as both,
  textParts,
  toolCall,
  writeAll,
} from "./scenarios.mjs";

const urlSource = {
  type: "source",
  sourceType: "url",
  id: "src-1",
  url: "https://example.com/tides",
  title: "Tides",
};
const documentSource = {
  type: "source",
  sourceType: "document",
  id: "doc-1",
  mediaType: "application/pdf",
  title: "Almanac",
  filename: "almanac.pdf",
  providerMetadata: { mock: { page: 12 } },
};

// A tool whose schema fills in a default: the input the model sent and the
// input the tool receives differ, so an approval request carries the former.
const forecastTool = tool({
  title: "Forecast",
  metadata: { owner: "weather-team", cost: 2 },
  description: "Forecast for a city",
  inputSchema: z.object({ city: z.string(), days: z.number().default(3) }),
  execute: async ({ city, days }) => ({ city, days, sky: "clear" }),
});

const shellTool = tool({
  title: "Shell command",
  metadata: { sandbox: "strict" },
  description: "Runs a command line",
  inputSchema: z.object({ command: z.string() }),
  execute: async ({ command }) => ({ exitCode: 0, stdout: `ran ${command}` }),
});

const ai7 = {
  citations: {
    about: "streamText (V4 model): text-end with citations to a URL and a document, offsets and cited text",
    build: (name) => ({
      stream: fromModel(name, [
        [
          ...head(),
          { type: "text-start", id: "t0" },
          { type: "text-delta", id: "t0", delta: "High tide is at 6:40; " },
          { type: "text-delta", id: "t0", delta: "low tide at 12:55." },
          {
            type: "text-end",
            id: "t0",
            citations: [
              { source: urlSource, startIndex: 0, endIndex: 21, citedText: "High water 06:40" },
              { source: documentSource, citedText: "Low water 12:55" },
              { source: { ...urlSource, id: "src-2", url: "https://example.com/moon" } },
            ],
            providerMetadata: { mock: { grounded: true } },
          },
          finish(),
        ],
      ]),
    }),
  },

  "citations-writer": {
    about: "writer: citations on one text part of two; keys the citation schema does not know are dropped by the SDK",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "text-start", id: "a" },
          { type: "text-delta", id: "a", delta: "Cited." },
          {
            type: "text-end",
            id: "a",
            citations: [
              {
                source: { ...urlSource, score: 0.9 },
                startIndex: 0,
                endIndex: 6,
                confidence: "high",
              },
            ],
          },
          { type: "text-start", id: "b" },
          { type: "text-delta", id: "b", delta: " Not cited." },
          { type: "text-end", id: "b", citations: [] },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "reasoning-file": {
    about: "streamText (V4 model): a file made while reasoning, between reasoning deltas, then an answer file",
    build: (name) => ({
      stream: fromModel(name, [
        [
          ...head(),
          { type: "reasoning-start", id: "r0" },
          { type: "reasoning-delta", id: "r0", delta: "Sketching a chart first. " },
          {
            type: "reasoning-file",
            mediaType: "image/png",
            data: { type: "data", data: "iVBORw0KGgo=" },
            providerMetadata: { mock: { draft: true } },
          },
          { type: "reasoning-delta", id: "r0", delta: "It looks right." },
          { type: "reasoning-end", id: "r0" },
          { type: "file", mediaType: "text/csv", data: { type: "data", data: "YSxiCjEsMgo=" } },
          ...textParts("t0", ["Chart and data attached."]),
          finish(),
        ],
      ]),
    }),
  },

  "reasoning-file-writer": {
    about: "writer: reasoning files by URL, with and without provider metadata",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "reasoning-file", url: "https://files.example.com/scratch.png", mediaType: "image/png" },
          {
            type: "reasoning-file",
            url: "data:text/plain;base64,bm90ZXM=",
            mediaType: "text/plain",
            providerMetadata: { mock: { step: 1 } },
          },
          { type: "finish" },
        ]),
      ),
    }),
  },

  custom: {
    about: "streamText (V4 model): provider custom content parts, with and without provider metadata",
    build: (name) => ({
      stream: fromModel(name, [
        [
          ...head(),
          { type: "custom", kind: "mock.search-card", providerMetadata: { mock: { query: "tides" } } },
          ...textParts("t0", ["Found it."]),
          { type: "custom", kind: "mock.usage-note" },
          finish(),
        ],
      ]),
    }),
  },

  "custom-writer": {
    about: "writer: custom parts between text parts; a kind with several dots",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "custom", kind: "app.progress.bar", providerMetadata: { app: { percent: 40 } } },
          ...textParts("t", ["Halfway."]),
          { type: "custom", kind: "app.done" },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "steering-message": {
    about: "writer: steering messages (a user's text and files added to the run) between steps",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "start-step" },
          ...textParts("t0", ["Looking at Paris."]),
          { type: "finish-step" },
          {
            type: "steering-message",
            id: "steer-1",
            parts: [
              { type: "text", text: "Also Oslo, please." },
              {
                type: "file",
                mediaType: "image/jpeg",
                url: "https://files.example.com/oslo.jpg",
                filename: "oslo.jpg",
              },
              {
                type: "file",
                mediaType: "application/pdf",
                url: "",
                providerReference: { mock: "file-123" },
                providerMetadata: { mock: { pages: 2 } },
              },
            ],
          },
          { type: "steering-message", id: "steer-2", parts: [] },
          { type: "start-step" },
          ...textParts("t1", ["Paris 21°C, Oslo 9°C."]),
          { type: "finish-step" },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "steering-model": {
    about: "streamText with experimental_steering: a message steered in before the run and one queued after the first answer",
    build: (name) => {
      const steering = experimental_createSteering();
      steering.steer(
        { role: "user", content: [{ type: "text", text: "Answer in one line." }] },
        { id: "steer-early" },
      );
      steering.queue("And tomorrow?", { id: "steer-queued" });
      return {
        stream: fromModel(
          name,
          [
            [...head("resp-0"), ...textParts("t0", ["Sunny today."]), finish()],
            [...head("resp-1"), ...textParts("t1", ["Rain tomorrow."]), finish()],
          ],
          { experimental_steering: steering, stopWhen: stepCountIs(3) },
        ),
      };
    },
  },

  "reset-step": {
    about: "writer: a draft step (text, reasoning, a tool call streaming) thrown away by reset-step, then a new step",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "start-step" },
          ...textParts("t0", ["Kept from step one."]),
          { type: "finish-step" },
          { type: "start-step" },
          { type: "reasoning-start", id: "r1" },
          { type: "reasoning-delta", id: "r1", delta: "Draft thinking" },
          { type: "text-start", id: "t1" },
          { type: "text-delta", id: "t1", delta: "Draft ans" },
          { type: "tool-input-start", toolCallId: "draft-call", toolName: "weather" },
          { type: "tool-input-delta", toolCallId: "draft-call", inputTextDelta: '{"ci' },
          { type: "data-status", id: "s", data: "drafting" },
          { type: "reset-step" },
          { type: "reset-step" },
          { type: "start-step" },
          { type: "text-start", id: "t1" },
          { type: "text-delta", id: "t1", delta: "Final answer." },
          { type: "text-end", id: "t1" },
          { type: "tool-input-start", toolCallId: "draft-call", toolName: "weather" },
          { type: "tool-input-delta", toolCallId: "draft-call", inputTextDelta: '{"city":"Rome"}' },
          { type: "tool-input-available", toolCallId: "draft-call", toolName: "weather", input: { city: "Rome" } },
          { type: "finish-step" },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "tool-approval": {
    about: "writer: approval requests with reason, isAutomatic, signature, inputSchemaInput, then their responses",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "start-step" },
          {
            type: "tool-input-available",
            toolCallId: "a1",
            toolName: "forecast",
            input: { city: "Paris", days: 3 },
            title: "Forecast",
          },
          {
            type: "tool-approval-request",
            toolCallId: "a1",
            approvalId: "ap-1",
            approvalDescriptor: { summary: "Forecast for Paris" },
            inputSchemaInput: { city: "Paris" },
            reason: "costs a credit",
            isAutomatic: true,
            signature: "c2lnbmF0dXJlLTE",
          },
          {
            type: "tool-approval-response",
            approvalId: "ap-1",
            approved: true,
            reason: "policy allows forecasts",
            providerExecuted: false,
            providerMetadata: { mock: { reviewer: "policy" } },
          },
          { type: "tool-output-available", toolCallId: "a1", output: { sky: "clear" } },
          {
            type: "tool-input-available",
            toolCallId: "a2",
            toolName: "mcp_delete",
            input: { path: "/etc" },
            dynamic: true,
          },
          {
            type: "tool-approval-request",
            toolCallId: "a2",
            approvalId: "ap-2",
            inputSchemaInput: null,
            isAutomatic: false,
          },
          { type: "tool-approval-response", approvalId: "ap-2", approved: false, reason: "never /etc" },
          { type: "tool-output-denied", toolCallId: "a2" },
          {
            type: "tool-input-available",
            toolCallId: "a3",
            toolName: "forecast",
            input: { city: "Oslo", days: 1 },
            providerExecuted: true,
          },
          { type: "tool-approval-request", toolCallId: "a3", approvalId: "ap-3" },
          { type: "tool-approval-response", approvalId: "ap-3", approved: true, providerExecuted: true },
          { type: "finish-step" },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "tool-approval-model": {
    about: "streamText: a tool needing approval, with a reason and an HMAC signature; the schema's default makes inputSchemaInput",
    build: (name) => ({
      stream: fromModel(
        name,
        [
          [
            ...head(),
            ...toolCall("call-f", "forecast", '{"city":"Paris"}', ['{"city":', '"Paris"}']),
            finish("tool-calls"),
          ],
        ],
        {
          tools: { forecast: forecastTool },
          toolApproval: { forecast: { type: "user-approval", reason: "forecasts cost a credit" } },
          experimental_toolApprovalSecret: "interop-secret",
          stopWhen: stepCountIs(2),
        },
      ),
    }),
  },

  "tool-approval-automatic": {
    about: "streamText: approvals decided by policy (isAutomatic): one approved with a signature and run, one denied; then an answer",
    build: (name) => ({
      stream: fromModel(
        name,
        [
          [
            ...head(),
            { type: "tool-call", toolCallId: "call-ok", toolName: "forecast", input: '{"city":"Rome","days":1}' },
            { type: "tool-call", toolCallId: "call-no", toolName: "shell", input: '{"command":"rm -rf /"}' },
            finish("tool-calls"),
          ],
          [...head("resp-1"), ...textParts("t1", ["Rome is clear; I did not run that command."]), finish()],
        ],
        {
          tools: { forecast: forecastTool, shell: shellTool },
          toolApproval: {
            forecast: { type: "approved", reason: "forecasts are read-only" },
            shell: { type: "denied", reason: "destructive command" },
          },
          experimental_toolApprovalSecret: "interop-secret",
          stopWhen: stepCountIs(2),
        },
      ),
    }),
  },

  "tool-input-error-raw": {
    about: "streamText: tool input that is not JSON (streamed, and in one piece); writer: a static tool's raw input error",
    build: (name) => ({
      stream: fromModel(
        name,
        [
          [
            ...head(),
            ...toolCall("call-raw", "forecast", '{"city": Par', ['{"city"', ": Par"]),
            { type: "tool-call", toolCallId: "call-raw2", toolName: "forecast", input: "city=Oslo&days=2" },
            finish("tool-calls"),
          ],
          [...head("resp-1"), ...textParts("t1", ["I could not read that."]), finish()],
        ],
        {
          tools: { forecast: forecastTool },
          stopWhen: stepCountIs(2),
          // The parser's own text quotes V8's JSON.parse message, which differs between
          // Node versions; the error's name and tool do not.
          toUI: { onError: (error) => `${error.name} (${error.toolName ?? "no tool"})` },
        },
      ),
    }),
  },

  "tool-input-error-writer": {
    about: "writer: tool-input-error with raw text input, with and without a streamed start (text-encoded and not)",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          {
            type: "tool-input-error",
            toolCallId: "e1",
            toolName: "forecast",
            input: "{not json",
            errorText: "Invalid JSON in tool input",
            title: "Forecast",
            toolMetadata: { owner: "weather-team" },
          },
          { type: "tool-input-start", toolCallId: "e2", toolName: "shell", inputEncoding: "text", title: "Shell" },
          { type: "tool-input-delta", toolCallId: "e2", inputTextDelta: "rm -rf /" },
          {
            type: "tool-input-error",
            toolCallId: "e2",
            toolName: "shell",
            input: "rm -rf /",
            errorText: "refused",
          },
          { type: "tool-input-start", toolCallId: "e3", toolName: "mcp_fetch", dynamic: true },
          { type: "tool-input-delta", toolCallId: "e3", inputTextDelta: '{"url":' },
          {
            type: "tool-input-error",
            toolCallId: "e3",
            toolName: "mcp_fetch",
            input: '{"url":',
            errorText: "Unexpected end of JSON input",
            dynamic: true,
            providerMetadata: { mock: { attempt: 1 } },
          },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "tool-input-text": {
    about: "streamText (V4 model): text-encoded tool input with the tool's title and metadata, then its output",
    build: (name) => ({
      stream: fromModel(
        name,
        [
          [
            ...head(),
            { type: "tool-input-start", id: "call-sh", toolName: "shell", inputEncoding: "text" },
            { type: "tool-input-delta", id: "call-sh", delta: '{"command":' },
            { type: "tool-input-delta", id: "call-sh", delta: '"ls -la"}' },
            { type: "tool-input-end", id: "call-sh" },
            { type: "tool-call", toolCallId: "call-sh", toolName: "shell", input: '{"command":"ls -la"}' },
            finish("tool-calls"),
          ],
          [...head("resp-1"), ...textParts("t1", ["Listed."]), finish()],
        ],
        { tools: { shell: shellTool }, stopWhen: stepCountIs(2) },
      ),
    }),
  },

  "tool-input-text-writer": {
    about: "writer: tool-input-start with inputEncoding text, title and toolMetadata; static and dynamic; metadata replaced at output",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start" },
          { type: "start-step" },
          {
            type: "tool-input-start",
            toolCallId: "s1",
            toolName: "shell",
            inputEncoding: "text",
            title: "Shell command",
            toolMetadata: { sandbox: "strict", limits: { seconds: 5 } },
            providerMetadata: { mock: { stream: 1 } },
          },
          { type: "tool-input-delta", toolCallId: "s1", inputTextDelta: "echo " },
          { type: "tool-input-delta", toolCallId: "s1", inputTextDelta: '"{not json}"' },
          { type: "tool-input-available", toolCallId: "s1", toolName: "shell", input: 'echo "{not json}"' },
          {
            type: "tool-output-available",
            toolCallId: "s1",
            output: "{not json}\n",
            toolMetadata: { sandbox: "strict", exit: 0 },
          },
          {
            type: "tool-input-start",
            toolCallId: "d1",
            toolName: "mcp_exec",
            inputEncoding: "text",
            dynamic: true,
            title: "Remote exec",
            toolMetadata: { server: "box" },
          },
          { type: "tool-input-delta", toolCallId: "d1", inputTextDelta: "uptime" },
          {
            type: "tool-input-available",
            toolCallId: "d1",
            toolName: "mcp_exec",
            input: "uptime",
            dynamic: true,
            title: "Remote exec (confirmed)",
          },
          { type: "tool-output-error", toolCallId: "d1", errorText: "box offline", dynamic: true },
          { type: "tool-input-start", toolCallId: "j1", toolName: "calc", inputEncoding: "json", title: "Calc" },
          { type: "tool-input-delta", toolCallId: "j1", inputTextDelta: '{"expr":"6*' },
          { type: "finish-step" },
          { type: "finish" },
        ]),
      ),
    }),
  },

  "finish-interrupted": {
    about: "streamText (V4 model): the model call ends with finishReason interrupted after some text",
    build: (name) => ({
      stream: fromModel(name, [[...head(), ...textParts("t0", ["Cut short"]), finish("interrupted")]], {
        toUI: {
          messageMetadata: ({ part }) => (part.type === "finish" ? { finishReason: part.finishReason } : undefined),
        },
      }),
    }),
  },

  "finish-interrupted-writer": {
    about: "writer: a finish chunk with finishReason interrupted and metadata",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start", messageId: "m-int" },
          ...textParts("t", ["Stopped by a steering interrupt"]),
          { type: "finish", finishReason: "interrupted", messageMetadata: { interrupted: true } },
        ]),
      ),
    }),
  },

  "extra-fields-7": {
    about: "writer: 7's new chunk types carrying fields no schema names (loose objects keep them; data parts keep them whole)",
    build: (name) => ({
      stream: fromWriter(
        name,
        writeAll([
          { type: "start", messageId: "m-x7", "x-trace": "abc" },
          { type: "custom", kind: "app.card", future: { nested: [1, 2, { deep: null }] } },
          { type: "reasoning-file", url: "https://files.example.com/r.png", mediaType: "image/png", rank: 1 },
          {
            type: "steering-message",
            id: "s-x",
            parts: [{ type: "text", text: "Faster.", lang: "en" }],
            source: "keyboard",
          },
          { type: "start-step", attempt: 2 },
          { type: "text-start", id: "t", lang: "en" },
          { type: "text-delta", id: "t", delta: "Drafted.", tokens: 2 },
          { type: "reset-step", reason: "retry" },
          { type: "start-step" },
          {
            type: "tool-input-start",
            toolCallId: "c",
            toolName: "forecast",
            inputEncoding: "json",
            queuePosition: 3,
          },
          {
            type: "tool-input-available",
            toolCallId: "c",
            toolName: "forecast",
            input: { city: "Rome" },
            confidence: 0.75,
          },
          { type: "tool-approval-request", toolCallId: "c", approvalId: "ap", expiresAt: "2026-01-01T00:00:00Z" },
          { type: "tool-approval-response", approvalId: "ap", approved: true, by: { user: "u1" } },
          { type: "tool-output-available", toolCallId: "c", output: { sky: "grey" }, cached: true },
          { type: "text-start", id: "t2" },
          { type: "text-delta", id: "t2", delta: "Grey in Rome." },
          { type: "text-end", id: "t2", citations: [], checksum: "e3b0c442" },
          { type: "finish-step", durationMs: 1200 },
          { type: "finish", finishReason: "stop", region: "eu" },
        ]),
      ),
    }),
  },
};

export const scenarios = { ...both, ...ai7 };
