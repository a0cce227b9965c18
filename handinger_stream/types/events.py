"""Typed stream events: one msgspec Struct per AI SDK UI message chunk type.

Chunk types with a fixed ``type`` form a tagged union decoded in one pass;
``data-*`` parts, Worker snapshots and unknown chunks are built by
:mod:`handinger_stream.protocol.wire`. Every event carries ``event_id``, the SSE ``id``
it arrived with (or ``None``), so a consumer can resume after it.

The union holds the chunk types of both AI SDK majors the reducer folds as
(:data:`AISDKVersion`); those only ai 7 sends say so. A chunk Struct refuses
keys it does not declare when msgspec decodes it directly; the wire module
decodes such a chunk (ai 7's chunk schemas are loose objects) and keeps its
JSON in ``original``, so that what it carried goes back to the wire unchanged.

>>> import msgspec
>>> msgspec.json.decode(b'{"type":"text-delta","id":"t1","delta":"Hi"}', type=ChunkEvent)
TextDeltaEvent(id='t1', delta='Hi', provider_metadata=UNSET, event_id=None)
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from .worker import Worker

__all__ = [
    "AI_SDK_7_ONLY",
    "AI_SDK_VERSIONS",
    "AISDKVersion",
    "AbortEvent",
    "ChunkEvent",
    "CustomEvent",
    "DataEvent",
    "ErrorEvent",
    "Event",
    "FileEvent",
    "FinishEvent",
    "FinishStepEvent",
    "MessageMetadataEvent",
    "ReasoningDeltaEvent",
    "ReasoningEndEvent",
    "ReasoningFileEvent",
    "ReasoningStartEvent",
    "Reconnected",
    "ResetStepEvent",
    "SourceDocumentEvent",
    "SourceUrlEvent",
    "StartEvent",
    "StartStepEvent",
    "SteeringMessageEvent",
    "TextDeltaEvent",
    "TextEndEvent",
    "TextStartEvent",
    "ToolApprovalRequestEvent",
    "ToolApprovalResponseEvent",
    "ToolInputAvailableEvent",
    "ToolInputDeltaEvent",
    "ToolInputErrorEvent",
    "ToolInputStartEvent",
    "ToolOutputAvailableEvent",
    "ToolOutputDeniedEvent",
    "ToolOutputErrorEvent",
    "UnknownEvent",
    "WorkerSnapshotEvent",
]

Metadata = dict[str, Any] | UnsetType

AISDKVersion = Literal[6, 7]
"""A major of the AI SDK (npm ``ai``) whose ``readUIMessageStream`` the reducer folds as.

>>> from handinger_stream import AsyncHandinger
>>> client = AsyncHandinger(api_key="k", ai_sdk=6)  # fold every stream as ai 6 does
"""

AI_SDK_VERSIONS: tuple[AISDKVersion, ...] = (6, 7)
"""The majors the reducer knows, oldest first; the last is the default."""


class _Chunk(
    msgspec.Struct,
    tag_field="type",
    kw_only=True,
    rename="camel",
    omit_defaults=True,
    gc=False,
    # How the one-pass decoder notices a chunk with keys not declared here, at no
    # cost to the others: it refuses it, and the wire module's slower path keeps it.
    forbid_unknown_fields=True,
):
    # event_id is set from the SSE frame after decoding, never read from JSON: its
    # odd JSON name leaves a chunk's own "eventId" key to the chunk (kept, below).
    # omit_defaults: an absent field stays absent when encoded (see wire.encode_event).
    event_id: str | None = msgspec.field(default=None, name="~eventId")
    # The chunk's JSON as it arrived, when it carried keys not declared here (set
    # by the wire module; the odd JSON name keeps chunk keys out of it).
    # wire.encode_event gives it back while the event is unchanged.
    original: bytes | None = msgspec.field(default=None, name="~original")

    def __repr__(self) -> str:
        # ``original`` is bookkeeping for the wire, shown only when there is some: it
        # takes part in ``==``, so two chunks that differ by it must not print alike.
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__struct_fields__
            if name != "original" or self.original is not None
        )
        return f"{type(self).__name__}({fields})"


class StartEvent(_Chunk, tag="start"):
    message_id: str | None = None
    message_metadata: Any = UNSET


class StartStepEvent(_Chunk, tag="start-step"):
    pass


class FinishStepEvent(_Chunk, tag="finish-step"):
    pass


class FinishEvent(_Chunk, tag="finish"):
    message_metadata: Any = UNSET
    finish_reason: str | None = None


class AbortEvent(_Chunk, tag="abort"):
    reason: str | None = None


class ErrorEvent(_Chunk, tag="error"):
    error_text: str


class MessageMetadataEvent(_Chunk, tag="message-metadata"):
    message_metadata: Any = UNSET


class TextStartEvent(_Chunk, tag="text-start"):
    id: str
    provider_metadata: Metadata = UNSET


class TextDeltaEvent(_Chunk, tag="text-delta"):
    id: str
    delta: str
    provider_metadata: Metadata = UNSET


class TextEndEvent(_Chunk, tag="text-end"):
    id: str
    # ai 7: the sources the text cites, each {source, startIndex?, endIndex?, citedText?}.
    citations: list[Any] | UnsetType = UNSET
    provider_metadata: Metadata = UNSET


class ReasoningStartEvent(_Chunk, tag="reasoning-start"):
    id: str
    provider_metadata: Metadata = UNSET


class ReasoningDeltaEvent(_Chunk, tag="reasoning-delta"):
    id: str
    delta: str
    provider_metadata: Metadata = UNSET


class ReasoningEndEvent(_Chunk, tag="reasoning-end"):
    id: str
    provider_metadata: Metadata = UNSET


class SourceUrlEvent(_Chunk, tag="source-url"):
    source_id: str
    url: str
    title: str | None = None
    provider_metadata: Metadata = UNSET


class SourceDocumentEvent(_Chunk, tag="source-document"):
    source_id: str
    media_type: str
    title: str
    filename: str | None = None
    provider_metadata: Metadata = UNSET


class FileEvent(_Chunk, tag="file"):
    url: str
    media_type: str
    provider_metadata: Metadata = UNSET


class ToolInputStartEvent(_Chunk, tag="tool-input-start"):
    tool_call_id: str
    tool_name: str
    # "text": the deltas are the raw input, not JSON.
    input_encoding: str | None = None
    provider_executed: bool | None = None
    dynamic: bool | None = None
    title: str | None = None
    provider_metadata: Metadata = UNSET
    tool_metadata: Metadata = UNSET


class ToolInputDeltaEvent(_Chunk, tag="tool-input-delta"):
    tool_call_id: str
    input_text_delta: str


class ToolInputAvailableEvent(_Chunk, tag="tool-input-available"):
    tool_call_id: str
    tool_name: str
    input: Any = UNSET
    provider_executed: bool | None = None
    provider_metadata: Metadata = UNSET
    tool_metadata: Metadata = UNSET
    dynamic: bool | None = None
    title: str | None = None


class ToolInputErrorEvent(_Chunk, tag="tool-input-error"):
    tool_call_id: str
    tool_name: str
    error_text: str
    input: Any = UNSET
    provider_executed: bool | None = None
    provider_metadata: Metadata = UNSET
    tool_metadata: Metadata = UNSET
    dynamic: bool | None = None
    title: str | None = None


class ToolOutputAvailableEvent(_Chunk, tag="tool-output-available"):
    tool_call_id: str
    output: Any = UNSET
    provider_executed: bool | None = None
    provider_metadata: Metadata = UNSET
    tool_metadata: Metadata = UNSET
    dynamic: bool | None = None
    preliminary: bool | None = None


class ToolOutputErrorEvent(_Chunk, tag="tool-output-error"):
    tool_call_id: str
    error_text: str
    provider_executed: bool | None = None
    provider_metadata: Metadata = UNSET
    tool_metadata: Metadata = UNSET
    dynamic: bool | None = None


class ToolApprovalRequestEvent(_Chunk, tag="tool-approval-request"):
    approval_id: str
    tool_call_id: str
    approval_descriptor: Any = UNSET
    input_schema_input: Any = UNSET
    # ai 7: why approval is asked (the approval's ``requestReason``), and whether
    # it was decided without a person.
    reason: str | None = None
    is_automatic: bool | None = None
    signature: str | None = None


class ToolApprovalResponseEvent(_Chunk, tag="tool-approval-response"):
    """ai 7: the answer to an approval request, found by its ``approval_id``."""

    approval_id: str
    approved: bool
    reason: str | None = None
    provider_executed: bool | None = None
    provider_metadata: Metadata = UNSET


class ToolOutputDeniedEvent(_Chunk, tag="tool-output-denied"):
    tool_call_id: str


class ResetStepEvent(_Chunk, tag="reset-step"):
    """ai 7: the step under way is thrown away (a retried model call): its parts vanish."""


class CustomEvent(_Chunk, tag="custom"):
    """ai 7: a provider's own content, shown as a ``custom`` part of that ``kind``."""

    kind: str
    provider_metadata: Metadata = UNSET


class ReasoningFileEvent(_Chunk, tag="reasoning-file"):
    """ai 7: a file the model produced while reasoning (not among the Worker's files)."""

    url: str
    media_type: str
    provider_metadata: Metadata = UNSET


class SteeringMessageEvent(_Chunk, tag="steering-message"):
    """ai 7: a user message added to the run while it streams (text and file parts)."""

    id: str
    parts: list[Any]


ChunkEvent = (
    StartEvent
    | StartStepEvent
    | FinishStepEvent
    | FinishEvent
    | AbortEvent
    | ErrorEvent
    | MessageMetadataEvent
    | TextStartEvent
    | TextDeltaEvent
    | TextEndEvent
    | ReasoningStartEvent
    | ReasoningDeltaEvent
    | ReasoningEndEvent
    | SourceUrlEvent
    | SourceDocumentEvent
    | FileEvent
    | ToolInputStartEvent
    | ToolInputDeltaEvent
    | ToolInputAvailableEvent
    | ToolInputErrorEvent
    | ToolOutputAvailableEvent
    | ToolOutputErrorEvent
    | ToolApprovalRequestEvent
    | ToolApprovalResponseEvent
    | ToolOutputDeniedEvent
    | ResetStepEvent
    | CustomEvent
    | ReasoningFileEvent
    | SteeringMessageEvent
)
"""The chunk types with a fixed ``type`` tag."""

AI_SDK_7_ONLY: tuple[type[ChunkEvent], ...] = (
    ResetStepEvent,
    CustomEvent,
    ReasoningFileEvent,
    SteeringMessageEvent,
    ToolApprovalResponseEvent,
)
"""The chunk types ai 6's schema does not know (folded as 6 does: changing nothing)."""

CHUNK_TYPES: frozenset[str] = frozenset(cls.__struct_config__.tag for cls in ChunkEvent.__args__)


class DataEvent(msgspec.Struct, kw_only=True):
    """A custom ``data-*`` part: ``type`` is e.g. ``"data-weather"``.

    ``extra``: the keys the part carried besides these (the AI SDK keeps them
    on the message part); ``original``: its JSON as it arrived, when it had any.
    """

    type: str
    data: Any = None
    id: str | None = None
    transient: bool | None = None
    event_id: str | None = None
    extra: dict[str, Any] | None = None
    original: bytes | None = None

    @property
    def name(self) -> str:
        """The part's name without the ``data-`` prefix."""
        return self.type[5:]


class WorkerSnapshotEvent(msgspec.Struct, kw_only=True):
    """A Worker object sent whole (bare, or as a ``data-worker`` part).

    ``fields`` names the fields the server sent; only those replace the
    snapshot built so far. ``bare``: the Worker came as the event's data
    itself; otherwise in a ``data-worker`` part, with its ``part_id`` and
    ``transient`` flag.
    """

    worker: Worker
    fields: frozenset[str]
    type: str = "data-worker"
    event_id: str | None = None
    bare: bool = False
    part_id: str | None = None
    transient: bool | None = None


class UnknownEvent(msgspec.Struct, kw_only=True):
    """A chunk this client does not know: kept, with its raw data, never dropped."""

    type: str | None
    data: Any
    raw: str
    event_id: str | None = None


Event = ChunkEvent | DataEvent | WorkerSnapshotEvent | UnknownEvent
"""Everything a :class:`~handinger_stream.WorkerStream` yields."""


class Reconnected(msgspec.Struct, kw_only=True, frozen=True):
    """The stream broke and was resumed: yielded only by ``stream.events(reconnects=True)``.

    ``reason`` says what broke; ``last_event_id`` is where the resume started
    (``None``: replayed from the start, ``skipped`` events already delivered).
    """

    attempt: int
    reason: str
    delay: float
    last_event_id: str | None
    skipped: int = 0
