"""Relay: one upstream read per turn, any number of readers, over a store.

A turn's producer (the holder of the chat's lease) reads the worker's
stream once and appends every event to the store; readers pull from the
store at their own pace: history first, then live. A reader that finds the
turn running with no producer (the process that was producing died, or
gave up) takes the lease over and resumes the worker's stream from the last
event stored, by ``Last-Event-ID``.

Today's API (``Relay(client, worker_id=TEMPLATE)``): every chat runs on that
worker template, as a task whose id the relay derives from the chat's
(:func:`task_id_for`), each user message a turn of it. The template's replay
stream plays all of its tasks' turns; a producer keeps only its own turn's
events (:class:`_TaskTurn`), so a take-over resumes it there too.

>>> async def main(client):  # doctest: +SKIP
...     relay = Relay(client, MemoryStore())
...     turn = await relay.send("chat-1", "What's the weather in Barcelona?")
...     async for entry in relay.read("chat-1", after=turn.after):
...         print(entry.seq, entry.data)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import msgspec

from ..client.async_client import AsyncHandinger
from ..client.stream import WorkerStream
from ..client.watch import task_of
from ..errors import (
    APIConnectionError,
    APIStatusError,
    HandingerError,
    InvalidRequestError,
    NotFoundError,
)
from ..protocol.cursor import ReplayCursor
from ..protocol.reducer import WorkerState
from ..protocol.retry import RetryPolicy
from ..protocol.wire import encode_event
from ..types.events import Event, StartEvent, WorkerSnapshotEvent
from ..types.worker import Budget
from ._signal import joined, retrieved
from .access import ANONYMOUS
from .errors import EntriesGoneError, LeaseLostError, StoreUnavailableError
from .memory import MemoryStore
from .store import ChatInfo, Entry, Lease, NewEntry, Store

__all__ = ["Reader", "Relay", "Turn", "task_id_for"]

log = logging.getLogger("handinger_stream.relay")

_MAX_LOOKS = 10_000  # chats whose last look a relay keeps (then it forgets them all)
_BATCH = 256  # entries per store read, and at most per append
_HISTORIES = 1024  # chats' folded histories kept per relay
# ...and their size: a history is as long as its chat, so a count alone bounds nothing.
_HISTORIES_BYTES = 64 << 20
_HISTORY_BYTES = 4 << 20  # a longer one is read afresh each time, never kept
# Store writes while the store is unavailable: soon, then at most every second.
_STORE_RETRY = RetryPolicy(initial_delay=0.05, max_delay=1.0)


# What an end marker says when the upstream failed: stored, and sent to every reader.
_STREAM_FAILED = "the worker's stream failed"
_RELAY_FAILED = "the relay failed while relaying this turn"


@dataclass(frozen=True, slots=True)
class Turn:
    """A turn the relay started: read it with ``relay.read(chat_id, after=turn.after)``."""

    chat_id: str
    worker_id: str
    after: int
    """The seq just before the turn's first entry."""


def task_id_for(worker_id: str, chat_id: str, owner: str | None = None) -> str:
    """The task a chat is, on a worker template: a digest of both ids, and of the chat's
    owner when it has one.

    A browser chooses chat ids; hashing them means no chat id can name a task
    that is not that chat's own (an e-mail's, another template's), and every
    relay process sharing a store finds the same task for a chat. The owner is
    in the digest so that a chat id reclaimed by another principal after the
    chat's record expired names another task, never the first owner's.

    >>> task_id_for("wrk_1", "chat-1")
    'chat_e33cc3f08b959a2a00733e1550e77b95'
    >>> task_id_for("wrk_1", "chat-1", "alice") != task_id_for("wrk_1", "chat-1", "bob")
    True
    """
    if owner is None:
        digest = hashlib.sha256(f"{worker_id}\n{chat_id}".encode()).hexdigest()
    else:
        digest = hashlib.sha256(f"{worker_id}\n{chat_id}\n{owner}".encode()).hexdigest()
    return f"chat_{digest[:32]}"


class _TaskTurn:
    """Which events of a template's stream are one task's turn, and where that turn ends.

    The template's stream plays its tasks' turns one after another, each
    opened by a snapshot and a ``start`` naming its task. :meth:`admit`
    answers ``True`` (the turn's), ``False`` (another's: skipped) or ``None``
    (the turn is over: another task's, or a later turn of this task, began).
    ``skip``: turns of this task to pass first (a replay from the start);
    ``inside``: the stream starts inside the turn (after its last event stored).
    """

    __slots__ = ("admitted", "mine", "skip", "started", "task_id")

    def __init__(self, task_id: str, *, skip: int = 0, inside: bool = True) -> None:
        self.task_id = task_id
        self.skip = skip
        self.mine = inside
        self.admitted = inside
        self.started = False

    def admit(self, event: Event) -> bool | None:
        task_id = task_of(event)
        if task_id is not None and task_id != self.task_id:
            if self.admitted:
                return None
            self.mine = False
            return False
        if task_id is not None:
            if self.skip:  # an earlier turn of this task, replayed
                self.skip -= type(event) is StartEvent
                self.mine = False
                return False
            if type(event) is StartEvent:
                if self.started:
                    return None
                self.started = True
            self.mine = True
        if self.mine:
            self.admitted = True
        return self.mine


@dataclass(frozen=True, slots=True)
class _UpstreamEnd:
    """Why the upstream read stopped: the stream ended (``error``: how it failed) or
    the lease was ``lost``. The producer then ends the turn, or stops."""

    error: str | None
    lost: bool = False


class Relay:
    """Relays workers' streams through a store to any number of readers.

    ``store`` defaults to a :class:`MemoryStore`. ``lease_seconds`` is how
    long a producer's lease lasts without renewal: after a producer dies,
    its turn resumes (at the next reader) within about that long. ``name``
    identifies this process as a producer (in :meth:`fleet`). Neither the
    client nor the store is closed by the relay.

    ``worker_id`` (today's API): a worker template every chat runs on, each
    chat a task (its id from :func:`task_id_for`), each message a turn of it;
    without it, each chat is a worker of the seed's generation.

    >>> relay = Relay(AsyncHandinger(api_key="k"), lease_seconds=5)
    >>> relay.lease_seconds
    5
    """

    def __init__(
        self,
        client: AsyncHandinger,
        store: Store | None = None,
        *,
        lease_seconds: float = 10.0,
        store_patience: float = 30.0,
        name: str | None = None,
        worker_id: str | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if worker_id is not None and (not isinstance(worker_id, str) or not worker_id):
            raise InvalidRequestError("worker_id must be a worker template's id")
        self.worker_id = worker_id
        self.client = client
        self.store: Store = store if store is not None else MemoryStore()
        self.lease_seconds = lease_seconds
        self.store_patience = store_patience
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._producers: dict[str, asyncio.Task[None]] = {}
        self._taking_over: dict[str, asyncio.Future[None]] = {}
        self._looks: dict[str, tuple[float, asyncio.Future[ChatInfo | None]]] = {}
        # Histories by (chat, last seq, active): a page's reload costs neither a fold nor
        # a request of the API while the chat has not changed. Bounded, oldest out first.
        # chat key -> (messages, their JSON size)
        self._histories: dict[tuple[str, str | None, str, int, bool], tuple[list[Any], int]] = {}
        self._history_bytes = 0
        self._closed = False

    def __repr__(self) -> str:
        on = f", worker_id={self.worker_id!r}" if self.worker_id is not None else ""
        return (
            f"Relay(store={self.store!r}, name={self.name!r}{on}, producing={len(self._producers)})"
        )

    def task_id(self, chat_id: str, owner: str | None = None) -> str:
        """The task a chat is on the relay's worker template (with ``worker_id``), for the
        chat's owner (``None``: a chat started without access control)."""
        if self.worker_id is None:
            raise InvalidRequestError("this relay runs no worker template: its chats are workers")
        # Without authentication every chat is ANONYMOUS's: one principal, nobody to keep
        # apart, and the task ids stay those of a relay without access control.
        return task_id_for(self.worker_id, chat_id, None if owner == ANONYMOUS else owner)

    async def _chat_task_id(self, chat_id: str) -> str:
        """The chat's task, for the owner the store keeps."""
        info = await self.store.chat(chat_id)
        return self.task_id(chat_id, info.owner if info is not None else None)

    @property
    def check_interval(self) -> float:
        """How often a waiting reader checks that someone is producing its turn."""
        return max(self.lease_seconds / 2, 0.05)

    # -- starting turns ------------------------------------------------------

    async def send(
        self,
        chat_id: str,
        input: str,
        *,
        budget: Budget | None = None,
        owner: str | None = None,
        message_id: str | None = None,
    ) -> Turn:
        """Start a turn of the chat: a new worker for a new chat, else a continue of its worker;
        with ``worker_id``, a turn of the chat's task on that template.

        ``owner``: the principal the chat belongs to (access control admitted it), part
        of its task's id. ``message_id``: the sender's id for its message, which the
        chat's history gives the question of this turn.

        Returns once the worker answered (so its id is known); the events are
        relayed in the background, whoever reads them and whenever.
        Raises :class:`ChatBusyError` while the chat has a turn running, and
        the client's errors when the worker could not be started.
        """
        check_chat_id(chat_id)
        if not isinstance(input, str) or not input.strip():
            raise InvalidRequestError("input must be a non-empty string")
        lease = await self.store.begin_turn(chat_id, holder=self.name, ttl=self.lease_seconds)
        turn: _TaskTurn | None = None
        try:
            if self.worker_id is not None:
                task_id = self.task_id(chat_id, owner)
                stream = await self.client.tasks.create(
                    input=input,
                    worker_id=self.worker_id,
                    task_id=task_id,
                    budget=budget,
                    stream=True,
                )
                turn = _TaskTurn(task_id)
                if stream.worker_id and stream.worker_id != lease.worker_id:
                    await self.store.set_worker(lease, stream.worker_id)
            elif lease.worker_id:
                stream = await self.client.workers.continue_(
                    lease.worker_id, input=input, budget=budget, stream=True
                )
            else:
                stream = await self.client.workers.create(input=input, budget=budget, stream=True)
                if stream.worker_id:
                    await self.store.set_worker(lease, stream.worker_id)
            # Only a turn the worker took has a question in its history: one id per such turn.
            await self.store.set_message_id(lease, message_id or "")
        except BaseException as exc:
            # The detail (the API's reply, perhaps echoing a key) is the log's; the end
            # marker, which every reader of the chat is sent, keeps the public sentence.
            log.warning("chat %s: the worker could not be started: %r", chat_id, exc)
            with anyio.CancelScope(shield=True):
                await self._finish_quietly(lease, "the worker could not be started")
            raise
        self._spawn(lease, stream, turn=turn)
        return Turn(chat_id, stream.worker_id, lease.turn_start - 1)

    async def attach(self, stream: WorkerStream, chat_id: str | None = None) -> Turn:
        """Relay a stream you opened (a create, continue or replay) as a new turn.

        ``chat_id`` defaults to the worker's id.
        """
        chat_id = chat_id or stream.worker_id
        check_chat_id(chat_id)
        lease = await self.store.begin_turn(chat_id, holder=self.name, ttl=self.lease_seconds)
        try:
            if stream.worker_id and stream.worker_id != lease.worker_id:
                await self.store.set_worker(lease, stream.worker_id)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._finish_quietly(lease, "the stream could not be attached")
            raise
        self._spawn(lease, stream)
        return Turn(chat_id, stream.worker_id, lease.turn_start - 1)

    async def join(self, chat_id: str) -> None:
        """Wait until this process is no longer producing the chat's turn."""
        task = self._producers.get(chat_id)
        if task is not None:
            await asyncio.shield(task)

    # -- reading -------------------------------------------------------------

    def read(
        self, chat_id: str, *, after: int | None = None, info: ChatInfo | None = None
    ) -> Reader:
        """The chat's turn as it is stored and as it grows: an async iterator of entries.

        ``after=None`` starts at the first entry of the chat's current (or
        last) turn; ``after=n`` right after the entry with seq ``n`` (what a
        ``Last-Event-ID`` says). Iteration ends after the turn's end marker,
        which is yielded (``entry.end``). ``info``: what :meth:`chat` just said
        of the chat, so that the reader starts from it rather than ask again.
        """
        check_chat_id(chat_id)
        if after is not None and after < 0:
            raise InvalidRequestError("after must be a non-negative seq")
        if info is not None and info.chat_id != chat_id:
            raise InvalidRequestError("info must be the chat's own")
        return Reader(self, chat_id, after, info)

    async def chat(self, chat_id: str) -> ChatInfo | None:
        """What the store knows of the chat (``None``: never seen, or expired)."""
        check_chat_id(chat_id)
        return await self.store.chat(chat_id)

    async def fleet(self) -> list[ChatInfo]:
        """Every turn running in any relay process sharing this store (see :meth:`Store.fleet`)."""
        return await self.store.fleet()

    async def messages(self, chat_id: str) -> list[Any]:
        """The chat's finished messages, as the AI SDK's ``useChat`` takes them.

        Folded from the store: the last turn's opening snapshot (the whole Worker, as
        the turn began) and its chunks, less the answer of a turn still running (a
        resumed stream rebuilds that one). Only when the store no longer has that turn
        (its entries expired) or it opened without a snapshot, or for a template's task,
        is the API asked, once per chat and change: a history read must not cost the
        account a request each time a page loads (but for a history over 4 MiB, too long
        to keep: it is read afresh each time).
        """
        info = await self.store.chat(chat_id)
        if info is None or not info.worker_id:
            return []
        # The owner and the worker name the chat as much as its id does: an id reclaimed
        # by another principal (its record expired, a Redis without persistence) must
        # never be served the first owner's messages from this cache.
        key = (chat_id, info.owner, info.worker_id, info.last_seq, info.active)
        kept = self._histories.get(key)
        messages = None if kept is None else kept[0]
        if messages is None:
            messages = None if self.worker_id is not None else await self._folded(chat_id, info)
            if messages is None:
                messages = await self._fetched(chat_id, info)
            self._keep_history(key, messages)
        return _with_sender_ids(messages, await self.store.message_ids(chat_id))

    def _keep_history(
        self, key: tuple[str, str | None, str, int, bool], messages: list[Any]
    ) -> None:
        """Keep a chat's history for the next page load, within the count and bytes bounds
        (the oldest kept dropped first)."""
        kept = self._histories
        # Two page loads of one chat may both have missed: the later one replaces it.
        replaced = kept.pop(key, None)
        if replaced is not None:
            self._history_bytes -= replaced[1]
        size = len(msgspec.json.encode(messages))
        if size > _HISTORY_BYTES:
            return
        while kept and (len(kept) >= _HISTORIES or self._history_bytes + size > _HISTORIES_BYTES):
            self._history_bytes -= kept.pop(next(iter(kept)))[1]
        kept[key] = (messages, size)
        self._history_bytes += size

    async def _folded(self, chat_id: str, info: ChatInfo) -> list[Any] | None:
        """The chat's messages folded from its last turn's entries; ``None`` when the store
        cannot tell (the turn's entries are gone, or it did not open with a snapshot)."""
        assert info.worker_id is not None
        after = info.turn_start - 1
        state = WorkerState(info.worker_id)
        first = True
        while True:
            try:
                batch = await self.store.read(chat_id, after, _BATCH)
            except EntriesGoneError:
                return None
            if first and (not batch or not batch[0].snapshot):
                return None
            for entry in batch:
                if entry.end:
                    batch = []
                    break
                if info.active and not entry.snapshot and not first:
                    batch = []  # a running turn: its opening snapshot says all that is done
                    break
                first = False
                event = entry.event()
                if event is not None:
                    state.apply(event)
            if not batch or len(batch) < _BATCH:
                break
            after = batch[-1].seq
        messages = list(state.snapshot().messages)
        if info.active:
            # Less the running turn's answer: up to the last question.
            users = [
                i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"
            ]
            messages = messages[: users[-1] + 1] if users else []
        return messages

    async def _fetched(self, chat_id: str, info: ChatInfo) -> list[Any]:
        """The chat's messages from the API (a worker's, or a template task's turns)."""
        assert info.worker_id is not None
        if self.worker_id is not None:
            return await self._task_messages(chat_id, info)
        worker = await self.client.workers.retrieve(info.worker_id)
        messages = list(worker.messages)
        if info.active:
            running = await self._turn_message_id(chat_id, info)
            if running is not None:
                messages = [
                    m for m in messages if not (isinstance(m, dict) and m.get("id") == running)
                ]
        return messages

    async def _task_messages(self, chat_id: str, info: ChatInfo) -> list[Any]:
        """A task's turns as messages (a user's input, the answer's text), less the answer
        of a turn still running: the API keeps no task's messages, only its turns."""
        try:
            found = await self.client.tasks.retrieve(self.task_id(chat_id, info.owner))
        except NotFoundError:
            return []
        messages: list[Any] = []
        for i, turn in enumerate(found.turns):
            text = {"type": "text", "text": turn.input}
            messages.append({"id": f"{turn.id}-input", "role": "user", "parts": [text]})
            if info.active and i == len(found.turns) - 1:
                break
            answer = {"type": "text", "text": turn.output_text}
            messages.append({"id": turn.id, "role": "assistant", "parts": [answer]})
        return messages

    async def _turn_message_id(self, chat_id: str, info: ChatInfo) -> str | None:
        """The id of the message the running turn writes (its ``start`` chunk's), if known."""
        with contextlib.suppress(HandingerError):
            for entry in await self.store.read(chat_id, info.turn_start - 1, 32):
                if b'"start"' in entry.data:
                    event = entry.event()
                    if isinstance(event, StartEvent):
                        return event.message_id
        return None

    # -- producing -------------------------------------------------------------

    def _spawn(
        self,
        lease: Lease,
        stream: WorkerStream,
        resume: ReplayCursor | None = None,
        *,
        turn: _TaskTurn | None = None,
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._produce(lease, stream, resume, turn))
        self._producers[lease.chat_id] = task
        task.add_done_callback(lambda t: self._forget(lease.chat_id, t))

    def _forget(self, chat_id: str, task: asyncio.Task[None]) -> None:
        if self._producers.get(chat_id) is task:
            del self._producers[chat_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("relay producer of chat %s failed", chat_id, exc_info=task.exception())

    async def _look(self, chat_id: str) -> ChatInfo | None:
        """The chat's record for a quiet reader's check: one look per chat and process
        serves every reader checking within a quarter of ``check_interval`` (ten
        thousand idle readers, each asking every few seconds, were a store's whole load;
        a record that old delays a take-over by that much at most)."""
        now = time.monotonic()
        found = self._looks.get(chat_id)
        if found is None or now - found[0] > self.check_interval / 4:
            if len(self._looks) >= _MAX_LOOKS:
                self._looks.clear()
            look = asyncio.ensure_future(self.store.chat(chat_id))
            look.add_done_callback(retrieved)
            found = self._looks[chat_id] = (now, look)
        return await asyncio.shield(found[1])

    async def _take_over(self, chat_id: str) -> None:
        """Resume a turn whose producer is gone (called by readers that find it so).

        A thousand readers find it so at once: one attempt per chat and process, the
        others wait for it (each asking the store would be a thousand lease scripts).
        """
        if chat_id in self._producers or self._closed:
            return
        await joined(self._taking_over, chat_id, lambda: self._try_take_over(chat_id))

    async def _try_take_over(self, chat_id: str) -> None:
        lease = await self.store.take_over(chat_id, holder=self.name, ttl=self.lease_seconds)
        if lease is None:
            return  # someone else was quicker, or the turn is over
        log.info(
            "taking over chat %s (worker %s) after seq %d, upstream id %s",
            chat_id,
            lease.worker_id,
            lease.last_seq,
            lease.last_upstream_id,
        )
        if not lease.worker_id:
            await self._finish_quietly(
                lease, "the relay that began this turn stopped before the worker started"
            )
            return
        headers = {"last-event-id": lease.last_upstream_id} if lease.last_upstream_id else None
        turn: _TaskTurn | None = None
        try:
            if self.worker_id is not None:
                turn = await self._turn_to_resume(chat_id, lease)
            stream = await self.client.workers.retrieve(
                lease.worker_id, stream=True, extra_headers=headers
            )
        except (APIConnectionError, APIStatusError) as exc:
            if RetryPolicy().retryable(exc, idempotent=True):
                # Perhaps the API is down for a moment: the next reader tries again.
                log.warning(
                    "chat %s: could not resume worker %s: %s", chat_id, lease.worker_id, exc
                )
                with contextlib.suppress(HandingerError):
                    await self.store.release(lease)
                return
            log.warning("chat %s: the worker's stream could not be resumed: %s", chat_id, exc)
            await self._finish_quietly(lease, "the worker's stream could not be resumed")
            return
        # A server may replay what was stored already: the cursor skips the repeats.
        last = lease.last_upstream_id
        self._spawn(lease, stream, ReplayCursor.resuming_after(last) if last else None, turn=turn)

    async def _turn_to_resume(self, chat_id: str, lease: Lease) -> _TaskTurn:
        """The chat's turn in its template's stream: after the last event stored, or, with
        none stored, its task's latest turn (the earlier ones are skipped)."""
        task_id = await self._chat_task_id(chat_id)
        if lease.last_upstream_id:
            return _TaskTurn(task_id)
        found = await self.client.tasks.retrieve(task_id)
        return _TaskTurn(task_id, skip=max(len(found.turns) - 1, 0), inside=False)

    async def _produce(
        self,
        lease: Lease,
        stream: WorkerStream,
        resume: ReplayCursor | None,
        turn: _TaskTurn | None = None,
    ) -> None:
        """Read the upstream once, append in batches, end the turn; never raises."""
        queue: asyncio.Queue[NewEntry | _UpstreamEnd] = asyncio.Queue(_BATCH * 4)
        loop = asyncio.get_running_loop()
        upstream = loop.create_task(self._read_upstream(stream, queue, resume, turn))
        heartbeat = loop.create_task(self._heartbeat(lease, upstream))
        appended = lease.last_seq - (lease.turn_start - 1)
        try:
            while True:
                item = await queue.get()
                batch: list[NewEntry] = []
                while isinstance(item, NewEntry):
                    batch.append(item)
                    if len(batch) >= _BATCH or queue.empty():
                        break
                    item = queue.get_nowait()
                if batch:
                    await self._patiently(self.store.append, lease, batch)
                    appended += len(batch)
                    if not lease.worker_id and stream.worker_id:
                        await self._patiently(self.store.set_worker, lease, stream.worker_id)
                if isinstance(item, _UpstreamEnd):
                    if item.lost:
                        raise LeaseLostError(
                            f"the producer lease of chat {lease.chat_id!r} was taken"
                        )
                    error = item.error
                    if error is None and appended == 0:
                        error = "the worker sent nothing for this turn"
                    await self._patiently(self.store.finish, lease, error)
                    return
        except (LeaseLostError, StoreUnavailableError) as exc:
            # Lost: another process produces the turn now. Unavailable: the turn stays
            # active with nobody producing; once the store is back, the lease expires and
            # the next reader resumes it from the last event stored.
            log.warning("chat %s: stopped producing: %s", lease.chat_id, exc)
        except Exception:
            # Anything else is a bug or a surprise: the turn must still end (a turn left
            # active refuses every new message of the chat with 409, for good).
            log.exception("chat %s: the relay failed while producing", lease.chat_id)
            with anyio.CancelScope(shield=True):
                await self._finish_quietly(lease, _RELAY_FAILED)
        except BaseException:
            with anyio.CancelScope(shield=True):
                # Shutting down: let another process take the turn over at once.
                with contextlib.suppress(HandingerError):
                    await self.store.release(lease)
            raise
        finally:
            for task in (heartbeat, upstream):
                task.cancel()
            with anyio.CancelScope(shield=True):
                for task in (heartbeat, upstream):
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await stream.aclose()

    async def _read_upstream(
        self,
        stream: WorkerStream,
        queue: asyncio.Queue[NewEntry | _UpstreamEnd],
        resume: ReplayCursor | None,
        turn: _TaskTurn | None = None,
    ) -> None:
        try:
            async for event in stream:
                if resume is not None and not resume.admit_id(event.event_id):
                    continue
                if turn is not None:
                    admitted = turn.admit(event)
                    if admitted is None:
                        break  # the turn is over: what follows is another's
                    if not admitted:
                        continue
                await queue.put(
                    NewEntry(
                        encode_event(event), event.event_id, type(event) is WorkerSnapshotEvent
                    )
                )
        except HandingerError as exc:
            log.warning("chat stream of worker %s failed: %s", stream.worker_id, exc)
            await queue.put(_UpstreamEnd(_STREAM_FAILED))
            return
        except Exception:
            # Not one of the client's errors (a malformed field it choked on, a bug): the
            # turn ends all the same, or the producer would wait on this queue for ever.
            log.exception("the stream of worker %s failed unexpectedly", stream.worker_id)
            await queue.put(_UpstreamEnd(_STREAM_FAILED))
            return
        except asyncio.CancelledError:
            # Stopped by the heartbeat (the lease is lost) or by the producer itself.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_UpstreamEnd(None, lost=True))
            raise
        await queue.put(_UpstreamEnd(None))

    async def _heartbeat(self, lease: Lease, upstream: asyncio.Task[None]) -> None:
        while True:
            await anyio.sleep(lease.ttl / 3)
            try:
                await self.store.renew(lease)
            except LeaseLostError as exc:
                log.warning("chat %s: %s", lease.chat_id, exc)
                upstream.cancel()
                return
            except StoreUnavailableError:
                pass  # the appends wait for the store; the lease is taken back if nobody took it

    async def _patiently(self, call: Callable[..., Any], *args: Any) -> None:
        """A store write, retried while the store is unavailable (they are idempotent),
        for ``store_patience`` seconds at most."""
        await _STORE_RETRY.call(
            lambda: call(*args),
            retries=None,
            retryable=lambda exc: isinstance(exc, StoreUnavailableError),
            deadline=time.monotonic() + self.store_patience,
        )

    async def _finish_quietly(self, lease: Lease, error: str) -> None:
        try:
            await self.store.finish(lease, error)
        except Exception as exc:
            log.warning("chat %s: could not end the turn: %s", lease.chat_id, exc)

    # -- lifetime --------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop producing: leases are released, so another relay process resumes the turns.

        The workers themselves are not stopped.
        """
        self._closed = True
        tasks = list(self._producers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Relay:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Reader:
    """One reader of a chat's turn: entries from the store, history then live.

    It holds nothing between reads but its position (the seq of the last
    entry it took), so a slow reader costs the others nothing.
    """

    def __init__(
        self, relay: Relay, chat_id: str, after: int | None, info: ChatInfo | None = None
    ) -> None:
        self.relay = relay
        self.chat_id = chat_id
        self._info = info  # what the store said of the chat as the reader was made
        self.position = after if after is not None else -1
        self._after = after
        self._started = False
        self._done = False
        self._pending: list[Entry] = []
        self._taken = 0  # of _pending, by __anext__
        self._next_check = 0.0

    @property
    def done(self) -> bool:
        """True once the turn's end was delivered (or there is nothing to read)."""
        return self._done and self._taken >= len(self._pending)

    def __aiter__(self) -> Reader:
        return self

    async def __anext__(self) -> Entry:
        while self._taken >= len(self._pending):
            batch = await self.next_batch(None)
            if batch is None:
                raise StopAsyncIteration
            self._pending, self._taken = batch, 0
        entry = self._pending[self._taken]
        self._taken += 1
        return entry

    async def _start(self) -> None:
        self._started = True
        info, self._info = self._info, None
        if info is None:
            info = await self.relay.store.chat(self.chat_id)
        if self._after is None:
            self.position = info.turn_start - 1 if info is not None else 0
        if info is None or (not info.active and self.position >= info.last_seq):
            self._done = True
        elif info.active and not info.leased:
            await self.relay._take_over(self.chat_id)
        self._next_check = time.monotonic() + self.relay.check_interval

    async def next_batch(self, within: float | None) -> list[Entry] | None:
        """The next entries (the last may be the end marker); ``[]`` when ``within``
        seconds passed with none (``None``: wait as long as it takes); ``None`` once
        the turn's end was delivered."""
        if not self._started:
            await self._start()
        if self._taken < len(self._pending):
            batch = self._pending[self._taken :]
            self._pending, self._taken = [], 0
            return batch
        if self._done:
            return None
        relay = self.relay
        store = relay.store
        deadline = None if within is None else time.monotonic() + within
        while True:
            entries = store.read_ready(self.chat_id, self.position, _BATCH)
            if entries is None:
                entries = await store.read(self.chat_id, self.position, _BATCH)
            if entries:
                for i, entry in enumerate(entries):
                    if entry.end:
                        # The end of this turn: a later turn is another read.
                        del entries[i + 1 :]
                        self._done = True
                        break
                self.position = entries[-1].seq
                self._next_check = time.monotonic() + relay.check_interval
                return entries
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return []
            if now >= self._next_check:
                # Quiet for a while: is the turn still being produced?
                self._next_check = now + relay.check_interval
                info = await relay._look(self.chat_id)
                if info is None or (not info.active and self.position >= info.last_seq):
                    self._done = True
                    return None
                if info.active and not info.leased:
                    await relay._take_over(self.chat_id)
                    continue
            wait = self._next_check - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            await store.wait(self.chat_id, self.position, max(wait, 0.0))


def _with_sender_ids(messages: list[Any], ids: list[str]) -> list[Any]:
    """The k-th user message given the k-th sender's id (where one was kept), so that a
    ``Chat`` finds its own question in the history, not a copy under the worker's id."""
    if not ids:
        return messages
    out: list[Any] = []
    k = 0
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            if k < len(ids) and ids[k]:
                message = {**message, "id": ids[k]}
            k += 1
        out.append(message)
    return out


def check_chat_id(chat_id: str) -> None:
    if not isinstance(chat_id, str) or not 0 < len(chat_id) <= 256:
        raise InvalidRequestError("a chat id must be a string of 1 to 256 characters")
    if "/" in chat_id or any(ord(c) < 32 or ord(c) == 127 for c in chat_id):
        raise InvalidRequestError("a chat id must not contain '/' or control characters")
