"""The fleet view: every turn the relays sharing a store are producing, as a watch's items.

:class:`FleetWatch` reads what the relay processes store: it polls
``store.fleet()`` for the turns running now (in any process, on any machine
sharing the Redis), reads each one's log from its first entry, and folds the
events into a Worker per worker. It needs no Handinger API key and costs the
API nothing: it reads the store only, never a worker's stream, and never
takes a producer's lease. ``handinger-stream watch --redis URL`` shows it.

>>> async def follow(store):  # doctest: +SKIP
...     async with FleetWatch(store, until_idle=True) as fleet:
...         async for item in fleet.events(ends=True):
...             print(item.worker_id, type(item.event).__name__, item.error)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

import anyio

from ..client.watch import LiveEvent, SnapshotsView, WatchEvent, task_of
from ..errors import HandingerError, IncompleteStreamError
from ..protocol.reducer import WorkerState
from ..protocol.retry import RetryPolicy
from ..types.events import Event
from ..types.worker import Worker
from .errors import StoreUnavailableError
from .store import ChatInfo, Store

__all__ = ["FleetWatch"]

_READ = 1024  # entries per store read


class _Turn:
    """One chat being followed: where its log was read to, and its worker's fold."""

    __slots__ = ("after", "chat_id", "ended", "id", "state", "task_id", "turn_start")

    def __init__(self, info: ChatInfo, worker_id: str) -> None:
        self.chat_id = info.chat_id
        self.id = worker_id
        self.task_id: str | None = None  # a relay on a worker template: the chat's task
        self.state = WorkerState(worker_id)
        self.follow(info)  # sets turn_start, after (the seq of the last entry read), ended

    def follow(self, info: ChatInfo) -> None:
        """Read the chat's running turn from its first entry (a later turn: on the same fold)."""
        self.turn_start = info.turn_start
        self.after = info.turn_start - 1
        self.ended = False

    @property
    def snapshot(self) -> Worker:
        """Its worker, folded through the last item handed out."""
        return self.state.snapshot()


class FleetWatch:
    """The turns every relay on ``store`` is producing, as :class:`WatchEvent` items.

    Iterate :meth:`events` (with ``ends=True``, one more item per turn at its
    end) inside ``async with``. A turn is seen from its first event, folded
    into its worker's snapshot (``workers``); a turn the relay could not
    finish ends with an :class:`IncompleteStreamError` item, as a lost stream
    does in a watch. ``interval``: seconds between two looks at the store.
    ``until_idle``: end once no turn is running (else, run until cancelled).
    ``patience``: seconds the store may stay unreachable before the
    :class:`StoreUnavailableError` is raised (at once when entering).
    ``keep``: how many ended workers ``workers`` keeps (the oldest ended are
    dropped first), so a view left running for weeks stays the same size; a
    dropped worker seen again is folded from its new turn.

    Relays on a worker template (``Relay(worker_id=...)``) run every chat as
    a task of one worker: their items carry the chat's ``task_id`` (read from
    its events), and ``tasks`` has each chat's Worker by task id.
    """

    def __init__(
        self,
        store: Store,
        *,
        interval: float = 0.25,
        until_idle: bool = False,
        patience: float = 30.0,
        keep: int = 10_000,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        if keep < 0:
            raise ValueError("keep must be 0 or more")
        self.keep = keep
        self._ended: dict[str, None] = {}  # chat ids of ended turns, oldest end first
        self.store = store
        self.interval = interval
        self.until_idle = until_idle
        self.patience = patience
        self._chats: dict[str, _Turn] = {}  # by chat id
        self._by_worker: dict[str, _Turn] = {}
        self._by_task: dict[str, _Turn] = {}
        # What was read and not handed out yet: events, and ends (with why, if lost).
        self._items: deque[tuple[_Turn, Event | None, str | None]] = deque()
        self._fleet: list[ChatInfo] | None = None  # what the last look found, until read

    @property
    def workers(self) -> Mapping[str, Worker]:
        """Every worker seen, by id: its snapshot, through the last item handed out."""
        return SnapshotsView(self._by_worker)

    @property
    def tasks(self) -> Mapping[str, Worker]:
        """Every task seen (chats of relays on a worker template), by id: its snapshot."""
        return SnapshotsView(self._by_task)

    @property
    def waiting(self) -> list[str]:
        """Always empty: nothing waits for a connection (a watch's ``waiting``)."""
        return []

    async def __aenter__(self) -> FleetWatch:
        self._fleet = await self.store.fleet()  # unreachable: say so now
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._items.clear()

    def events(self, *, ends: bool = False) -> AsyncIterator[WatchEvent]:
        """The events of every turn, in the order they were stored per turn; with ``ends``,
        an item with ``event=None`` after each turn's last."""
        return _Events(self, ends)

    async def _next(self, ends: bool) -> WatchEvent | None:
        items = self._items
        while True:
            while items:
                turn, event, error = items.popleft()
                if event is not None:
                    turn.state.apply(event)  # folded as it is handed out
                    task_id = task_of(event)
                    if task_id is not None and task_id != turn.task_id:
                        turn.task_id = task_id
                        self._by_task[task_id] = turn
                    return LiveEvent(turn, event, task_id=turn.task_id)
                self._ended.pop(turn.chat_id, None)
                self._ended[turn.chat_id] = None  # handed out whole: may be dropped
                if error is not None:  # lost: its one item, as a watch's lost stream
                    lost = IncompleteStreamError(
                        f"chat {turn.chat_id!r}: the relay could not finish the turn: {error}",
                        worker=turn.snapshot,
                    )
                    return LiveEvent(turn, None, lost, task_id=turn.task_id)
                if ends:
                    return LiveEvent(turn, None, task_id=turn.task_id)
            if self._fleet is None:
                await anyio.sleep(self.interval)
                self._fleet = await self._patiently()
            fleet, self._fleet = self._fleet, None
            await self._look(fleet)
            if not items and self.until_idle and not fleet and not self._following():
                return None

    def _drop_ended(self, running: Mapping[str, ChatInfo]) -> None:
        """Forget the oldest ended workers beyond ``keep``.

        Only those the store no longer lists as running: a listing that still
        shows a turn whose end was read would otherwise start it again, twice.
        """
        excess = len(self._ended) - self.keep
        for chat_id in list(self._ended):
            if excess <= 0:
                break
            if chat_id in running:
                continue
            excess -= 1
            del self._ended[chat_id]
            turn = self._chats.pop(chat_id)
            if self._by_worker.get(turn.id) is turn:
                del self._by_worker[turn.id]
            if turn.task_id is not None and self._by_task.get(turn.task_id) is turn:
                del self._by_task[turn.task_id]

    def _following(self) -> bool:
        return any(not turn.ended for turn in self._chats.values())

    async def _patiently(self) -> list[ChatInfo]:
        """The store's fleet, looked at every ``interval`` while the store is unavailable,
        until it has been so for ``patience`` seconds."""
        interval = self.interval
        return await RetryPolicy(initial_delay=interval, max_delay=interval).call(
            self.store.fleet,
            retries=None,
            retryable=lambda exc: isinstance(exc, StoreUnavailableError),
            # The loop gives up rather than wait past its deadline: an interval past
            # ``patience``, so the store is given all of ``patience`` to come back.
            deadline=time.monotonic() + self.patience + interval,
        )

    async def _look(self, fleet: list[ChatInfo]) -> None:
        """Follow the turns that started, and read what was stored since the last look."""
        running = {info.chat_id: info for info in fleet}
        if len(self._ended) > self.keep:
            self._drop_ended(running)
        for info in fleet:
            if not info.worker_id:
                continue  # its worker is not started yet: at a later look
            turn = self._chats.get(info.chat_id)
            if turn is None:
                turn = self._chats[info.chat_id] = _Turn(info, info.worker_id)
                self._by_worker[info.worker_id] = turn
            elif turn.ended and info.turn_start > turn.turn_start:
                self._ended.pop(info.chat_id, None)
                turn.follow(info)
        for turn in self._chats.values():
            if turn.ended:
                continue
            now = running.get(turn.chat_id)
            if now is None or now.last_seq > turn.after:  # news, or its end
                await self._read(turn, ended=now is None)

    async def _read(self, turn: _Turn, *, ended: bool) -> None:
        """Queue what the turn's log has after ``turn.after``, up to its end marker."""
        try:
            while True:
                entries = await self.store.read(turn.chat_id, turn.after, _READ)
                for entry in entries:
                    turn.after = entry.seq
                    if entry.end:
                        self._end(turn, entry.error)
                        return
                    self._items.append((turn, entry.event(), None))
                if len(entries) < _READ:
                    break
        except StoreUnavailableError:
            raise
        except HandingerError as exc:  # trimmed or expired, or an entry that does not decode
            self._end(turn, str(exc))
            return
        if ended and not entries:
            # Gone from the fleet with no end marker to read: the store no longer has it.
            self._end(turn, "the turn's end was not stored")

    def _end(self, turn: _Turn, error: str | None) -> None:
        turn.ended = True
        self._items.append((turn, None, error))


class _Events:
    """``fleet.events(ends=...)``."""

    __slots__ = ("_ends", "_fleet")

    def __init__(self, fleet: FleetWatch, ends: bool) -> None:
        self._fleet = fleet
        self._ends = ends

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> WatchEvent:
        item = await self._fleet._next(self._ends)
        if item is None:
            raise StopAsyncIteration
        return item
