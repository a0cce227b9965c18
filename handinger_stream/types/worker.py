"""The Worker resource, as msgspec Structs with the reference's wire names.

Wire names are exactly the API's (``mediaType``, ``cacheReadTokens``,
``created_at``, ``output_text``); attribute names are Pythonic. Unknown fields
the server adds are ignored, so a newer server never breaks an older client.
One Worker serves both generations of the API: the seed's ``costs`` and token
usage, today's ``structured_output``, ``url``, ``usage.credits`` and
``usage.duration_ms``; what a server does not send stays at its default.

>>> w = msgspec.json.decode(b'{"id": "w1", "object": "worker", "status": "running"}', type=Worker)
>>> (w.id, w.status, w.output_text)
('w1', 'running', '')
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "Budget",
    "Costs",
    "EmailAddress",
    "File",
    "Outcome",
    "OutputMessage",
    "OutputText",
    "Source",
    "StructuredOutputError",
    "Usage",
    "Worker",
    "WorkerStatus",
]

T = TypeVar("T")

Budget = Literal["low", "standard", "high", "unlimited"]
WorkerStatus = Literal["running", "completed", "pending"]
# How a turn ended (Worker.outcome): the status alone says "completed" for each of them.
Outcome = Literal["completed", "failed", "aborted", "incomplete"]
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
    # UNSET (not None) when the server did not send it, so that a Worker encodes back
    # to exactly the fields it arrived with (the seed's generation sends no size).
    size: int | UnsetType = UNSET


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
    duration_ms: int | UnsetType = UNSET  # today's generation only; UNSET as File.size


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
    created_at: int | float | str | None = None
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
    structured_output: Any = None
    url: str | None = None

    @property
    def created(self) -> datetime | None:
        """``created_at`` as an aware datetime, whichever way the server sent it.

        The seed's generation sends seconds since the epoch, today's an ISO-8601 string.

        >>> Worker(id="w", created_at=0).created.year, Worker(id="w").created
        (1970, None)
        """
        return timestamp(self.created_at)

    def parse(self, into: type[T]) -> T:
        """``structured_output`` decoded into your own msgspec Struct, dataclass or TypedDict.

        >>> class Trip(msgspec.Struct):
        ...     city: str
        ...     days: int
        >>> Worker(id="w", structured_output={"city": "Girona", "days": 3}).parse(Trip)
        Trip(city='Girona', days=3)
        >>> Worker(id="w", structured_output={"city": "Girona", "days": "three"}).parse(Trip)
        Traceback (most recent call last):
          ...
        handinger_stream.types.worker.StructuredOutputError: the structured output does not \
fit Trip: Expected `int`, got `str` - at `$.days`
        """
        name = getattr(into, "__name__", repr(into))
        if self.structured_output is None:
            raise StructuredOutputError(
                f"worker {self.id!r} has no structured output to parse into {name} "
                "(its worker template has no outputSchema, or the turn has not finished)"
            )
        try:
            return msgspec.convert(self.structured_output, type=into)
        except msgspec.ValidationError as exc:
            raise StructuredOutputError(
                f"the structured output does not fit {name}: {exc}"
            ) from None

    @property
    def failed(self) -> bool:
        """True when the worker reported an error (its ``status`` still says ``completed``).

        >>> Worker(id="w", status="completed", error="the agent failed").failed
        True
        """
        return self.error is not None

    @property
    def outcome(self) -> Outcome | None:
        """How the turn ended, from the Worker's own fields; ``None`` while it has not ended.

        ``failed``: it reported an error. ``aborted``: it was stopped (an ``abort``
        chunk: a cancelled task, a stop button), ``incomplete_details`` says why.
        ``incomplete``: the service ended it for another stated reason (a server
        stopping mid-turn, an output limit), in ``incomplete_details`` too.
        ``completed``: it reached its end. A stream that broke and could not be
        resumed leaves a Worker still ``running`` (``None`` here): the
        ``IncompleteStreamError`` that ended it says so, and the command line
        reports it as ``incomplete``.

        >>> Worker(id="w", status="completed").outcome
        'completed'
        >>> Worker(id="w", status="completed", incomplete_details={"reason": "aborted"}).outcome
        'aborted'
        >>> Worker(id="w", status="running", running=True, error="a retried step").outcome is None
        True
        """
        if self.status != "completed" or self.running:
            return None  # not ended yet, whatever it has reported so far
        if self.error is not None:
            return "failed"
        if self.incomplete_details is not None:
            reason = (
                self.incomplete_details.get("reason")
                if isinstance(self.incomplete_details, dict)
                else self.incomplete_details
            )
            return "aborted" if reason in (None, "aborted", "abort") else "incomplete"
        return "completed"

    @property
    def error_message(self) -> str | None:
        """The error's text, whatever shape the server gave it (a string, or an object
        with a ``message``); ``None`` without an error.

        >>> Worker(id="w", error={"message": "quota exceeded", "code": 429}).error_message
        'quota exceeded'
        """
        err = self.error
        if err is None:
            return None
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
        return err if isinstance(err, str) else msgspec.json.encode(err).decode()

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


class StructuredOutputError(ValueError):
    """:meth:`Worker.parse` found no structured output, or one that does not fit the type;
    the message names the field and where it is."""


class EmailAddress(str):
    """A worker's inbound address: a ``str``, with ``.email`` as the official SDK's answer has.

    >>> address = EmailAddress("w1@in.handinger.com")
    >>> address == "w1@in.handinger.com" and address.email == address
    True
    """

    __slots__ = ()

    @property
    def email(self) -> str:
        return str(self)


def timestamp(value: int | float | str | None) -> datetime | None:
    """A wire timestamp as an aware datetime: seconds (or milliseconds) since the epoch,
    or an ISO-8601 string; ``None`` for none.

    >>> timestamp("2026-05-01T10:00:00Z").hour, timestamp(1_700_000_000_000).year
    (10, 2023)
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    # Milliseconds, if the number is too large to be seconds (after the year 5000).
    seconds = value / 1000 if value > 1e11 else value
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
