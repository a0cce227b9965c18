"""Handinger, the sync client: over loopback, from a script, a thread and a running loop."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest
import trio

from handinger_stream import (
    AsyncHandinger,
    Checkpoint,
    Handinger,
    HandingerError,
    InvalidRequestError,
    Reconnected,
    SyncWorkerStream,
    TextDeltaEvent,
    Worker,
    WorkerFailedError,
)
from handinger_stream.client.sync_base import THREAD_NAME
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from tests.conftest import API_KEY, Canned, RawServer
from tests.helpers.leaks import connections_to, loop_threads


@pytest.fixture
def sync_client(emulator: Emulator, transport: TransportName) -> Iterator[Handinger]:
    with Handinger(api_key=API_KEY, base_url=emulator.base_url, transport=transport) as client:
        yield client


def port_of(emulator: Emulator) -> int:
    return emulator.port


def test_the_constructor_takes_what_the_async_one_takes() -> None:
    sync = inspect.signature(Handinger.__init__).parameters
    async_ = inspect.signature(AsyncHandinger.__init__).parameters
    assert [(p.name, p.kind, p.default) for p in sync.values()] == [
        (p.name, p.kind, p.default) for p in async_.values()
    ]


def test_the_three_uses(sync_client: Handinger) -> None:
    stream = sync_client.workers.create(input="What's new in Barcelona?", stream=True)
    assert isinstance(stream, SyncWorkerStream)
    text = "".join(stream.text_deltas())
    assert "Barcelona" in text and stream.closed

    with sync_client.workers.create(input="Compare three laptops", stream=True) as stream:
        lengths = [len(stream.snapshot.output_text) for _ in stream]
    assert lengths == sorted(lengths) and lengths[-1] > 0
    assert stream.completed

    worker = sync_client.workers.create(input="Summarise today's news", stream=True)
    final = worker.get_final_worker()
    assert final.status == "completed" and final.output_text and final.sources


def test_every_call_of_the_resource(sync_client: Handinger) -> None:
    worker = sync_client.workers.create(input="Weather in Oslo", budget="low")
    assert isinstance(worker, Worker)
    replay = sync_client.workers.retrieve(worker.id, stream=True)
    assert replay.get_final_worker().status == "completed"
    assert sync_client.workers.retrieve(worker.id).status == "completed"
    turn = sync_client.workers.continue_(worker.id, input="And tomorrow?", stream=True)
    events = list(turn.events())
    assert any(isinstance(e, TextDeltaEvent) for e in events)
    assert sync_client.workers.retrieve_email(worker.id).startswith(worker.id)
    live = sync_client.workers.subscribe(worker.id)
    assert live.get_final_worker().id == worker.id

    # A worker whose agent attaches a file: read it whole, and chunk by chunk.
    for prompt in ("write a report about tides", "make a report file", "report please"):
        done = sync_client.workers.create(input=prompt, stream=True).get_final_worker()
        if done.files:
            break
    else:
        pytest.fail("the agent attached no file")
    name = done.files[0].filename
    assert name is not None
    whole = sync_client.workers.retrieve_file(done.id, name).read()
    with sync_client.workers.retrieve_file(done.id, name) as download:
        assert b"".join(download) == whole and whole


def test_snapshots_checkpoint_and_resume(sync_client: Handinger) -> None:
    stream = sync_client.workers.create(input="Checkpoint me", stream=True)
    events = iter(stream)
    for _ in range(10):
        next(events)
    checkpoint = stream.checkpoint()
    assert isinstance(checkpoint, Checkpoint) and checkpoint.position == 10
    stream.close()
    assert stream.closed

    resumed = sync_client.workers.resume(checkpoint)
    assert resumed.snapshot == checkpoint.snapshot
    snapshots = list(resumed.snapshots(min_interval=0.001))
    assert snapshots and snapshots[-1].status == "completed"


def test_text_deltas_raise_after_the_last_piece_when_the_worker_failed(
    sync_client: Handinger,
) -> None:
    stream = sync_client.workers.create(
        input="fail late", stream=True, extra_headers={"x-emulator-fault": "error-after=50"}
    )
    pieces: list[str] = []
    with pytest.raises(WorkerFailedError) as failed:
        for text in stream.text_deltas():
            pieces.append(text)
    assert pieces and failed.value.worker is not None
    assert failed.value.worker.output_text == "".join(pieces)


def test_a_stream_resumes_and_says_so(sync_client: Handinger, emulator: Emulator) -> None:
    # Queued, the fault cuts the create's stream only (a header would go with every
    # resume too, and cut each of them again).
    emulator.inject_fault("drop-after=12")
    stream = sync_client.workers.create(input="drop me", stream=True)
    items = list(stream.events(reconnects=True))
    assert sum(isinstance(item, Reconnected) for item in items) == 1
    assert stream.reconnects == 1 and stream.completed
    # Each event once, in order, whatever of the first twelve the cut let through (a
    # reset can take bytes still unread with it).
    ids = [item.event_id for item in items if not isinstance(item, Reconnected)]
    assert ids == [str(n) for n in range(len(ids))]


def test_leaving_a_for_early_closes_the_response(raw_server: RawServer) -> None:
    body = [b'data: {"type":"start"}\n\n', b'data: {"type":"text-start","id":"t"}\n\n']
    body += [b'data: {"type":"text-delta","id":"t","delta":"x"}\n\n'] * 200
    raw_server.serve(Canned(body, delay=0.05))  # 10 s: longer than any slow run of the test
    with Handinger(api_key=API_KEY, base_url=raw_server.base_url, max_reconnects=0) as client:
        stream = client.workers.create(input="x", stream=True)
        for i, _text in enumerate(stream.text_deltas()):
            if i == 2:
                break
        # No `with`, no close(): leaving the loop was enough.
        assert stream.closed
        port = int(raw_server.base_url.rsplit(":", 1)[1])
        assert connections_to(port) == 0
    assert raw_server.finished == 0  # the server never got to send it all


def test_close_leaves_no_thread_loop_or_connection(emulator: Emulator) -> None:
    before = len(loop_threads())
    client = Handinger(api_key=API_KEY, base_url=emulator.base_url)
    try:
        assert len(loop_threads()) == before  # nothing starts until it is used
        stream = client.workers.create(input="keep me open", stream=True)
        events = iter(stream)
        next(events)  # a stream held open, mid-way
        assert len(loop_threads()) == before + 1
        assert connections_to(emulator.port) >= 1
    finally:
        client.close()
    assert len(loop_threads()) == before
    assert connections_to(emulator.port) == 0
    client.close()  # twice is fine
    with pytest.raises(HandingerError, match="closed"):
        client.workers.retrieve("wrk_x")


def test_a_client_nobody_closed_is_closed_when_collected(emulator: Emulator) -> None:
    before = len(loop_threads())
    client = Handinger(api_key=API_KEY, base_url=emulator.base_url)
    client.workers.create(input="then forget me")
    assert len(loop_threads()) == before + 1
    del client
    gc.collect()
    assert len(loop_threads()) == before
    assert connections_to(emulator.port) == 0


def test_from_worker_threads_sharing_one_client(sync_client: Handinger) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            stream = sync_client.workers.create(input=f"thread {n}", stream=True)
            results.append(stream.get_final_worker().status)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == ["completed"] * 6


async def test_inside_a_running_event_loop(emulator: Emulator) -> None:
    # As in a notebook cell: sync calls from a thread whose loop is running. The
    # emulator runs in its own thread; the client's loop is its own: no deadlock.
    assert asyncio.get_running_loop().is_running()
    with Handinger(api_key=API_KEY, base_url=emulator.base_url) as client:
        stream = client.workers.create(input="notebook", stream=True)
        text = "".join(stream.text_deltas())
        assert text and client.workers.retrieve(stream.worker_id).status == "completed"


def test_inside_trio(emulator: Emulator) -> None:
    async def main() -> str:
        with Handinger(api_key=API_KEY, base_url=emulator.base_url) as client:
            return client.workers.create(input="trio", stream=True).get_final_worker().status

    assert trio.run(main) == "completed"


def test_with_options_shares_the_thread(emulator: Emulator) -> None:
    with Handinger(api_key=API_KEY, base_url=emulator.base_url) as client:
        client.workers.create(input="start the thread")
        before = len(loop_threads())
        patient = client.with_options(max_reconnects=9)
        assert patient.async_client.stream_policy.max_reconnects == 9
        assert patient.workers.create(input="patient").status == "pending"
        patient.close()  # leaves the shared thread to the client it came from
        assert len(loop_threads()) == before
        assert client.workers.create(input="still here").status == "pending"


def test_bad_input_is_refused_before_any_thread_starts() -> None:
    before = len(loop_threads())
    with pytest.raises(InvalidRequestError, match="base_url"):
        Handinger(api_key="k", base_url="not-a-url")
    import aiohttp

    async def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    async def refuse() -> None:
        own = await session()
        try:
            with pytest.raises(InvalidRequestError, match=r"aiohttp\.ClientSession"):
                Handinger(api_key="k", http_client=own)
        finally:
            await own.close()

    asyncio.run(refuse())
    with (
        Handinger(api_key="k", base_url="http://127.0.0.1:9") as client,
        pytest.raises(InvalidRequestError, match="input"),
    ):
        client.workers.create(input="")
    assert len(loop_threads()) == before


SCRIPT = """
import threading
from handinger_stream import Handinger

client = Handinger()  # from the environment; never closed: exit must still be clean
stream = client.workers.create(input="a plain script", stream=True)
for text in stream.text_deltas():
    print(text, end="", flush=True)
print()
print(client.workers.retrieve(stream.worker_id).status)
print(sorted(t.name for t in threading.enumerate()))
"""


def test_from_a_plain_script_that_never_closes(emulator: Emulator) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDINGER_")}
    env.update(HANDINGER_API_KEY=API_KEY, HANDINGER_BASE_URL=emulator.base_url)
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(SCRIPT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "a plain script" in lines[0] and lines[1] == "completed"
    assert THREAD_NAME in lines[2]
    # At exit the client was closed: no unclosed session, socket or loop reported.
    assert "Unclosed" not in result.stderr and "ResourceWarning" not in result.stderr
    assert "Traceback" not in result.stderr


FORK = """
import os
from handinger_stream import Handinger

client = Handinger()
print("parent", client.workers.create(input="before the fork").status, flush=True)
pid = os.fork()  # a Celery or gunicorn worker, made from a parent that used the client
if pid == 0:
    stream = client.workers.create(input="in the child", stream=True)
    print("child", stream.get_final_worker().status, flush=True)
    client.close()
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
print("parent", client.workers.create(input="after the fork").status)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_a_fork_the_child_runs_a_thread_of_its_own(emulator: Emulator) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDINGER_")}
    env.update(HANDINGER_API_KEY=API_KEY, HANDINGER_BASE_URL=emulator.base_url)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORK)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "parent pending",
        "child completed",
        "child exit 0",
        "parent pending",
    ]
    assert "Traceback" not in result.stderr


class Ticker:
    """Stands for a future async iterator of the resource (``workers.watch``): an async
    iterator that is also an async context manager, which must be exited."""

    def __init__(self) -> None:
        self.state = "new"
        self.count = 0

    async def __aenter__(self) -> Ticker:
        self.state = "entered"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.state = "exited"

    def __aiter__(self) -> Ticker:
        return self

    async def __anext__(self) -> int:
        assert self.state == "entered"
        self.count += 1
        if self.count > 5:
            raise StopAsyncIteration
        return self.count


def test_a_new_async_iterator_is_wrapped_by_one_call(emulator: Emulator) -> None:
    with Handinger(api_key=API_KEY, base_url=emulator.base_url) as client:
        whole = Ticker()
        assert list(client._iterate(lambda: whole, enter=True)) == [1, 2, 3, 4, 5]
        assert whole.state == "exited"
        early = Ticker()
        for n in client._iterate(lambda: early, enter=True):
            if n == 2:
                break
        assert early.state == "exited"
        held = Ticker()
        with client._iterate(lambda: held, enter=True) as ticks:
            assert next(ticks) == 1
        assert held.state == "exited"
