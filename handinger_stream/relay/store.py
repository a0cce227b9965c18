"""The store's interface, and the records it keeps: one log of entries per chat.

A chat is one worker's conversation. Its log holds every event the worker
sent, in order, each with the relay's own id (``seq``: 1, 2, 3, … with no
gaps) and the upstream SSE id it came with; each turn ends with an end
marker. Appending is fenced: only the holder of the chat's current producer
lease may append, and the lease's token is checked in the same atomic step
as the append (see ``docs/relay.md``).

Two stores implement it: :class:`~handinger_stream.relay.MemoryStore` (one
process) and :class:`~handinger_stream.relay.RedisStore` (any number of
processes, over Redis Streams).

>>> Entry(seq=3, data=b'{"type":"text-delta","id":"t","delta":"Hi"}').event().delta
'Hi'
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import msgspec

from ..protocol.sse import ServerSentEvent
from ..protocol.wire import decode_event
from ..types.events import Event

__all__ = [
    "CHAT_SECONDS",
    "KEEP_SECONDS",
    "MAX_EVENTS",
    "MAX_PRINCIPAL",
    "Admission",
    "ChatInfo",
    "Entry",
    "Lease",
    "NewEntry",
    "Quota",
    "Store",
    "check_principal",
]

MAX_EVENTS = 100_000
"""Entries kept per chat; older ones are trimmed (a turn must be shorter than this)."""
KEEP_SECONDS = 3600.0
"""How long a chat's entries are kept after its last turn ended."""
CHAT_SECONDS = 7 * 86400.0
"""How long a chat's record (its worker id, where its log is) is kept after its last turn."""
MAX_PRINCIPAL = 256
"""The longest principal (who made a request, as an ``authenticate`` hook names it) kept."""


class NewEntry(msgspec.Struct, frozen=True, gc=False):
    """An entry to append, before the store gives it its ``seq``: an event's JSON as
    the worker sent it, and its upstream SSE id. ``store.append`` makes it an :class:`Entry`.

    >>> NewEntry(b'{"type":"start"}', "0").upstream_id
    '0'
    """

    data: bytes
    upstream_id: str | None = None
    snapshot: bool = False
    """A Worker snapshot (``data-worker``, or a bare Worker object)."""


class Entry(msgspec.Struct, frozen=True, gc=False):
    """One entry of a chat's log: an event, or the end marker of a turn."""

    seq: int
    """The relay's id: what readers see as the SSE ``id`` and send back as ``Last-Event-ID``."""
    data: bytes = b""
    upstream_id: str | None = None
    snapshot: bool = False
    end: bool = False
    """The end marker of a turn (``data`` is empty)."""
    error: str | None = None
    """On an end marker: why the relay could not finish the turn (``None``: it ended normally)."""

    def event(self) -> Event | None:
        """The typed event (``None`` for an end marker)."""
        if self.end:
            return None
        return decode_event(ServerSentEvent(self.data, id=self.upstream_id), self.seq)


class ChatInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the store knows of a chat: its worker, its turn, its producer.

    ``leased`` says whether some relay process holds the producer lease now:
    a chat that is ``active`` and not ``leased`` lost its producer, and the
    next reader takes over. ``updated_at`` is the wall-clock time (seconds
    since the epoch) of its last append.
    """

    chat_id: str
    worker_id: str | None
    active: bool
    turn_start: int
    """The seq of the current (or last) turn's first entry."""
    last_seq: int
    last_upstream_id: str | None
    status: str
    """``pending`` (turn begun, nothing yet), ``running``, ``completed`` or ``failed``."""
    producer: str | None
    leased: bool
    error: str | None = None
    updated_at: float | None = None
    owner: str | None = None
    """The principal that started the chat (:meth:`Store.admit_turn`); ``None``: nobody's."""


@dataclass(frozen=True, slots=True)
class Quota:
    """What one principal may do, enforced by the store so that every relay sharing it
    counts the same turns (``None``: no limit).

    ``turns``: turns running at once; a turn counts while its producer lease is
    held (so a relay that died frees its slots within ``lease_seconds``), and
    from its admission until it begins, ``hold`` seconds at most. ``rate``
    turns admitted in any ``window`` seconds. ``chats``: chats kept (a chat
    counts until its record expires).

    >>> Quota(turns=2, rate=10, chats=50).window
    60.0
    """

    turns: int | None = None
    rate: int | None = None
    window: float = 60.0
    chats: int | None = None
    hold: float = 30.0

    def __post_init__(self) -> None:
        for name in ("turns", "rate", "chats"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None")
        if self.window <= 0 or self.hold <= 0:
            raise ValueError("window and hold must be positive")


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`Store.admit_turn` said.

    ``refused``: ``None`` (admitted), ``"owner"`` (the chat is another
    principal's, or nobody's: answer 404), or the limit that was reached,
    ``"turns"``, ``"rate"`` or ``"chats"`` (answer 429 with ``retry_after``
    seconds). ``new_chat``: this admission created the chat, owned by the principal.

    >>> Admission(refused="rate", retry_after=12.0).admitted
    False
    """

    refused: str | None = None
    retry_after: float = 0.0
    new_chat: bool = False

    @property
    def admitted(self) -> bool:
        return self.refused is None


def check_principal(principal: str) -> None:
    """Refuse a principal a store cannot keep (it names keys and is compared as given).

    >>> check_principal("alice@example.com")
    """
    if not isinstance(principal, str) or not 0 < len(principal) <= MAX_PRINCIPAL:
        raise ValueError(f"a principal must be a string of 1 to {MAX_PRINCIPAL} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in principal):
        raise ValueError("a principal must not contain control characters")


@dataclass(slots=True, eq=False)
class Lease:
    """A producer's right to append to one chat's log, until it expires or is taken.

    ``token`` is checked by the store on every append (fencing); ``fence``
    grows with every lease ever given for the chat. ``last_seq`` and
    ``last_upstream_id`` follow this producer's appends.
    """

    chat_id: str
    token: str
    fence: int
    holder: str
    ttl: float
    last_seq: int
    last_upstream_id: str | None
    worker_id: str | None
    turn_start: int
    new_turn: bool


class Store(abc.ABC):
    """Where a relay keeps each chat's log, and its producer lease.

    Reading never blocks the producer: readers pull from the log at their
    own pace (``read``), and ``wait`` until there is more.
    """

    # -- chats ------------------------------------------------------------

    @abc.abstractmethod
    async def chat(self, chat_id: str) -> ChatInfo | None:
        """The chat's record, or ``None`` for a chat never seen (or expired)."""

    @abc.abstractmethod
    async def fleet(self) -> list[ChatInfo]:
        """Every chat with a turn running, whichever process produces it, newest first.

        The fleet view: with :class:`~handinger_stream.relay.RedisStore`, what
        every relay process sharing the Redis is relaying right now, including
        turns whose producer died (``leased`` False) until a reader takes over.
        """

    # -- owners and limits (access control) -----------------------------------

    @abc.abstractmethod
    async def owner(self, chat_id: str) -> str | None:
        """The principal that started the chat; ``None`` for a chat never seen, expired,
        or started without one (such a chat is nobody's: every principal gets 404)."""

    @abc.abstractmethod
    async def admit_turn(self, chat_id: str, principal: str, quota: Quota) -> Admission:
        """Decide, in one atomic step, whether ``principal`` may start a turn of the chat.

        A chat never seen becomes the principal's (the first principal wins,
        for good: a chat is never given to another while its record lasts).
        A chat that exists and is another's, or nobody's, is refused
        (``"owner"``). Then the quota: ``chats`` (for a new chat), ``turns``,
        ``rate``. Admitted, the turn is counted at once, so that every relay
        sharing the store sees it; a refusal counts nothing. An admission that
        did not start a turn is undone with :meth:`drop_admission`.
        """

    @abc.abstractmethod
    async def drop_admission(self, chat_id: str, principal: str) -> None:
        """The admitted turn did not start (busy chat, worker refused): its slot is freed
        unless the chat's turn runs. The admission still counts towards ``rate``."""

    # -- producing (fenced) -------------------------------------------------

    @abc.abstractmethod
    async def begin_turn(self, chat_id: str, *, holder: str, ttl: float) -> Lease:
        """Start a new turn and take its producer lease; :class:`ChatBusyError` if one runs."""

    @abc.abstractmethod
    async def take_over(self, chat_id: str, *, holder: str, ttl: float) -> Lease | None:
        """Take the lease of a running turn whose producer is gone; ``None`` if not so."""

    @abc.abstractmethod
    async def set_worker(self, lease: Lease, worker_id: str) -> None:
        """Record the chat's worker (fenced)."""

    @abc.abstractmethod
    async def append(self, lease: Lease, entries: Sequence[NewEntry]) -> None:
        """Append entries, numbered on from ``lease.last_seq`` (fenced, atomic, and
        idempotent: a retry after a lost reply is a no-op).

        Raises :class:`LeaseLostError` when another producer holds the chat
        now, :class:`StoreUnavailableError` when the store cannot be reached.
        """

    @abc.abstractmethod
    async def renew(self, lease: Lease) -> None:
        """Extend the lease by its ttl; :class:`LeaseLostError` if it is no longer ours."""

    @abc.abstractmethod
    async def finish(self, lease: Lease, error: str | None = None) -> None:
        """Append the turn's end marker and give the lease up (fenced, idempotent)."""

    @abc.abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give the lease up without ending the turn: the next reader takes over."""

    async def set_message_id(self, lease: Lease, message_id: str) -> None:  # noqa: B027
        """Keep the sender's id for the user message of the turn just begun (the chat's
        next question): the history gives that question this id, not the worker's. A
        store that keeps none (this default) leaves the worker's ids."""

    async def message_ids(self, chat_id: str) -> list[str]:
        """The senders' ids of the chat's questions, in order (``""``: none given)."""
        return []

    # -- reading -------------------------------------------------------------

    @abc.abstractmethod
    async def read(self, chat_id: str, after: int, limit: int) -> list[Entry]:
        """Up to ``limit`` entries after seq ``after``, without waiting.

        Raises :class:`EntriesGoneError` when the entry after ``after`` was
        trimmed or has expired.
        """

    def read_ready(self, chat_id: str, after: int, limit: int) -> list[Entry] | None:
        """:meth:`read`'s answer if the store has it at hand, without I/O; ``None`` if
        not (then :meth:`read`). A live reader's every read asks this first: a thousand
        readers of a turn read after each event."""
        return None

    @abc.abstractmethod
    async def wait(self, chat_id: str, after: int, timeout: float) -> bool:
        """Wait until an entry after ``after`` exists (True) or ``timeout`` seconds pass."""

    # -- lifetime ------------------------------------------------------------

    async def aclose(self) -> None:  # noqa: B027 - a store with nothing to close keeps this
        """Let go of connections and background tasks."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
