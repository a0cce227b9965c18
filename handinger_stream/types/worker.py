"""The Worker resource, as msgspec Structs with the reference's wire names.

Wire names are exactly the API's (``mediaType``, ``cacheReadTokens``,
``created_at``, ``output_text``); attribute names are Pythonic. Unknown fields
the server adds are ignored, so a newer server never breaks an older client.

>>> w = msgspec.json.decode(b'{"id": "w1", "object": "worker", "status": "running"}', type=Worker)
>>> (w.id, w.status, w.output_text)
('w1', 'running', '')
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "Budget",
    "Costs",
    "File",
    "OutputMessage",
    "OutputText",
    "Source",
    "Usage",
    "Worker",
    "WorkerStatus",
]

Budget = Literal["low", "standard", "high", "unlimited"]
WorkerStatus = Literal["running", "completed", "pending"]
BUDGETS: tuple[str, ...] = ("low", "standard", "high", "unlimited")


class OutputText(msgspec.Struct, kw_only=True):
    text: str
    type: Literal["output_text"] = "output_text"


class OutputMessage(msgspec.Struct, kw_only=True):
    """One assistant message of ``Worker.output``: one per text part of the stream."""

    id: str
    content: list[OutputText] = msgspec.field(default_factory=list)
    role: Literal["assistant"] = "assistant"
    status: Literal["completed"] = "completed"
    type: Literal["message"] = "message"


class Source(msgspec.Struct, kw_only=True):
    id: str
    url: str
    title: str | None = None
    type: Literal["url"] = "url"


class File(msgspec.Struct, kw_only=True, rename={"media_type": "mediaType"}):
    url: str
    media_type: str
    filename: str | None = None


class Usage(msgspec.Struct, kw_only=True, rename="camel"):
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    total_tokens: int = 0
    steps: int = 0
    cost_usd: float = 0.0
    credits: float | None = None


class Costs(msgspec.Struct, kw_only=True, rename="camel"):
    internal_cost_usd: float = 0.0
    model_cost_usd: float = 0.0
    sandbox_cost_usd: float = 0.0
    tool_cost_usd: float = 0.0

    @property
    def total_usd(self) -> float:
        return (
            self.internal_cost_usd
            + self.model_cost_usd
            + self.sandbox_cost_usd
            + self.tool_cost_usd
        )


class Worker(msgspec.Struct, kw_only=True):
    """A worker: the agent's state, output, sources, files, usage and costs.

    ``messages`` holds AI SDK UI messages as plain JSON-like dicts, exactly as
    the AI SDK's own ``readUIMessageStream`` builds them.
    """

    id: str
    object: Literal["worker"] = "worker"
    status: WorkerStatus = "pending"
    running: bool = False
    created_at: int | float | None = None
    output: list[OutputMessage] = msgspec.field(default_factory=list)
    output_text: str = ""
    sources: list[Source] = msgspec.field(default_factory=list)
    files: list[File] = msgspec.field(default_factory=list)
    messages: list[Any] = msgspec.field(default_factory=list)
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    error: Any = None
    incomplete_details: Any = None
    costs: Costs | None = None
    usage: Usage | None = None

    @property
    def failed(self) -> bool:
        """True when the worker reported an error."""
        return self.error is not None

    @property
    def cost_usd(self) -> float | None:
        """What it has cost so far: its ``costs`` total, else its usage's; ``None`` if neither.

        >>> Worker(id="w", costs=Costs(model_cost_usd=0.25)).cost_usd
        0.25
        """
        if self.costs is not None:
            return self.costs.total_usd
        return self.usage.cost_usd if self.usage is not None else None


WORKER_FIELDS: frozenset[str] = frozenset(Worker.__struct_fields__)
