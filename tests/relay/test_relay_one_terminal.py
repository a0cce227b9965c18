"""Exactly one terminal per relayed turn, whatever happens to the relays and to Redis.

Two relay processes share a real redis-server; a reader POSTs a chat message at
one, reads the turn over SSE and, whenever its response ends without ``[DONE]``,
resumes with ``Last-Event-ID`` at a relay still alive, as the AI SDK's transport
does. Mid-turn, after the reader got N events, one thing happens: the producing
relay is SIGKILLed (the other takes the turn over when its lease lapses), or
redis-server is restarted on the same port; or, upstream, the relay's own stream
of the worker is cut after N events and its resume refused (404, or 410).

**The rule, for a relayed turn.** The turn's events are those the store logged,
each with its id; an ``error`` chunk *without* an id is the relay saying that
this response broke (the store failed), not an event of the turn: the reader
resumes after it. Over every response the reader read, the turn's ``finish``,
``error`` and ``abort`` chunks (an error then its finish counted once), plus one
when the reader had to give up with a ``410 Gone``, are exactly 1; the ids only
go up; and a turn read to its end is, event for event, the emulator's own replay
of the worker, and folds to the Worker the emulator stores.

Redis is restarted **with** persistence (an append-only file synced on every
write, as ``tests/relay_helpers.py`` runs it, and as relay.md says to run Redis
for a restart to keep chats): the chat's log survives and the turn must go on.
A restart **without** persistence forgets the turn; the reader is then told so
(``410 Gone``: a resume with a Last-Event-ID of a chat the relay cannot read).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from handinger_stream import (
    AbortEvent,
    AsyncHandinger,
    ErrorEvent,
    FinishEvent,
    Worker,
    fold,
)
from handinger_stream.emulator import Emulator
from handinger_stream.protocol.sse import ServerSentEvent, SSEDecoder
from handinger_stream.protocol.wire import decode_event
from handinger_stream.types.events import Event
from tests.helpers.emulators import emulator_fixture
from tests.relay_helpers import RedisServer, RelayProcess, chat_body, emulator_replay, redis_server

PROMPT = "Hi"
ALL = "?snapshots=1&compact=0"  # every event the worker sent, as sent, its snapshots included
LEASE = 1.0  # seconds: how soon a dead producer's turn is taken over
RESUMES = 120  # resumes a reader makes at most (a 503 while Redis restarts is one)
TERMINALS = (FinishEvent, ErrorEvent, AbortEvent)
TURN_EVENTS = 72  # what the relay logs of this turn (PROMPT, seed 5), snapshots included
WITHIN = 120  # seconds a relayed turn may take at most, faults included: past it, a hang

relayed = emulator_fixture(tokens_per_second=40, keepalive_interval=0.5, seed=5)


@pytest.fixture(scope="module")
def store() -> Iterator[RedisServer]:
    """A redis-server of this module's own: one test wipes its data."""
    with redis_server() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Reading:
    """What one reader got of a turn, over all its responses."""

    events: list[ServerSentEvent] = field(default_factory=list)  # the turn's, with ids
    broken: int = 0  # responses ended by an id-less error chunk (the relay's store failing)
    statuses: list[int] = field(default_factory=list)  # of every response
    worker_id: str | None = None
    complete: bool = False  # [DONE] reached
    gone: bool = False  # given up on a 410

    @property
    def last_id(self) -> str | None:
        return self.events[-1].id if self.events else None

    def typed(self) -> list[Event]:
        return [decode_event(e, i) for i, e in enumerate(self.events)]


def terminal_count(events: list[Event], gave_up: bool) -> int:
    """The turn's terminals (an error then its finish: one), and one for giving up."""
    count, previous = 0, None
    for event in events:
        kind = type(event)
        if kind not in TERMINALS:
            continue
        if kind is FinishEvent and previous is ErrorEvent:
            previous = None
            continue
        count += 1
        previous = kind
    return count + gave_up


async def read_response(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    reading: Reading,
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
    reached: asyncio.Event | None = None,
    at: int = 0,
) -> bool:
    """One response: its events added to ``reading``; whether to go on (resume).
    ``reached`` is set once ``at`` events of the turn were read."""
    try:
        async with http.request(method, url, json=json, headers=headers) as response:
            reading.statuses.append(response.status)
            if response.status == 410:
                reading.gone = True
                return False
            if response.status in (503, 502):
                return True  # the store is away, or the relay is starting over: again
            if response.status == 204:
                return False  # nothing running, nothing after that id
            assert response.status == 200, (response.status, await response.text())
            reading.worker_id = reading.worker_id or response.headers.get("x-handinger-worker-id")
            decoder = SSEDecoder()
            async for chunk in response.content.iter_any():
                for event in decoder.feed(chunk):
                    if event.raw == b"[DONE]":
                        reading.complete = True
                        return False
                    if event.id is None or event.id == reading.last_id:
                        # The relay's own error: this response broke; resume after it.
                        assert b'"type":"error"' in event.raw, event.raw
                        reading.broken += 1
                        continue
                    reading.events.append(event)
                    if reached is not None and len(reading.events) >= at:
                        reached.set()
    except (aiohttp.ClientError, ConnectionError):
        pass  # the relay died under the reader: resume elsewhere
    return True


async def read_turn(
    http: aiohttp.ClientSession,
    relays: list[RelayProcess],
    chat: str,
    reached: asyncio.Event,
    at: int,
) -> Reading:
    """Send the message at the first relay, read the turn, resume at any relay alive."""
    reading = Reading()
    url = f"{relays[0].url}api/chat{ALL}"
    more = await read_response(
        http, "POST", url, reading, json=chat_body(chat, PROMPT), reached=reached, at=at
    )
    for attempt in range(RESUMES):
        if not more:
            break
        alive = [r for r in relays if r.process.poll() is None]
        relay = alive[attempt % len(alive)]
        headers = {"last-event-id": reading.last_id} if reading.last_id else {}
        await asyncio.sleep(0.1)
        more = await read_response(
            http, "GET", f"{relay.url}api/chat/{chat}/stream{ALL}", reading, headers=headers
        )
    reached.set()  # (a turn shorter than expected)
    return reading


async def stored(base_url: str, worker_id: str) -> Worker:
    """The Worker the emulator keeps, once its turn has ended."""
    async with AsyncHandinger(api_key="any", base_url=base_url) as client:
        for _ in range(600):
            worker = await client.workers.retrieve(worker_id)
            if not worker.running and worker.status == "completed":
                return worker
            await asyncio.sleep(0.05)
    raise AssertionError(f"the turn of {worker_id} did not end")


async def check(reading: Reading, base_url: str, *, upstream_lost: bool = False) -> None:
    """The property, for one relayed turn as its reader got it.

    ``upstream_lost``: the relay could not read the worker's turn to its end (its
    upstream resume refused); what it relayed is then what it read, a prefix of the
    worker's events, ended by the relay's own ``error`` chunk unless the worker's
    terminal was among them.
    """
    events = reading.typed()
    assert terminal_count(events, reading.gone) == 1, (
        [type(e).__name__ for e in events],
        reading.statuses,
    )
    ids = [int(e.id) for e in reading.events if e.id is not None]
    assert ids == sorted(set(ids))
    if reading.gone:
        return
    assert reading.complete, reading.statuses
    assert reading.worker_id is not None
    chunks = [msgspec.json.decode(e.raw) for e in reading.events]
    replay = await emulator_replay(base_url, reading.worker_id)
    if upstream_lost and chunks != replay:
        if chunks[-1] not in replay:  # the relay's end of a turn it lost: an error chunk
            assert chunks[-1]["type"] == "error", chunks[-1]
            chunks = chunks[:-1]
        assert chunks == replay[: len(chunks)]
        return
    assert chunks == replay
    assert fold(events, reading.worker_id) == await stored(base_url, reading.worker_id)


def start_relays(emu: Emulator, store: RedisServer) -> list[RelayProcess]:
    return [
        RelayProcess(base_url=emu.base_url, redis_url=store.url, lease_seconds=LEASE)
        for _ in range(2)
    ]


def wipe(store: RedisServer) -> None:
    """Forget everything Redis kept on disk (it must be stopped)."""
    for path in store.directory.iterdir():
        if path.name != "redis.log":
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


async def relayed_turn(
    emu: Emulator, store: RedisServer, http: aiohttp.ClientSession, what: str, at: int, n: int
) -> Reading:
    """One turn relayed while ``what`` happens after the reader got ``at`` events; for
    ``upstream-*``, the relay's own stream of the worker is cut after ``at`` events and
    its resume refused (404) or answered 410."""
    relays = start_relays(emu, store)
    if what.startswith("upstream"):
        # Queued: the relay's create is the next event-stream request, its resume the one after.
        emu.inject_fault(f"drop-after={at}")
        emu.inject_fault("status=404" if what == "upstream-404" else "history-gone=1")
        at = TURN_EVENTS + 1  # nothing to do mid-turn
    try:
        reached = asyncio.Event()
        reading = asyncio.ensure_future(read_turn(http, relays, f"one-end-{what}-{n}", reached, at))
        waiting = asyncio.ensure_future(reached.wait())
        # A reader that failed early has reached nothing: its error is raised below.
        await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if what == "kill":
            relays[0].kill()  # the producer: the turn was sent there
        elif what == "restart":
            await asyncio.to_thread(store.restart)
        elif what == "forget":
            await asyncio.to_thread(store.stop)
            await asyncio.to_thread(wipe, store)
            await asyncio.to_thread(store.start)
        with anyio.fail_after(WITHIN):
            return await reading
    finally:
        emu.clear_faults()  # one the relay did not need would refuse the replay checked
        for relay in relays:
            await asyncio.to_thread(relay.stop)


_examples = iter(range(1_000_000))


@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example starts processes
    suppress_health_check=list(HealthCheck),
)
@example(what="kill", at=1)  # before the worker answered much
@example(what="kill", at=TURN_EVENTS - 1)  # the finish read, the final snapshot not
@example(what="restart", at=10)
@example(what="restart", at=TURN_EVENTS - 1)
@example(what="upstream-404", at=TURN_EVENTS - 1)  # the relay read the finish, not the rest
@example(what="upstream-gone", at=20)
@given(
    what=st.sampled_from(["kill", "restart", "upstream-404", "upstream-gone"]),
    at=st.integers(1, TURN_EVENTS - 1),
)
def test_a_relayed_turn_ends_exactly_once(
    relayed: Emulator, store: RedisServer, what: str, at: int
) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            reading = await relayed_turn(relayed, store, http, what, at, next(_examples))
            await check(reading, relayed.base_url, upstream_lost=what.startswith("upstream"))

    asyncio.run(run())


async def test_a_turn_the_store_forgot_is_a_410_not_a_silent_end(
    relayed: Emulator, store: RedisServer, http: aiohttp.ClientSession
) -> None:
    reading = await relayed_turn(relayed, store, http, "forget", 10, 0)
    await check(reading, relayed.base_url)
