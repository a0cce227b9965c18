"""Exactly one terminal per turn, whatever faults hit its stream (issue 23).

**The terminal rule.** A consumer sees a turn end once: the turn's terminal
is a ``finish``, an ``error`` or an ``abort`` chunk, or the
``IncompleteStreamError`` (``HistoryGoneError`` for a 410) the stream raises
when it could not read the turn to its end. An ``error`` chunk followed by a
``finish`` (the AI SDK may send one after an error, with the message's last
metadata) is one terminal pair. Counted over what a consumer gets:

- the terminal chunks it iterated, pairs counted once, plus one if iterating
  raised ``IncompleteStreamError``: always exactly 1;
- after the terminal, nothing but Worker snapshots (``data-worker``);
- a stream that ended without raising folded the Worker the emulator itself
  stores for that worker (``GET /api/workers/{id}``), and its ``outcome``
  is the stored one;
- a stream that raised never looks finished: ``worker.outcome`` is ``None``.

The same for the items of ``client.workers.watch(...)``: per worker, its
events' terminals plus its error item, exactly 1.

The faults are the emulator's, one per request (the create's stream, then
each resume in turn): cuts after event N, stalls past the idle limit,
refusals (503, retried; 404, final), ``history-gone`` (410), a replay without
ids; and the turn's own ending: finished, failed after N chunks, aborted after
N chunks; over a worker's first turn (``create``) and its second
(``continue_``). Real loopback HTTP, no mocks. And a server of its own whose
replay forgets the rest of a turn and says ``[DONE]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from handinger_stream import (
    AbortEvent,
    AsyncHandinger,
    ErrorEvent,
    FinishEvent,
    GoneError,
    HandingerError,
    HistoryGoneError,
    IncompleteStreamError,
    StreamError,
    Worker,
    WorkerSnapshotEvent,
)
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from handinger_stream.types.events import Event
from tests.helpers.emulators import emulator_fixture

# retry: 5 ms, so that a resume costs almost nothing; keep-alives often, for the stalls.
emu = emulator_fixture(seed=7, retry_ms=5, keepalive_interval=0.05)

TURN_EVENTS = 70  # a create's stream at budget "low" for PROMPT with seed 7 (checked below)
PROMPT = "Hi"
NO_FAULT = {"x-emulator-fault": "no-ids=0"}  # a header of its own: takes no queued fault
IDLE = 0.15  # the stall limit the property's clients use; a stall fault lasts longer
MAX_RECONNECTS = 3

TERMINALS = (FinishEvent, ErrorEvent, AbortEvent)


def terminal_count(events: Sequence[Event], raised: bool) -> int:
    """The terminals a consumer saw (see the module's docstring): an error then a finish
    counts once, and a raised ``IncompleteStreamError`` counts as one."""
    count, previous = 0, None
    for event in events:
        kind = type(event)
        if kind not in TERMINALS:
            continue
        if kind is FinishEvent and previous is ErrorEvent:
            previous = None  # the finish that completes an error: one pair
            continue
        count += 1
        previous = kind
    return count + raised


def after_terminal(events: Sequence[Event]) -> list[str]:
    """What came after the turn's terminal other than snapshots (and an error's finish)."""
    last = max((i for i, e in enumerate(events) if isinstance(e, TERMINALS)), default=None)
    if last is None:
        return []
    return [type(e).__name__ for e in events[last + 1 :] if type(e) is not WorkerSnapshotEvent]


# -- the faults -----------------------------------------------------------------

# A failed or aborted turn stops after one of these chunks (then its error or abort
# chunk, then the final snapshot: N + 3 events in all).
STOPS = (0, 1, 9, 33, 60)
# Where a cut or a stall falls, by how many events went before it: anywhere, with the
# edges of each kind of turn drawn more often (the first event, a terminal, the last).
EDGES = sorted(
    {0, 1, TURN_EVENTS - 2, TURN_EVENTS - 1, TURN_EVENTS}
    | {n + k for n in STOPS for k in (1, 2, 3)}
)
WHERE = st.one_of(st.integers(0, TURN_EVENTS + 1), st.sampled_from(EDGES))
CUT = WHERE.map(lambda n: f"drop-after={n}")
STALL = WHERE.map(lambda n: f"stall-after={n}; stall-seconds={IDLE * 3}")
REFUSED = st.sampled_from(["status=503", "status=404", "history-gone=1"])
CONNECTION_FAULT = st.one_of(CUT, CUT, STALL, REFUSED, st.just(""))
ENDING = st.one_of(
    st.just(""),
    st.sampled_from(STOPS).map(lambda n: f"error-after={n}"),
    st.sampled_from(STOPS).map(lambda n: f"abort-after={n}"),
)


@dataclass(frozen=True)
class Plan:
    """One turn: how it ends, and the fault of each request its stream makes."""

    ending: str  # the turn's own: "", error-after=N, abort-after=N
    faults: tuple[str, ...]  # [0] the create's stream, then one per resume
    no_ids: bool  # the create's stream and every resume without SSE ids
    # The worker's second turn (continue_): a stream that did not start at the worker's
    # first event, so one without ids cannot be resumed at all.
    second: bool = False


PLANS = st.builds(
    Plan,
    second=st.booleans(),
    ending=ENDING,
    # The create's stream is cut or stalled (a refused create is no turn); each resume
    # may be refused too.
    faults=st.tuples(st.one_of(CUT, STALL, st.just(""))).flatmap(
        lambda first: st.lists(CONNECTION_FAULT, max_size=4).map(lambda rest: first + tuple(rest))
    ),
    no_ids=st.booleans(),
)


def queue(emu: Emulator, plan: Plan) -> None:
    """The plan's faults, one per streaming request, in order (the create's first)."""
    emu.clear_faults()
    for i, fault in enumerate(plan.faults):
        parts = [fault] if fault else []
        if i == 0 and plan.ending:
            parts.append(plan.ending)
        if plan.no_ids:
            parts.append("no-ids=1")
        # An empty spec would be no fault at all, which is what "" means here too.
        emu.inject_fault("; ".join(parts) or "no-ids=0")
    if plan.no_ids:
        emu.inject_fault("no-ids=1", times=MAX_RECONNECTS + 2)  # resumes past the plan


def client_for(emu: Emulator, transport: TransportName) -> AsyncHandinger:
    return AsyncHandinger(
        **emu.client_options(),
        transport=transport,
        max_retries=0,  # the resumes' own retries are the stream's, bounded below
        max_reconnects=MAX_RECONNECTS,
        idle_timeout=IDLE,
    )


async def stored(client: AsyncHandinger, worker_id: str) -> Worker:
    """The Worker the emulator keeps, once the turn has ended."""
    for _ in range(400):
        worker = await client.workers.retrieve(worker_id)
        if not worker.running and worker.status == "completed":
            return worker
        await asyncio.sleep(0.01)
    raise AssertionError(f"the turn of {worker_id} did not end")


def check_turn(
    events: list[Event], error: HandingerError | None, snapshot: Worker, truth: Worker
) -> None:
    """The property, for one turn's events as a consumer got them."""
    assert terminal_count(events, error is not None) == 1, [type(e).__name__ for e in events]
    assert after_terminal(events) == []
    # Nothing twice, nothing from a replay started over: the ids only go up.
    ids = [int(e.event_id) for e in events if e.event_id is not None]
    assert ids == sorted(set(ids))
    if error is None:
        # Also when what followed the terminal (the final snapshot) was lost: the
        # chunks before it carry the whole Worker.
        assert snapshot == truth
        assert snapshot.outcome == truth.outcome is not None
    else:
        worker = error.worker if isinstance(error, StreamError) else snapshot
        assert worker is not None and worker.outcome is None, worker
        assert snapshot.outcome is None
        if isinstance(error.__cause__, GoneError):
            assert isinstance(error, HistoryGoneError), repr(error)


# -- a WorkerStream -------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_resume_answered_410_is_history_gone_and_never_starts_over(
    emu: Emulator, transport: TransportName
) -> None:
    emu.inject_fault("drop-after=20")
    emu.inject_fault("history-gone=1")
    emu.inject_fault("no-ids=0", times=3)  # what a further request would take
    try:
        async with client_for(emu, transport) as client:
            stream = await client.workers.create(input=PROMPT, budget="low", stream=True)
            got = []
            with pytest.raises(HistoryGoneError) as info:
                async for event in stream:
                    got.append(event)
            left = len(emu._faults)
    finally:
        emu.clear_faults()
    error = info.value
    assert isinstance(error, IncompleteStreamError)
    assert isinstance(error.__cause__, GoneError) and error.__cause__.status_code == 410
    assert error.last_event_id == "19" == got[-1].event_id and len(got) == 20
    assert "no longer keeps the events after id 19" in str(error)
    assert error.worker == stream.snapshot and error.worker.outcome is None
    assert left == 3  # asked once: no replay from the start after the 410


async def test_the_turn_has_as_many_events_as_the_faults_assume(emu: Emulator) -> None:
    async with AsyncHandinger(**emu.client_options()) as client:
        stream = await client.workers.create(input=PROMPT, budget="low", stream=True)
        assert len([e async for e in stream]) == TURN_EVENTS


# The edges that found what the property found, kept as examples: a cut after the
# terminal (finish, error, abort) and before the final snapshot, then no resume.
EXAMPLES = [
    Plan("", (f"drop-after={TURN_EVENTS - 1}", "status=404"), False),
    Plan("", (f"drop-after={TURN_EVENTS - 1}", "history-gone=1"), False),
    Plan("", (f"drop-after={TURN_EVENTS - 1}", *["status=503"] * MAX_RECONNECTS), True),
    Plan("error-after=9", ("drop-after=11", "status=404"), False),
    Plan("abort-after=9", ("drop-after=11", "history-gone=1"), False),
    Plan("", (f"stall-after={TURN_EVENTS - 1}; stall-seconds={IDLE * 3}", "status=404"), False),
    Plan("", ("drop-after=20", "history-gone=1"), False),
    Plan("", ("drop-after=20", "history-gone=1"), True),
]


def examples(*, watched: bool = False) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Try each of :data:`EXAMPLES` first (for a watch, alone as ``plans``)."""

    def add(test: Callable[..., None]) -> Callable[..., None]:
        for plan in EXAMPLES:
            test = (example(plans=[plan]) if watched else example(plan=plan))(test)
        return test

    return add


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@examples()
@given(plan=PLANS)
def test_a_stream_ends_its_turn_exactly_once(
    emu: Emulator, transport: TransportName, plan: Plan
) -> None:
    async def run() -> None:
        async with client_for(emu, transport) as client:
            if plan.second:
                first = await client.workers.create(input=PROMPT, extra_headers=NO_FAULT)
                await stored(client, first.id)
                queue(emu, plan)
                stream = await client.workers.continue_(
                    first.id, input=PROMPT, budget="low", stream=True
                )
            else:
                queue(emu, plan)
                stream = await client.workers.create(input=PROMPT, budget="low", stream=True)
            events: list[Event] = []
            error: IncompleteStreamError | None = None
            try:
                async for event in stream:
                    events.append(event)
            except IncompleteStreamError as exc:
                error = exc
            truth = await stored(client, stream.worker_id)
            check_turn(events, error, stream.snapshot, truth)

    try:
        asyncio.run(run())
    finally:
        emu.clear_faults()


# -- the same turns, watched ----------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@examples(watched=True)
@given(plans=st.lists(PLANS, min_size=1, max_size=3))
def test_a_watch_ends_each_workers_turn_exactly_once(emu: Emulator, plans: list[Plan]) -> None:
    """Each worker's items: one terminal (a chunk, or the error item of a lost stream)."""

    async def run() -> None:
        async with client_for(emu, "aiohttp") as client:
            ids = []
            for plan in plans:
                # The turn's ending goes with its create; the faults with the watch's reads.
                worker = await client.workers.create(
                    input=PROMPT,
                    budget="low",
                    extra_headers={"x-emulator-fault": plan.ending or "no-ids=0"},
                )
                ids.append(worker.id)
            truths = {i: await stored(client, i) for i in ids}
            # One worker read at a time: each takes the faults queued next, in turn.
            emu.clear_faults()
            for plan in plans:
                for fault in plan.faults:
                    emu.inject_fault(fault or "no-ids=0")
            events: dict[str, list[Event]] = {i: [] for i in ids}
            errors: dict[str, HandingerError] = {}
            async with client.workers.watch(ids, max_concurrency=1) as watch:
                async for item in watch:
                    if item.error is not None:
                        assert item.worker_id not in errors
                        errors[item.worker_id] = item.error
                    else:
                        assert item.event is not None and item.worker_id not in errors
                        events[item.worker_id].append(item.event)
                for i in ids:
                    check_turn(events[i], errors.get(i), watch.workers[i], truths[i])

    try:
        asyncio.run(run())
    finally:
        emu.clear_faults()


# -- a replay that ends ([DONE]) before the turn's end ------------------------------------

HEAD = (
    b"retry: 5\n\n"  # resume at once
    b'id: 1\ndata: {"type":"start","messageId":"m"}\n\n'
    b'id: 2\ndata: {"type":"text-start","id":"t"}\n\n'
    b'id: 3\ndata: {"type":"text-delta","id":"t","delta":"Hel"}\n\n'
)


@asynccontextmanager
async def forgetful() -> AsyncIterator[str]:
    """A server whose create stream ends early (no terminal, no ``[DONE]``), and whose
    replay after ``Last-Event-ID`` is only ``[DONE]``: it forgot the turn's rest, silently."""

    async def create(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "x-handinger-worker-id": "w1"}
        )
        await response.prepare(request)
        await response.write(HEAD)
        return response

    async def replay(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/api/workers", create)
    app.router.add_get("/api/workers/w1", replay)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_replay_that_forgot_the_rest_of_the_turn_is_not_its_end(
    transport: TransportName,
) -> None:
    """Its [DONE] is not the turn's end: history gone, said once, never a finished turn."""
    async with (
        forgetful() as base_url,
        AsyncHandinger(api_key="k", base_url=base_url, transport=transport) as client,
    ):
        stream = await client.workers.create(input="x", stream=True)
        events: list[Event] = []
        with pytest.raises(HistoryGoneError) as info:
            async for event in stream:
                events.append(event)
    assert terminal_count(events, True) == 1 and len(events) == 3
    assert info.value.last_event_id == "3" and info.value.__cause__ is None
    assert "no longer keeps the events after id 3" in str(info.value)
    assert info.value.worker is not None and info.value.worker.outcome is None
