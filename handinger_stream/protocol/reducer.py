"""The reducer: typed events fold into a Worker. No I/O, no clocks, deterministic.

:meth:`WorkerState.apply` is the whole folding logic: one ``match`` over the
event types, each arm a few lines or a named method (tools, text, data
parts); a chunk type added to the union and not handled here is a type error.
(:func:`apply_event` is its earlier name.) The state's
:meth:`~WorkerState.snapshot` materialises an immutable-by-convention
:class:`~handinger_stream.Worker` (cached until the next change).

Folding one event costs the same whether it is the tenth or the millionth:
text accumulates as a list of pieces joined only when a snapshot is taken, so
nothing folded before is copied.

``Worker.messages`` is built as the AI SDK's own ``readUIMessageStream`` builds
its ``UIMessage`` from the same chunks, in the major given as ``ai_sdk``
(7 by default, or 6; ``docs/protocol.md`` lists where they differ).

>>> from handinger_stream.types.events import TextStartEvent, TextDeltaEvent
>>> state = WorkerState()
>>> for e in [TextStartEvent(id="t"), TextDeltaEvent(id="t", delta="Hel"),
...           TextDeltaEvent(id="t", delta="lo")]:
...     _ = state.apply(e)
>>> state.snapshot().output_text
'Hello'
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

import msgspec
from msgspec import UNSET

from ..types.events import (
    AI_SDK_7_ONLY,
    AI_SDK_VERSIONS,
    AbortEvent,
    AISDKVersion,
    CustomEvent,
    DataEvent,
    ErrorEvent,
    Event,
    FileEvent,
    FinishEvent,
    FinishStepEvent,
    MessageMetadataEvent,
    ReasoningDeltaEvent,
    ReasoningEndEvent,
    ReasoningFileEvent,
    ReasoningStartEvent,
    ResetStepEvent,
    SourceDocumentEvent,
    SourceUrlEvent,
    StartEvent,
    StartStepEvent,
    SteeringMessageEvent,
    TextDeltaEvent,
    TextEndEvent,
    TextStartEvent,
    ToolApprovalRequestEvent,
    ToolApprovalResponseEvent,
    ToolInputAvailableEvent,
    ToolInputDeltaEvent,
    ToolInputErrorEvent,
    ToolInputStartEvent,
    ToolOutputAvailableEvent,
    ToolOutputDeniedEvent,
    ToolOutputErrorEvent,
    UnknownEvent,
    WorkerSnapshotEvent,
)
from ..types.worker import Costs, File, OutputMessage, OutputText, Source, Usage, Worker
from .partial_json import parse_partial_json

__all__ = ["WorkerState", "apply_event", "check_ai_sdk", "fold"]

log = logging.getLogger("handinger_stream")

_RESULT_STATES = ("output-available", "output-error")

# ai 7 keeps only these keys of a text-end's citations (its schema, a plain object, strips
# the others).
_CITATION_KEYS = ("source", "startIndex", "endIndex", "citedText")
_CITED_SOURCE_KEYS = {
    "url": ("type", "sourceType", "id", "url", "title", "providerMetadata"),
    "document": ("type", "sourceType", "id", "mediaType", "title", "filename", "providerMetadata"),
}


def check_ai_sdk(ai_sdk: object) -> AISDKVersion:
    """``ai_sdk`` if it is a major the reducer folds as; :class:`ValueError` if not.

    >>> check_ai_sdk(6)
    6
    >>> check_ai_sdk("7")
    Traceback (most recent call last):
    ...
    ValueError: ai_sdk must be one of 6, 7 (the AI SDK major to fold as), not '7'
    """
    # bool is an int: True must not pass for 1 (nor, were it listed, 1 for True).
    if type(ai_sdk) is int and ai_sdk in AI_SDK_VERSIONS:
        return ai_sdk
    allowed = ", ".join(map(str, AI_SDK_VERSIONS))
    raise ValueError(
        f"ai_sdk must be one of {allowed} (the AI SDK major to fold as), not {ai_sdk!r}"
    )


class _Text:
    """Text as appended pieces; joined (and the join kept) only when read.

    Every ``COMPACT_AT`` pieces are joined into one block, so a long stream's
    text costs about its own size in memory, not a string object per delta
    (a small bound: a process following a thousand live streams holds at most
    that many loose pieces for each).
    """

    __slots__ = ("blocks", "pieces")
    COMPACT_AT = 64

    def __init__(self, text: str = "") -> None:
        self.blocks: list[str] = [text] if text else []
        # Appended to in place (the hot path holds on to it), never replaced.
        self.pieces: list[str] = []

    def add(self, piece: str) -> None:
        pieces = self.pieces
        pieces.append(piece)
        if len(pieces) >= self.COMPACT_AT:
            self.compact()

    def compact(self) -> None:
        self.blocks.append("".join(self.pieces))
        self.pieces.clear()

    def set(self, pieces: list[str]) -> None:
        self.blocks[:] = pieces
        self.pieces.clear()

    def value(self) -> str:
        blocks, pieces = self.blocks, self.pieces
        if pieces:
            blocks.append("".join(pieces))
            pieces.clear()
        if len(blocks) == 1:
            return blocks[0]
        if not blocks:
            return ""
        text = "".join(blocks)
        blocks[:] = [text]
        return text


class _PartialCall:
    """A tool call whose input is streaming (the SDK's ``partialToolCalls`` entry).

    Stands in a tool part's ``input`` until a snapshot parses its text.
    """

    __slots__ = ("dynamic", "encoding", "metadata", "name", "text", "title")

    def __init__(self, event: ToolInputStartEvent) -> None:
        self.text = _Text()
        self.name = event.tool_name
        self.dynamic = bool(event.dynamic)
        self.encoding = event.input_encoding
        self.title = event.title
        self.metadata = event.tool_metadata

    def value(self) -> Any:
        text = self.text.value()
        return text if self.encoding == "text" else parse_partial_json(text)


class _Message:
    """The UI message being streamed, as ``readUIMessageStream`` holds it."""

    __slots__ = (
        "calls",
        "id",
        "metadata",
        "open_reasoning",
        "open_text",
        "parts",
        "step",
        "step_files",
        "step_sources",
        "step_tools",
        "unwritten",
        "visible",
    )

    def __init__(self, message_id: str) -> None:
        self.id = message_id
        self.metadata: Any = UNSET
        self.parts: list[dict[str, Any]] = []
        self.open_text: dict[str, dict[str, Any]] = {}
        self.open_reasoning: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, _PartialCall] = {}
        # The SDK looks tool parts up in the current step (after the last step-start).
        self.step = 0
        self.step_tools: dict[str, list[dict[str, Any]]] = {}
        # What the current step's parts added to the Worker, for a reset-step to take
        # back: each source with the one it replaced (or None), each file.
        self.step_sources: list[tuple[str, Source | None]] = []
        self.step_files: list[File] = []
        # readUIMessageStream yields a copy on each write; a step-start is pushed
        # without one, so trailing step-starts are not in what it last yielded.
        self.unwritten = 0
        self.visible = False

    def written(self) -> None:
        self.visible = True
        self.unwritten = 0

    def start_step(self) -> None:
        self.parts.append({"type": "step-start"})
        self.step = len(self.parts)
        self.step_tools = {}
        self.step_sources, self.step_files = [], []
        self.unwritten += 1

    def step_tool(self, call_id: str, dynamic: bool | None) -> dict[str, Any] | None:
        """The first tool part of the current step with this call id (of a kind, if given)."""
        for part in self.step_tools.get(call_id, ()):
            if dynamic is None or (part["type"] == "dynamic-tool") == dynamic:
                return part
        return None

    def invocation(self, call_id: str) -> dict[str, Any] | None:
        """The tool part an output refers to: in the current step, else the latest one."""
        part = self.step_tool(call_id, None)
        if part is None:
            part = next(
                (p for p in reversed(self.parts) if p.get("toolCallId") == call_id and _is_tool(p)),
                None,
            )
        return part

    def reindex(self) -> None:
        """Rebuild the step and streaming-call indexes after the parts were replaced."""
        starts = [i for i, p in enumerate(self.parts) if p.get("type") == "step-start"]
        self.step = starts[-1] + 1 if starts else 0
        self.step_tools, self.calls = {}, {}
        # A snapshot is authoritative: what it says stays, whatever the step becomes.
        self.step_sources, self.step_files = [], []
        for part in self.parts[self.step :]:
            call_id = part.get("toolCallId")
            if not (_is_tool(part) and isinstance(call_id, str)):
                continue
            self.step_tools.setdefault(call_id, []).append(part)
            if part.get("state") == "input-streaming":
                dynamic = part["type"] == "dynamic-tool"
                call = _PartialCall(
                    ToolInputStartEvent(
                        tool_call_id=call_id,
                        tool_name=part.get("toolName", "") if dynamic else part["type"][5:],
                        dynamic=dynamic,
                        input_encoding=part.get("inputEncoding"),
                        title=part.get("title"),
                        tool_metadata=part.get("toolMetadata", UNSET),
                    )
                )
                raw = part.get("rawInput")
                call.text = _Text(raw if isinstance(raw, str) else "")
                self.calls[call_id] = call

    def to_dict(self) -> dict[str, Any]:
        message: dict[str, Any] = {"id": self.id}
        if self.metadata is not UNSET:
            message["metadata"] = self.metadata
        message["role"] = "assistant"
        parts = self.parts[: len(self.parts) - self.unwritten]
        message["parts"] = [_materialise(p) for p in parts]
        return message


def _is_tool(part: dict[str, Any]) -> bool:
    kind = part.get("type", "")
    return kind == "dynamic-tool" or str(kind).startswith("tool-")


def _frozen(value: Any) -> Any:
    """A part's value as it reads now (streaming text and inputs settle)."""
    if isinstance(value, (_Text, _PartialCall)):
        return value.value()
    return value


def _materialise(part: dict[str, Any]) -> dict[str, Any]:
    out = dict(part)
    for key, value in part.items():
        if isinstance(value, (_Text, _PartialCall)):
            settled = value.value()
            if settled is UNSET:
                del out[key]
            else:
                out[key] = settled
    return out


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key``, or remove it for an absent value (JS ``undefined``)."""
    if value is UNSET or value is None:
        target.pop(key, None)
    else:
        target[key] = value


def _put_json(target: dict[str, Any], key: str, value: Any) -> None:
    """As :func:`_put` for a JSON value, where ``None`` is ``null`` and is kept."""
    if value is UNSET:
        target.pop(key, None)
    else:
        target[key] = value


def _keep(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` when a value is given; otherwise leave what is there."""
    if value is not UNSET and value is not None:
        target[key] = value


def merge_metadata(base: Any, update: Any) -> Any:
    """Deep merge as the AI SDK merges message metadata: objects merge, all else replaces."""
    if not isinstance(base, dict) or not isinstance(update, dict):
        return update
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        merged[key] = merge_metadata(old, value) if isinstance(old, dict) else value
    return merged


class WorkerState:
    """The fold's mutable state; :meth:`apply` folds an event into it.

    ``ai_sdk``: the AI SDK major whose ``readUIMessageStream`` the messages
    follow (7, the current one, or 6).

    >>> WorkerState("w1").snapshot().status
    'pending'
    >>> WorkerState("w1", ai_sdk=6).ai_sdk
    6
    """

    __slots__ = (
        "_cache",
        "_text_base",
        "_text_base_len",
        "ai_sdk",
        "awaiting_finish",
        "costs",
        "created_at",
        "error",
        "files",
        "id",
        "incomplete_details",
        "message",
        "messages",
        "metadata",
        "output",
        "running",
        "sources",
        "status",
        "steps",
        "structured_output",
        "url",
        "usage",
    )

    def __init__(self, worker_id: str = "", *, ai_sdk: AISDKVersion = 7) -> None:
        self.ai_sdk = check_ai_sdk(ai_sdk)
        self.id = worker_id
        self.created_at: int | float | str | None = None
        self.status: str = "pending"
        self.running = False
        self.metadata: dict[str, Any] = {}
        self.error: Any = None
        self.incomplete_details: Any = None
        self.costs: Costs | None = None
        self.usage: Usage | None = None
        self.structured_output: Any = None  # today's generation: the worker's outputSchema's
        self.url: str | None = None
        # Output entries: settled ones from snapshots, live (id, _Text) pairs.
        self.output: list[OutputMessage | tuple[str, _Text]] = []
        # A snapshot's output_text stands for the entries it came with.
        self._text_base: str | None = None
        self._text_base_len = 0
        self.sources: dict[str, Source] = {}
        self.files: list[File] = []
        self.messages: list[Any] = []
        self.message: _Message | None = None
        self.steps = 0
        # An error chunk ends the turn as failed, yet the AI SDK may still send a
        # ``finish`` after it (with metadata): True until one comes (or an abort, or a
        # snapshot), so that a stream cut right there can be resumed for it.
        self.awaiting_finish = False
        self._cache: Worker | None = None

    def snapshot(self) -> Worker:
        """The Worker as folded so far."""
        if self._cache is not None:
            return self._cache
        output = [
            entry
            if isinstance(entry, OutputMessage)
            else OutputMessage(id=entry[0], content=[OutputText(text=entry[1].value())])
            for entry in self.output
        ]
        messages = list(self.messages)
        if self.message is not None and self.message.visible:
            messages.append(self.message.to_dict())
        self._cache = Worker(
            id=self.id,
            status=self.status,  # type: ignore[arg-type]
            running=self.running,
            created_at=self.created_at,
            output=output,
            output_text=self._output_text(output),
            sources=list(self.sources.values()),
            files=list(self.files),
            messages=messages,
            metadata=self.metadata,
            error=self.error,
            incomplete_details=self.incomplete_details,
            costs=self.costs,
            usage=self.usage,
            structured_output=self.structured_output,
            url=self.url,
        )
        return self._cache

    def _output_text(self, output: list[OutputMessage]) -> str:
        start = 0
        head = ""
        if self._text_base is not None:
            head, start = self._text_base, self._text_base_len
        return head + "".join(c.text for m in output[start:] for c in m.content)

    # -- helpers used by apply ------------------------------------------

    def _live_message(self) -> _Message:
        if self.message is None:
            self.message = _Message("")
        return self.message

    def _end_running(self) -> None:
        self.status = "completed"
        self.running = False

    def _apply_metadata(self, metadata: Any) -> bool:
        if metadata is UNSET or metadata is None:
            return False
        message = self._live_message()
        message.metadata = (
            metadata if message.metadata is UNSET else merge_metadata(message.metadata, metadata)
        )
        message.written()
        if isinstance(metadata, dict) and ("usage" in metadata or "costs" in metadata):
            self._fold_costs(message.metadata)
        return True

    def _fold_costs(self, metadata: dict[str, Any]) -> None:
        usage = metadata.get("usage")
        if isinstance(usage, dict):
            fields = dict(usage)
            if "cacheReadTokens" not in fields and "cachedInputTokens" in fields:
                fields["cacheReadTokens"] = fields["cachedInputTokens"]
            fields.setdefault(
                "totalTokens", (fields.get("inputTokens") or 0) + (fields.get("outputTokens") or 0)
            )
            fields.setdefault("steps", self.steps)
            try:
                self.usage = msgspec.convert(
                    {k: v for k, v in fields.items() if v is not None}, Usage, strict=False
                )
            except msgspec.ValidationError:
                log.warning("ignoring usage metadata of an unexpected shape: %r", usage)
        costs = metadata.get("costs")
        if isinstance(costs, dict):
            try:
                self.costs = msgspec.convert(costs, Costs, strict=False)
            except msgspec.ValidationError:
                log.warning("ignoring costs metadata of an unexpected shape: %r", costs)

    def _apply_snapshot(self, event: WorkerSnapshotEvent) -> None:
        worker, fields = event.worker, event.fields
        self.awaiting_finish = False
        for name in (
            "id",
            "created_at",
            "status",
            "running",
            "metadata",
            "error",
            "costs",
            "usage",
            "structured_output",
            "url",
        ):
            if name in fields:
                setattr(self, name, getattr(worker, name))
        if "incomplete_details" in fields:
            self.incomplete_details = worker.incomplete_details
        if "sources" in fields:
            self.sources = {s.id: s for s in worker.sources}
        if "files" in fields:
            self.files = list(worker.files)
        if "output" in fields:
            self._adopt_output(worker.output)
        if "output_text" in fields or "output" in fields:
            # output_text follows output unless the server says otherwise.
            derived = "".join(c.text for m in worker.output for c in m.content)
            if "output_text" in fields and worker.output_text != derived:
                self._text_base = worker.output_text
                self._text_base_len = len(self.output)
            else:
                self._text_base = None
        if "messages" in fields:
            self._adopt_messages(worker.messages)

    def _adopt_output(self, output: list[OutputMessage]) -> None:
        # Parts still streaming keep streaming: their text restarts from the snapshot's.
        live = dict(e for e in self.output if isinstance(e, tuple))
        entries: list[OutputMessage | tuple[str, _Text]] = []
        for entry in output:
            text = live.get(entry.id)
            if text is not None and self._is_open_text(entry.id):
                text.set([c.text for c in entry.content])
                entries.append((entry.id, text))
            else:
                entries.append(entry)
        self.output = entries

    def _is_open_text(self, part_id: str) -> bool:
        return self.message is not None and part_id in self.message.open_text

    def _adopt_messages(self, messages: list[Any]) -> None:
        live = self.message
        last = messages[-1] if messages else None
        if live is not None and isinstance(last, dict) and last.get("id") == live.id:
            # The snapshot carries the message being streamed: continue on top of it.
            self.messages = list(messages[:-1])
            self._rebase_message(live, last)
        else:
            self.messages = list(messages)
            self.message = None

    def _rebase_message(self, live: _Message, snap: dict[str, Any]) -> None:
        open_parts = {id(p): k for k, p in live.open_text.items()}
        open_parts.update({id(p): k for k, p in live.open_reasoning.items()})
        old_parts = live.parts
        new_parts = [dict(p) for p in snap.get("parts", []) if isinstance(p, dict)]
        live.open_text, live.open_reasoning = {}, {}
        for index, part in enumerate(new_parts):
            if isinstance(part.get("text"), str):
                text = _Text(part["text"])
                part["text"] = text
                if index < len(old_parts) and id(old_parts[index]) in open_parts:
                    key = open_parts[id(old_parts[index])]
                    target = live.open_text if part["type"] == "text" else live.open_reasoning
                    target[key] = part
                    self.output = [
                        (key, text) if isinstance(e, tuple) and e[0] == key else e
                        for e in self.output
                    ]
        live.parts = new_parts
        live.reindex()
        if "metadata" in snap:
            live.metadata = snap["metadata"]
        live.written()

    def _restart_message(self, message_id: str) -> _Message:
        """A start with a new message id: readUIMessageStream begins a new message.

        The SDK drops the old one; a Worker keeps it among its messages.
        """
        old = self.message
        if old is not None and old.visible:
            self.messages.append(old.to_dict())
        self.message = _Message(message_id)
        return self.message

    # -- folding ----------------------------------------------------------

    def apply(self, event: Event) -> bool:
        """Fold one event; return whether the Worker changed.

        >>> from handinger_stream.types.events import ErrorEvent
        >>> s = WorkerState("w")
        >>> s.apply(ErrorEvent(error_text="boom")), s.snapshot().error
        (True, 'boom')
        """
        self._cache = None
        if type(event) is TextDeltaEvent:
            # The hot path: most events of a stream append to an open text part.
            # It does exactly what _delta does when that part is open and nothing else changes.
            message = self.message
            if message is not None and not message.unwritten and self.status != "pending":
                part = message.open_text.get(event.id)
                if part is not None:
                    _add_delta(part, event)
                    return True
        if self.ai_sdk == 6 and isinstance(event, AI_SDK_7_ONLY):
            # ai 6's schema does not know the chunk: it changes nothing, as an unknown one.
            return False
        if self.status == "pending" and not isinstance(event, (WorkerSnapshotEvent, UnknownEvent)):
            self.status, self.running = "running", True
        match event:
            case TextDeltaEvent():
                self._delta(event, "text")
            case ReasoningDeltaEvent():
                self._delta(event, "reasoning")
            case TextStartEvent():
                self._start_part(event.id, "text", event.provider_metadata)
            case ReasoningStartEvent():
                self._start_part(event.id, "reasoning", event.provider_metadata)
            case TextEndEvent():
                return self._end_part(event, "text")
            case ReasoningEndEvent():
                return self._end_part(event, "reasoning")
            case ToolInputStartEvent():
                self._tool_input_start(event)
            case ToolInputDeltaEvent():
                return self._tool_input_delta(event)
            case ToolInputAvailableEvent():
                self._tool_input_available(event)
            case ToolInputErrorEvent():
                self._tool_input_error(event)
            case ToolOutputAvailableEvent() | ToolOutputErrorEvent():
                return self._tool_result(event)
            case ToolApprovalRequestEvent() | ToolOutputDeniedEvent():
                return self._tool_approval(event)
            case ToolApprovalResponseEvent():
                return self._tool_approval_response(event)
            case SourceUrlEvent():
                self._add_part(
                    {"type": "source-url", "sourceId": event.source_id, "url": event.url},
                    title=event.title,
                    providerMetadata=event.provider_metadata,
                )
                self._live_message().step_sources.append(
                    (event.source_id, self.sources.get(event.source_id))
                )
                self.sources[event.source_id] = Source(
                    id=event.source_id, url=event.url, title=event.title
                )
            case SourceDocumentEvent():
                self._add_part(
                    {
                        "type": "source-document",
                        "sourceId": event.source_id,
                        "mediaType": event.media_type,
                        "title": event.title,
                    },
                    filename=event.filename,
                    providerMetadata=event.provider_metadata,
                )
            case FileEvent():
                self._add_part(
                    {"type": "file", "mediaType": event.media_type, "url": event.url},
                    providerMetadata=event.provider_metadata,
                )
                file = File(url=event.url, media_type=event.media_type)
                self.files.append(file)
                self._live_message().step_files.append(file)
            case ReasoningFileEvent():
                # Shown in the message only: like reasoning text, not part of the answer.
                self._add_part(
                    {"type": "reasoning-file", "mediaType": event.media_type, "url": event.url},
                    providerMetadata=event.provider_metadata,
                )
            case CustomEvent():
                self._add_part(
                    {"type": "custom", "kind": event.kind},
                    providerMetadata=event.provider_metadata,
                )
            case SteeringMessageEvent():
                self._add_part({"type": "steering-message", "id": event.id, "parts": event.parts})
            case StartStepEvent():
                self._live_message().start_step()
                self.steps += 1
            case FinishStepEvent():
                message = self._live_message()
                if self.ai_sdk == 6:
                    # 6 closes the step's text and reasoning parts for lookup; 7 leaves
                    # them open, so a delta after the step's end still finds its part.
                    message.open_text = {}
                    message.open_reasoning = {}
            case ResetStepEvent():
                return self._reset_step()
            case StartEvent():
                if event.message_id is not None:
                    message = self._live_message()
                    if event.message_id != message.id:
                        message = self._restart_message(event.message_id)
                    message.written()
                self._apply_metadata(event.message_metadata)
            case FinishEvent():
                self.awaiting_finish = False
                self._apply_metadata(event.message_metadata)
                if self.error is None:
                    self._end_running()
            case MessageMetadataEvent():
                self._apply_metadata(event.message_metadata)
            case ErrorEvent():
                self.error = event.error_text
                self.awaiting_finish = True
                self._end_running()
            case AbortEvent():
                self.awaiting_finish = False
                # An abort's own reason (ai 7: free text, such as "the user pressed
                # stop") is its detail; the reason stays "aborted", so that the outcome
                # tells an abort from a turn the service cut for a reason of its own.
                self.incomplete_details = (
                    {"reason": "aborted", "detail": event.reason}
                    if event.reason
                    else {"reason": "aborted"}
                )
                self._end_running()
            case DataEvent():
                return self._data(event)
            case WorkerSnapshotEvent():
                self._apply_snapshot(event)
            case UnknownEvent():
                return False
            case _:
                assert_never(event)
        return True

    def apply_all(self, events: Iterable[Event]) -> bool:
        """Fold events in order; return whether any of them changed the Worker.

        The same as :meth:`apply` one by one. After a delta that went to an
        open text part, the deltas that follow to the same part (the bulk of
        any stream) are appended straight to its text: nothing between them
        can change where they go.
        """
        changed = False
        apply = self.apply
        part_id: str | None = None
        part: dict[str, Any] = {}
        text: _Text | None = None
        # The open part's pieces, appended to as `pieces.append(...)`: CPython inlines
        # that call to a list's append, not one through a bound method kept aside.
        pieces: list[str] = []
        for event in events:
            if type(event) is TextDeltaEvent and event.id == part_id:
                # _add_delta, inlined: nearly every delta of a stream is folded here,
                # and calling it would cost three times as much (50 vs 165 ns a delta).
                pieces.append(event.delta)
                if event.provider_metadata is not UNSET:
                    part["providerMetadata"] = event.provider_metadata
                continue
            if text is not None:
                if len(text.pieces) >= _Text.COMPACT_AT:
                    text.compact()
                text = part_id = None
            changed = apply(event) or changed
            if type(event) is TextDeltaEvent and self.status != "pending":
                message = self.message
                if message is not None and not message.unwritten:
                    open_part = message.open_text.get(event.id)
                    if open_part is not None:
                        part, text, part_id = open_part, open_part["text"], event.id
                        pieces = text.pieces
        if text is not None and len(text.pieces) >= _Text.COMPACT_AT:
            text.compact()
        return changed

    # -- text and reasoning ---------------------------------------------

    def _start_part(self, part_id: str, kind: str, metadata: Any) -> dict[str, Any]:
        message = self._live_message()
        text = _Text()
        part: dict[str, Any] = {"type": kind}
        if kind == "reasoning":
            part["id"] = part_id
        part["text"] = text
        _put(part, "providerMetadata", metadata)
        part["state"] = "streaming"
        message.parts.append(part)
        message.written()
        if kind == "text":
            message.open_text[part_id] = part
            self.output.append((part_id, text))
        else:
            message.open_reasoning[part_id] = part
        return part

    def _delta(self, event: TextDeltaEvent | ReasoningDeltaEvent, kind: str) -> None:
        message = self._live_message()
        part = (message.open_text if kind == "text" else message.open_reasoning).get(event.id)
        if part is None:
            # The SDK rejects a delta without its start; keeping the text is kinder.
            part = self._start_part(event.id, kind, UNSET)
        _add_delta(part, event)
        if message.unwritten:
            message.written()

    def _end_part(self, event: TextEndEvent | ReasoningEndEvent, kind: str) -> bool:
        message = self._live_message()
        table = message.open_text if kind == "text" else message.open_reasoning
        part = table.pop(event.id, None)
        if part is None:
            log.warning("%s for unknown part %r", type(event).__name__, event.id)
            return False
        part["state"] = "done"
        if isinstance(event, TextEndEvent) and self.ai_sdk == 7 and event.citations is not UNSET:
            part["citations"] = [_citation(c) for c in event.citations]
        if event.provider_metadata is not UNSET:
            part["providerMetadata"] = event.provider_metadata
        message.written()
        return True

    def _add_part(self, part: dict[str, Any], **optional: Any) -> None:
        """Append a part; ``optional`` fields only when they have a value."""
        message = self._live_message()
        for key, value in optional.items():
            _put(part, key, value)
        message.parts.append(part)
        message.written()

    # -- tools ------------------------------------------------------------

    def _tool_input_start(self, event: ToolInputStartEvent) -> None:
        message = self._live_message()
        call = message.calls[event.tool_call_id] = _PartialCall(event)
        _update_tool(
            message,
            event.tool_call_id,
            "input-streaming",
            dynamic=call.dynamic,
            tool_name=event.tool_name,
            encoding=event.input_encoding,
            provider_executed=event.provider_executed,
            provider_metadata=event.provider_metadata,
            title=event.title,
            tool_metadata=event.tool_metadata,
        )

    def _tool_input_delta(self, event: ToolInputDeltaEvent) -> bool:
        message = self._live_message()
        call = message.calls.get(event.tool_call_id)
        if call is None:
            # The SDK fails the stream here; skipping the delta keeps the rest.
            log.warning("tool-input-delta for unknown tool call %r", event.tool_call_id)
            return False
        call.text.add(event.input_text_delta)
        _update_tool(
            message,
            event.tool_call_id,
            "input-streaming",
            dynamic=call.dynamic,
            tool_name=call.name,
            input=call,
            raw_input=call.text,
            encoding=call.encoding,
            title=call.title,
            tool_metadata=call.metadata,
        )
        return True

    def _tool_input_available(self, event: ToolInputAvailableEvent) -> None:
        _update_tool(
            self._live_message(),
            event.tool_call_id,
            "input-available",
            dynamic=bool(event.dynamic),
            tool_name=event.tool_name,
            input=event.input,
            provider_executed=event.provider_executed,
            provider_metadata=event.provider_metadata,
            title=event.title,
            tool_metadata=event.tool_metadata,
        )

    def _tool_input_error(self, event: ToolInputErrorEvent) -> None:
        message = self._live_message()
        existing = message.step_tool(event.tool_call_id, None)
        if existing is not None:
            dynamic = existing["type"] == "dynamic-tool"
        else:
            dynamic = bool(event.dynamic)
        # 6 keeps a static tool's unusable input as rawInput; a dynamic tool (and
        # every tool in 7) shows it as input.
        as_input = dynamic or self.ai_sdk == 7
        _update_tool(
            message,
            event.tool_call_id,
            "output-error",
            dynamic=dynamic,
            tool_name=event.tool_name,
            input=event.input if as_input else UNSET,
            raw_input=UNSET if as_input else event.input,
            error_text=event.error_text,
            provider_executed=event.provider_executed,
            provider_metadata=event.provider_metadata,
            tool_metadata=event.tool_metadata,
        )

    def _tool_result(self, event: ToolOutputAvailableEvent | ToolOutputErrorEvent) -> bool:
        message = self._live_message()
        part = message.invocation(event.tool_call_id)
        if part is None:
            log.warning("%s for unknown tool call %r", type(event).__name__, event.tool_call_id)
            return False
        dynamic = part["type"] == "dynamic-tool"
        if isinstance(event, ToolOutputAvailableEvent):
            state, output, error_text, preliminary = (
                "output-available",
                event.output,
                None,
                event.preliminary,
            )
        else:
            state, output, error_text, preliminary = "output-error", UNSET, event.error_text, None
        _update_tool(
            message,
            event.tool_call_id,
            state,
            dynamic=dynamic,
            tool_name=_tool_name(part),
            part=part,
            input=_frozen(part.get("input", UNSET)),
            output=output,
            error_text=error_text,
            # Only a static tool's failure keeps the raw input it had.
            raw_input=_frozen(part.get("rawInput", UNSET))
            if state == "output-error" and not dynamic
            else UNSET,
            preliminary=preliminary,
            provider_executed=event.provider_executed,
            provider_metadata=event.provider_metadata,
            title=part.get("title"),
            tool_metadata=part.get("toolMetadata", UNSET)
            if event.tool_metadata is UNSET
            else event.tool_metadata,
        )
        return True

    def _tool_approval(self, event: ToolApprovalRequestEvent | ToolOutputDeniedEvent) -> bool:
        message = self._live_message()
        part = message.invocation(event.tool_call_id)
        if part is None:
            log.warning("%s for unknown tool call %r", type(event).__name__, event.tool_call_id)
            return False
        if isinstance(event, ToolApprovalRequestEvent):
            part["state"] = "approval-requested"
            approval: dict[str, Any] = {"id": event.approval_id}
            _put(approval, "descriptor", event.approval_descriptor)
            _put_json(approval, "inputSchemaInput", event.input_schema_input)
            if self.ai_sdk == 7:
                _put(approval, "requestReason", event.reason)
                if event.is_automatic is True:
                    approval["isAutomatic"] = True
            _put(approval, "signature", event.signature)
            part["approval"] = approval
        else:
            part["state"] = "output-denied"
        message.written()
        return True

    def _tool_approval_response(self, event: ToolApprovalResponseEvent) -> bool:
        message = self._live_message()
        part = next(
            (
                p
                for p in message.parts
                if _is_tool(p)
                and isinstance(p.get("approval"), dict)
                and p["approval"].get("id") == event.approval_id
            ),
            None,
        )
        if part is None:
            # The SDK fails the stream here; skipping the answer keeps the rest.
            log.warning("tool-approval-response for unknown approval %r", event.approval_id)
            return False
        # A new dict, never the old one changed: snapshots taken before share it.
        approval = {**part["approval"], "id": event.approval_id, "approved": event.approved}
        _keep(approval, "reason", event.reason)
        part["state"] = "approval-responded"
        part["approval"] = approval
        _keep(part, "providerExecuted", event.provider_executed)
        _keep(part, "callProviderMetadata", event.provider_metadata)
        message.written()
        return True

    # -- steps ----------------------------------------------------------------

    def _reset_step(self) -> bool:
        """ai 7's reset-step: the parts after the last step-start go, and with them
        what they added to the Worker (its output text, sources, files)."""
        message = self._live_message()
        # Whatever was open is forgotten, in this step or before (as the SDK does).
        message.open_text, message.open_reasoning, message.calls = {}, {}, {}
        message.step_tools = {}
        gone = message.parts[message.step :]
        sources, files = message.step_sources, message.step_files
        message.step_sources, message.step_files = [], []
        if not gone:
            return False  # the SDK writes nothing: a bare step-start stays unshown
        del message.parts[message.step :]
        texts = {id(p["text"]) for p in gone if p.get("type") == "text"}
        if texts:
            kept = [e for e in self.output if not (isinstance(e, tuple) and id(e[1]) in texts)]
            if self._text_base is not None and any(
                isinstance(e, tuple) and id(e[1]) in texts
                for e in self.output[: self._text_base_len]
            ):
                self._text_base = None  # a snapshot's text held the draft: follow output
            self.output = kept
        for source_id, previous in reversed(sources):
            if previous is None:
                self.sources.pop(source_id, None)
            else:
                self.sources[source_id] = previous
        if files:
            dropped = {id(f) for f in files}
            self.files = [f for f in self.files if id(f) not in dropped]
        message.written()
        return True

    # -- data parts ---------------------------------------------------------

    def _data(self, event: DataEvent) -> bool:
        if event.transient:
            return False
        message = self._live_message()
        existing = None
        if event.id is not None:
            existing = next(
                (p for p in message.parts if p["type"] == event.type and p.get("id") == event.id),
                None,
            )
        if existing is not None:
            existing["data"] = event.data
        else:
            part: dict[str, Any] = {"type": event.type}
            _put(part, "id", event.id)
            part["data"] = event.data
            if event.transient is not None:
                part["transient"] = event.transient
            if event.extra:
                # The SDK stores the chunk itself as the part: its other keys too.
                part.update((k, v) for k, v in event.extra.items() if k not in part)
            message.parts.append(part)
        message.written()
        return True


def _update_tool(
    message: _Message,
    call_id: str,
    state: str,
    *,
    dynamic: bool,
    tool_name: str,
    part: dict[str, Any] | None = None,
    input: Any = UNSET,
    output: Any = UNSET,
    error_text: str | None = None,
    raw_input: Any = UNSET,
    encoding: str | None = None,
    preliminary: bool | None = None,
    provider_executed: bool | None = None,
    provider_metadata: Any = UNSET,
    title: str | None = None,
    tool_metadata: Any = UNSET,
) -> None:
    """The SDK's ``updateToolPart`` / ``updateDynamicToolPart``, field for field."""
    if part is None:
        part = message.step_tool(call_id, dynamic)
    meta_key = "resultProviderMetadata" if state in _RESULT_STATES else "callProviderMetadata"
    if part is None:
        part = {"type": "dynamic-tool" if dynamic else f"tool-{tool_name}"}
        if dynamic:
            part["toolName"] = tool_name
        part["toolCallId"] = call_id
        part["state"] = state
        _put(part, "title", title)
        _put(part, "toolMetadata", tool_metadata)
        _put_json(part, "input", input)
        _put(part, "inputEncoding", encoding)
        _put_json(part, "output", output)
        if not dynamic:
            # A new dynamic part starts without rawInput; updates may add it.
            _put_json(part, "rawInput", raw_input)
        _put(part, "errorText", error_text)
        _put(part, "providerExecuted", provider_executed)
        _put(part, "preliminary", preliminary)
        _put(part, meta_key, provider_metadata)
        message.parts.append(part)
        message.step_tools.setdefault(call_id, []).append(part)
    else:
        part["state"] = state
        if dynamic:
            part["toolName"] = tool_name
        else:
            part["type"] = f"tool-{tool_name}"
        _put_json(part, "input", input)
        _put_json(part, "output", output)
        _put(part, "errorText", error_text)
        _put_json(part, "rawInput", raw_input)
        _put(part, "inputEncoding", encoding)
        _put(part, "preliminary", preliminary)
        _keep(part, "title", title)
        _keep(part, "toolMetadata", tool_metadata)
        _keep(part, "providerExecuted", provider_executed)
        _keep(part, meta_key, provider_metadata)
    message.written()


def _add_delta(part: dict[str, Any], event: TextDeltaEvent | ReasoningDeltaEvent) -> None:
    """Append a delta to its open text or reasoning part: the one rule for every delta."""
    part["text"].add(event.delta)
    if event.provider_metadata is not UNSET:
        part["providerMetadata"] = event.provider_metadata


def _citation(citation: Any) -> Any:
    """A citation as ai 7 keeps it: the keys its schema names, the source's too."""
    if not isinstance(citation, dict):
        return citation
    kept = {k: citation[k] for k in _CITATION_KEYS if k in citation}
    source = kept.get("source")
    if isinstance(source, dict):
        keys = _CITED_SOURCE_KEYS.get(str(source.get("sourceType")), ())
        if keys:
            kept["source"] = {k: source[k] for k in keys if k in source}
    return kept


def _tool_name(part: dict[str, Any]) -> str:
    name = part.get("toolName") if part["type"] == "dynamic-tool" else part["type"][5:]
    return str(name)


def apply_event(state: WorkerState, event: Event) -> bool:
    """The earlier name of :meth:`WorkerState.apply`, kept for code written against it.

    >>> from handinger_stream.types.events import ErrorEvent
    >>> s = WorkerState("w")
    >>> apply_event(s, ErrorEvent(error_text="boom")), s.snapshot().error
    (True, 'boom')
    """
    return state.apply(event)


def fold(events: Iterable[Event], worker_id: str = "", *, ai_sdk: AISDKVersion = 7) -> Worker:
    """Fold a whole sequence of events into a Worker, as AI SDK major ``ai_sdk`` would.

    >>> from handinger_stream.types.events import StartEvent, FinishEvent
    >>> fold([StartEvent(message_id="m"), FinishEvent()]).status
    'completed'
    >>> fold([StartEvent(message_id="m"), FinishEvent()], ai_sdk=6).status
    'completed'
    """
    state = WorkerState(worker_id, ai_sdk=ai_sdk)
    state.apply_all(events)
    return state.snapshot()
