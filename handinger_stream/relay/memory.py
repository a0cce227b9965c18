"""MemoryStore: the relay's store for one process, in memory.

Bounded per chat (``max_events``); a chat's entries are dropped
``keep_seconds`` after its last turn ended, its record ``chat_seconds``
after. The lease works as in Redis (a token, an expiry, fencing on every
append), so the relay's code is the same over either store.

>>> store = MemoryStore(max_events=1000, keep_seconds=60)
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._signal import Signal
from .errors import ChatBusyError, EntriesGoneError, LeaseLostError
from .store import (
    CHAT_SECONDS,
    KEEP_SECONDS,
    MAX_EVENTS,
    Admission,
    ChatInfo,
    Entry,
    Lease,
    NewEntry,
    Quota,
    Store,
    check_principal,
)

__all__ = ["MemoryStore"]

_SWEEP_SECONDS = 10.0
_BUSY_RETRY = 5.0  # seconds: when a running turn ends is not known; a guess to retry after


@dataclass(eq=False)
class _Chat:
    chat_id: str
    worker_id: str | None = None
    active: bool = False
    turn_start: int = 1
    last_seq: int = 0
    last_upstream_id: str | None = None
    status: str = "pending"
    error: str | None = None
    producer: str | None = None
    updated_at: float | None = None
    fence: int = 0
    lease_token: str | None = None
    lease_expires: float = 0.0
    first_seq: int = 1  # the seq of entries[0]
    entries: list[Entry] = field(default_factory=list)
    # monotonic: when the last turn ended (or the chat was claimed, for a chat with no turn
    # yet: so that a claim never followed by a turn expires like any idle chat)
    ended_at: float | None = None
    owner: str | None = None
    message_ids: list[str] = field(default_factory=list)
    changed: Signal = field(default_factory=Signal)

    def leased(self, now: float) -> bool:
        return self.lease_token is not None and self.lease_expires > now

    def notify(self) -> None:
        self.changed.fire()


@dataclass(eq=False)
class _Principal:
    """What one principal holds: admitted turns (chat id → held until (monotonic), and
    the chat's fence then), the
    times of its recent admissions, its chats. Each is bounded by its quota."""

    turns: dict[str, tuple[float, int]] = field(default_factory=dict)
    admitted: deque[float] = field(default_factory=deque)
    window: float = 0.0
    chats: set[str] = field(default_factory=set)


class MemoryStore(Store):
    """Every chat's log in this process's memory.

    ``max_events`` bounds each chat's log (the oldest entries are trimmed);
    ``keep_seconds`` is how long a chat's entries stay after its last turn
    ended, ``chat_seconds`` how long its record (worker id, ids) stays.
    """

    def __init__(
        self,
        *,
        max_events: int = MAX_EVENTS,
        keep_seconds: float = KEEP_SECONDS,
        chat_seconds: float = CHAT_SECONDS,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self.keep_seconds = keep_seconds
        self.chat_seconds = max(chat_seconds, keep_seconds)
        self._chats: dict[str, _Chat] = {}
        self._principals: dict[str, _Principal] = {}
        self._swept = time.monotonic()

    def __repr__(self) -> str:
        return f"MemoryStore(chats={len(self._chats)}, max_events={self.max_events})"

    # -- chats ------------------------------------------------------------

    def _get(self, chat_id: str) -> _Chat | None:
        now = time.monotonic()
        if now - self._swept > min(_SWEEP_SECONDS, self.keep_seconds):
            self._sweep(now)
        return self._chats.get(chat_id)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for chat_id, chat in list(self._chats.items()):
            if chat.active or chat.ended_at is None:
                continue
            idle = now - chat.ended_at
            if idle >= self.chat_seconds:
                del self._chats[chat_id]
            elif idle >= self.keep_seconds and chat.entries:
                chat.first_seq = chat.last_seq + 1
                chat.entries = []
        # Principals with nothing that still counts are forgotten, so that their number
        # stays that of the principals seen lately.
        for principal, mine in list(self._principals.items()):
            if mine.admitted and mine.admitted[-1] > now - mine.window:
                continue
            if any(self._running(c, principal, held, now) for c, held in mine.turns.items()):
                continue
            if any(c in self._chats for c in mine.chats):
                continue
            del self._principals[principal]

    def _info(self, chat: _Chat) -> ChatInfo:
        return ChatInfo(
            chat_id=chat.chat_id,
            worker_id=chat.worker_id,
            active=chat.active,
            turn_start=chat.turn_start,
            last_seq=chat.last_seq,
            last_upstream_id=chat.last_upstream_id,
            status=chat.status,
            producer=chat.producer,
            leased=chat.leased(time.monotonic()),
            error=chat.error,
            updated_at=chat.updated_at,
            owner=chat.owner,
        )

    async def chat(self, chat_id: str) -> ChatInfo | None:
        chat = self._get(chat_id)
        return None if chat is None else self._info(chat)

    async def fleet(self) -> list[ChatInfo]:
        active = [self._info(c) for c in self._chats.values() if c.active]
        active.sort(key=lambda info: info.updated_at or 0.0, reverse=True)
        return active

    # -- owners and limits ------------------------------------------------------

    async def owner(self, chat_id: str) -> str | None:
        chat = self._get(chat_id)
        return None if chat is None else chat.owner

    def _running(self, chat_id: str, principal: str, held: tuple[float, int], now: float) -> bool:
        """Does the principal's admitted turn of this chat still count?"""
        chat = self._chats.get(chat_id)
        if chat is None or chat.owner != principal:
            return False
        # The lease, not ``active``: a turn whose producer died and that nobody reads
        # stays active for ever, and must not hold its principal's slot for ever.
        if chat.active and chat.leased(now):
            return True
        # Admitted, not begun yet (no lease given since: the fence is as it was).
        held_until, fence = held
        return held_until > now and chat.fence == fence

    async def admit_turn(self, chat_id: str, principal: str, quota: Quota) -> Admission:
        check_principal(principal)
        # One synchronous step, like a Redis script: no await until it is decided.
        chat = self._get(chat_id)
        if chat is not None and chat.owner != principal:
            return Admission("owner")
        now = time.monotonic()
        mine = self._principals.get(principal) or _Principal()
        if chat is None and quota.chats is not None:
            mine.chats = {
                c
                for c in mine.chats
                if (kept := self._chats.get(c)) is not None and kept.owner == principal
            }
            if len(mine.chats) >= quota.chats:
                idle = [
                    self.chat_seconds - (now - kept.ended_at)
                    for c in mine.chats
                    if (kept := self._chats[c]).ended_at is not None
                ]
                return Admission("chats", max(min(idle, default=quota.window), 1.0))
        if quota.turns is not None:
            mine.turns = {
                c: held for c, held in mine.turns.items() if self._running(c, principal, held, now)
            }
            if len(mine.turns.keys() - {chat_id}) >= quota.turns:
                return Admission("turns", _BUSY_RETRY)
        if quota.rate is not None:
            while mine.admitted and mine.admitted[0] <= now - quota.window:
                mine.admitted.popleft()
            if len(mine.admitted) >= quota.rate:
                return Admission("rate", max(mine.admitted[0] + quota.window - now, 1.0))
        # Admitted: count it all now.
        new_chat = chat is None
        if chat is None:
            chat = self._chats[chat_id] = _Chat(chat_id, owner=principal, ended_at=now)
        if quota.chats is not None:
            mine.chats.add(chat_id)
        if quota.turns is not None:
            mine.turns[chat_id] = (now + quota.hold, chat.fence)
        if quota.rate is not None:
            mine.admitted.append(now)
            mine.window = quota.window
        self._principals[principal] = mine
        return Admission(new_chat=new_chat)

    async def drop_admission(self, chat_id: str, principal: str) -> None:
        mine = self._principals.get(principal)
        if mine is not None and chat_id in mine.turns:
            mine.turns[chat_id] = (0.0, 0)  # counts on only while the chat's turn runs

    # -- producing ----------------------------------------------------------

    def _lease(self, chat: _Chat, holder: str, ttl: float, new_turn: bool) -> Lease:
        chat.fence += 1
        token = f"{chat.fence} {secrets.token_hex(8)}"
        chat.lease_token = token
        chat.lease_expires = time.monotonic() + ttl
        chat.producer = holder
        return Lease(
            chat_id=chat.chat_id,
            token=token,
            fence=chat.fence,
            holder=holder,
            ttl=ttl,
            last_seq=chat.last_seq,
            last_upstream_id=chat.last_upstream_id,
            worker_id=chat.worker_id,
            turn_start=chat.turn_start,
            new_turn=new_turn,
        )

    async def begin_turn(self, chat_id: str, *, holder: str, ttl: float) -> Lease:
        chat = self._get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _Chat(chat_id)
        if chat.active:
            raise ChatBusyError(f"chat {chat_id!r} has a turn running")
        chat.active, chat.status, chat.error, chat.ended_at = True, "pending", None, None
        chat.turn_start = chat.last_seq + 1
        chat.updated_at = time.time()
        lease = self._lease(chat, holder, ttl, True)
        chat.notify()
        return lease

    async def take_over(self, chat_id: str, *, holder: str, ttl: float) -> Lease | None:
        chat = self._get(chat_id)
        if chat is None or not chat.active or chat.leased(time.monotonic()):
            return None
        return self._lease(chat, holder, ttl, False)

    def _fenced(self, lease: Lease) -> _Chat:
        """The chat, if ``lease`` still holds it; a lapsed lease nobody took is taken back."""
        chat = self._chats.get(lease.chat_id)
        now = time.monotonic()
        if chat is None or chat.fence != lease.fence or chat.lease_token != lease.token:
            raise LeaseLostError(f"the producer lease of chat {lease.chat_id!r} was taken")
        chat.lease_expires = max(chat.lease_expires, now + lease.ttl)
        return chat

    async def set_worker(self, lease: Lease, worker_id: str) -> None:
        chat = self._fenced(lease)
        chat.worker_id = lease.worker_id = worker_id

    async def append(self, lease: Lease, entries: Sequence[NewEntry]) -> None:
        chat = self._fenced(lease)
        if not entries:
            return
        first = lease.last_seq + 1
        if chat.last_seq >= first + len(entries) - 1:
            lease.last_seq = chat.last_seq  # applied already: a retry (as in Redis)
            return
        if chat.last_seq != first - 1:
            raise LeaseLostError(
                f"chat {lease.chat_id!r}: the log is not where this producer left it"
            )
        seq = chat.last_seq
        log = chat.entries
        upstream_id = chat.last_upstream_id
        for new in entries:
            seq += 1
            log.append(Entry(seq, new.data, new.upstream_id, new.snapshot))
            if new.upstream_id is not None:
                upstream_id = new.upstream_id
        chat.last_seq = lease.last_seq = seq
        chat.last_upstream_id = lease.last_upstream_id = upstream_id
        chat.status = "running"
        chat.updated_at = time.time()
        excess = len(log) - self.max_events
        if excess > self.max_events // 4:
            # Trim in steps, so that appending stays amortised O(1).
            del log[:excess]
            chat.first_seq += excess
        chat.notify()

    async def renew(self, lease: Lease) -> None:
        self._fenced(lease)

    async def finish(self, lease: Lease, error: str | None = None) -> None:
        chat = self._chats.get(lease.chat_id)
        if chat is not None and not chat.active and chat.fence == lease.fence:
            return  # finished already: a retry
        chat = self._fenced(lease)
        chat.last_seq = lease.last_seq = chat.last_seq + 1
        chat.entries.append(Entry(chat.last_seq, end=True, error=error))
        chat.active = False
        chat.status = "failed" if error is not None else "completed"
        chat.error = error
        chat.lease_token = None
        chat.updated_at = time.time()
        chat.ended_at = time.monotonic()
        chat.notify()

    async def release(self, lease: Lease) -> None:
        chat = self._chats.get(lease.chat_id)
        if chat is not None and chat.lease_token == lease.token:
            chat.lease_token = None
            chat.notify()  # readers waiting on it take over now, not at their next check

    # -- reading -------------------------------------------------------------

    async def set_message_id(self, lease: Lease, message_id: str) -> None:
        chat = self._fenced(lease)
        if len(chat.message_ids) < 10_000:  # bounded like the log: one per question
            chat.message_ids.append(message_id)

    async def message_ids(self, chat_id: str) -> list[str]:
        chat = self._get(chat_id)
        return [] if chat is None else list(chat.message_ids)

    async def read(self, chat_id: str, after: int, limit: int) -> list[Entry]:
        return self.read_ready(chat_id, after, limit)

    def read_ready(self, chat_id: str, after: int, limit: int) -> list[Entry]:
        chat = self._get(chat_id)
        if chat is None:
            return []
        start = after + 1 - chat.first_seq
        if start < 0:
            raise EntriesGoneError(
                f"chat {chat_id!r}: the entries after {after} are no longer kept "
                f"(the oldest kept is {chat.first_seq})"
            )
        return chat.entries[start : start + limit]

    async def wait(self, chat_id: str, after: int, timeout: float) -> bool:
        chat = self._get(chat_id)
        if chat is None:
            await asyncio.sleep(timeout)
            return False
        if chat.last_seq > after:
            return True
        await chat.changed.wait(timeout)
        return chat.last_seq > after
