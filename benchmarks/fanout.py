"""One turn fanned out to many SSE readers by four systems, side by side in one run.

``python -m benchmarks fanout [--readers 1000] [--events 2000] [--pace-ms 5]
[--join before|during] [--systems relay-memory relay-redis resumable minimal] [--save]``

The systems, each in processes of its own, started afresh for its run:

- ``relay-memory``: ``handinger-stream relay`` on its MemoryStore (as ``relay.py`` starts it);
- ``relay-redis``: the same with ``--redis``, on a redis-server started for the run;
- ``resumable``: Vercel's resumable-stream 2.2.13 in a small Node server
  (``peers/resumable/server.mjs``, the npm ``redis`` client) on a redis-server of its own;
- ``minimal``: a minimal aiohttp fan-out (``peers/fanout_minimal.py``): one upstream read,
  a queue per reader, nothing stored, so a joiner gets only what follows its joining.

All read the same upstream: the benchmark server (``server.py``, one process for the
whole run) streaming one turn of ``events`` text deltas one per ``pace_ms``, each
stamped with ``time.monotonic_ns()`` at sending. This process is the load generator:
it posts the turn (``POST /api/chat``) and opens the readers (``GET
/api/chat/{id}/stream``) on raw asyncio sockets (``relay.py``'s ``_Reader``), either
all at once as soon as the turn has begun (``before``: before the deltas have gone
far) or spread over the first half of the turn (``during``).

Reported per system, judging each reader by content (the text of the deltas it
received, in order, against the turn's: the relay merges the deltas of a backlog
or a joiner's history into fewer events, so events are not counted one for one):
whether every reader got the whole turn once and in order, and whether each got
every delta from its joining point on (and how many it lacks of those sent, by
the upstream's schedule, once it was connected); lag (receipt less stamp; a
merged event carries, and is timed by, its newest delta's stamp) p50/p99 over
the events sent once every reader was connected (``before``) or once that
reader was (``during``), and over the first and last tenth of the turn's deltas
(does lag grow with the turn?); CPU time of each server process
(``/proc/PID/stat``) per delta delivered to a reader; the join time (from
opening the first reader until every reader had its first byte) and each
reader's own wait for it; the servers' memory per reader (peak resident set
with the readers connected, less before them). The machine is shared: the
cores' busy time (``/proc/stat``) that none of the benchmark's processes account
for is reported too, as a share of a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .relay import (
    ROOT,
    _chat_requests,
    _drain,
    _given,
    _percentile,
    _Reader,
    _redis_server,
    _rss_bytes,
    _start_relay,
)
from .suite import replay_server, server_cpu

SYSTEMS = ("relay-memory", "relay-redis", "resumable", "minimal")
RESUMABLE = ROOT / "benchmarks" / "peers" / "resumable"
# The peers pass the upstream's id-less events through: every system's events have a data line.
DATA = b"data: "
# A reader that has received nothing for this long is reported, not waited for.
IDLE_S = 30.0
# A peer prints its port on stdout; its stderr is drained (a full pipe would block it).
_PIPES: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}


@dataclass
class _Serving:
    """One system, serving: where, and its processes by role (whose CPU and memory count)."""

    port: int
    processes: dict[str, subprocess.Popen[str]]
    said: list[str]  # their stderr: warnings, errors


def _port(process: subprocess.Popen[str]) -> int:
    """The port a peer printed as its first line, ``{"port": N}``."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        assert process.stderr is not None
        raise RuntimeError(f"{process.args!r} did not start: {process.stderr.read()[-2000:]}")
    return int(json.loads(line)["port"])


def _npm_ci() -> None:
    """resumable-stream's locked packages, installed the first time they are wanted."""
    if (RESUMABLE / "node_modules" / ".package-lock.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("node and npm are needed for the resumable-stream run")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=RESUMABLE,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm ci in {RESUMABLE} failed: {done.stderr[-2000:]}")


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def _serving(system: str, upstream: str) -> Iterator[_Serving]:
    with contextlib.ExitStack() as stack:
        redis: dict[str, subprocess.Popen[str]] = {}
        redis_url = ""
        if system in ("relay-redis", "resumable"):
            redis_url, redis["redis-server"] = stack.enter_context(_redis_server())
        process: subprocess.Popen[str]
        if system in ("relay-memory", "relay-redis"):
            process, port = _start_relay(upstream, redis_url or None)
            role = "relay"
        elif system == "resumable":
            _npm_ci()
            env = {**os.environ, "UPSTREAM": upstream, "REDIS_URL": redis_url, "PORT": "0"}
            # FANOUT_NODE_ARGS: node's own options, e.g. --cpu-prof (not allowed in NODE_OPTIONS).
            node = ["node", *os.environ.get("FANOUT_NODE_ARGS", "").split(), "server.mjs"]
            process = subprocess.Popen(node, cwd=RESUMABLE, env=env, **_PIPES)
            port, role = _port(process), "node"
        elif system == "minimal":
            module = "benchmarks.peers.fanout_minimal"
            process = subprocess.Popen(
                [sys.executable, "-m", module, "--upstream", upstream], cwd=ROOT, **_PIPES
            )
            port, role = _port(process), "server"
        else:
            raise ValueError(f"no system {system!r}: one of {', '.join(SYSTEMS)}")
        stack.callback(_stop, process)  # before the redis-server (the stack unwinds backwards)
        said: list[str] = []
        # Keep reading its stderr: a full pipe would block the server mid-run.
        threading.Thread(target=_drain, args=(process.stderr, said), daemon=True).start()
        yield _Serving(port, {role: process, **redis}, said)


async def _until_done(readers: list[_Reader]) -> None:
    """Until every reader has its turn's end, or none has received anything for IDLE_S
    (a reader refused, or stalled, shows in the figures; waiting for it would not end)."""
    loop = asyncio.get_running_loop()
    seen, quiet_since = -1, loop.time()
    while not all(reader.done.done() for reader in readers):
        await asyncio.sleep(0.5)
        now_seen = sum(reader.events for reader in readers)
        if now_seen != seen:
            seen, quiet_since = now_seen, loop.time()
        elif loop.time() - quiet_since > IDLE_S:
            return


async def _fan_out(
    port: int, readers: int, events: int, pace_ms: float, join: str
) -> tuple[_Reader, list[tuple[_Reader, int]], int]:
    """Post the turn and open the readers: the poster, each reader with the time its
    connection opened, and the time the last one did (in ns)."""
    loop = asyncio.get_running_loop()
    post, get = _chat_requests(port, events, pace_ms)
    poster = _Reader(post, loop.create_future(), DATA, deltas=True)
    posted, _ = await loop.create_connection(_given(poster), "127.0.0.1", port)
    await asyncio.wait_for(poster.started, 60)  # the turn has begun (a refusal never starts it)
    spread = events * pace_ms / 1000 / 2 if join == "during" else 0.0
    begun = loop.time()
    opened: list[tuple[_Reader, int]] = []
    transports = [posted]
    for i in range(readers):
        delay = begun + spread * i / readers - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        reader = _Reader(get, loop.create_future(), DATA, deltas=True)
        transport, _ = await loop.create_connection(_given(reader), "127.0.0.1", port)
        opened.append((reader, time.monotonic_ns()))
        transports.append(transport)
    connected_ns = time.monotonic_ns()
    await _until_done([poster, *(reader for reader, _ in opened)])
    for each in transports:
        each.close()
    return poster, opened, connected_ns


def _turn_text(deltas: int) -> bytes:
    """The text of the turn's deltas, as the benchmark server makes them (``Shape.stamped``)."""
    return b"".join(b"w%d " % (i % 1000) for i in range(deltas))


def _figures(
    poster: _Reader,
    opened: list[tuple[_Reader, int]],
    connected_ns: int,
    join: str,
    deltas: int,
    pace_ms: float,
) -> dict[str, Any]:
    """What the readers got, judged by content: the text of the deltas each received, in
    order, against the turn's (the relay may merge a backlog's deltas into fewer events,
    each with its newest delta's stamp, so events are not counted one for one)."""
    turn = _turn_text(deltas)
    pace_ns = pace_ms * 1e6
    # When the upstream began the deltas, by its schedule (it sleeps to start + i * pace):
    # to tell which deltas were sent once a reader was connected.
    stamped = _indexed(poster, deltas)
    start = min((sent - i * pace_ns for i, sent, _, _ in stamped), default=0.0)
    first_tenth, last_tenth = deltas // 10, deltas - deltas // 10
    lags: list[int] = []
    firsts: list[int] = []
    lasts: list[int] = []
    whole = gapless = 0
    missed: list[int] = []
    waits: list[int] = []
    got = merged = 0
    for reader, connected in opened:
        assert reader.deltas is not None
        text = b"".join(part for part, _, _ in reader.deltas)
        k = text.count(b" ")  # each delta's text ends in its one space
        got += k
        merged += k - len(reader.deltas)
        cut = len(turn) - len(text)
        # The turn's deltas from some point on, each once and in order, then its end.
        on_a_delta = cut == 0 or (cut > 0 and turn[cut - 1 : cut] == b" ")
        suffix = reader.complete and on_a_delta and turn.endswith(text)
        gapless += suffix
        whole += reader.complete and text == turn
        # Deltas sent (by the schedule) once its connection was open that it never got.
        first_after = max(
            0, -int((start - connected) // pace_ns)
        )  # ceil((connected - start) / pace)
        missed.append(max(0, (deltas - k) - first_after))
        if reader.first_byte_ns is not None:
            waits.append(reader.first_byte_ns - reader.opened_ns)
        since = connected_ns if join == "before" else connected
        for i, sent, received, _ in _indexed(reader, deltas):
            if sent >= since:
                lag = received - sent
                lags.append(lag)
                if i < first_tenth:
                    firsts.append(lag)
                elif i >= last_tenth:
                    lasts.append(lag)
    readers = len(opened)
    first_bytes = [r.first_byte_ns for r, _ in opened if r.first_byte_ns is not None]
    return {
        "turn_deltas": deltas,
        "poster_events": poster.events,
        "every_reader_got_every_event": whole == readers,
        "readers_whole_turn": whole,
        "every_reader_got_every_event_from_join": gapless == readers,
        "readers_gapless_from_join": gapless,
        "readers_complete": sum(r.complete for r, _ in opened),
        # Of those not complete: the answer ended (its last chunk came) without the
        # turn's end, or was left open; and one's last bytes, to see where it stopped.
        "incomplete_ended": sum(
            not r.complete and r.last.endswith(b"0\r\n\r\n") for r, _ in opened
        ),
        "incomplete_last_bytes": next(
            (r.last[-160:].decode(errors="replace") for r, _ in opened if not r.complete), None
        ),
        "readers_missing_events_sent_after_connecting": sum(m > 0 for m in missed),
        "events_missed_after_connecting_max": max(missed, default=0),
        "delivered_events": sum(r.events for r, _ in opened),  # on the wire
        "delivered_deltas": got,
        "merged_deltas_share": round(merged / got, 3) if got else None,
        "lag_ms_p50": _percentile(lags, 50),
        "lag_ms_p99": _percentile(lags, 99),
        "lag_ms_first_tenth_p50": _percentile(firsts, 50),
        "lag_ms_first_tenth_p99": _percentile(firsts, 99),
        "lag_ms_last_tenth_p50": _percentile(lasts, 50),
        "lag_ms_last_tenth_p99": _percentile(lasts, 99),
        "join_s": (
            round((max(first_bytes) - opened[0][0].opened_ns) / 1e9, 3)
            if first_bytes and len(first_bytes) == readers
            else None
        ),
        "readers_without_a_response": readers - len(first_bytes),
        "join_wait_ms_p50": _percentile(waits, 50),
        "join_wait_ms_p99": _percentile(waits, 99),
    }


def _indexed(reader: _Reader, deltas: int) -> list[tuple[int, int, int, int]]:
    """The reader's stamped events: (index of the stamp's delta in the turn, its stamp,
    receive time, deltas the event holds). A merged event holds several deltas and the
    newest one's stamp: it is timed by that one (those merged into it waited longer)."""
    assert reader.deltas is not None
    held = sum(part.count(b" ") for part, _, _ in reader.deltas)
    index = deltas - held - 1  # the delta before the reader's first
    out = []
    for part, stamp, received in reader.deltas:
        count = part.count(b" ")
        index += count
        if stamp:
            out.append((index, int(stamp), received, count))
    return out


def _machine_busy_s() -> float:
    """CPU seconds all cores have been busy since boot (``/proc/stat``), whoever used them."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _measure(
    system: str,
    upstream: tuple[str, subprocess.Popen[str]],
    readers: int,
    events: int,
    pace_ms: float,
    join: str,
) -> dict[str, Any]:
    print(f"# fanout: {system}, {readers} readers, join {join}", file=sys.stderr, flush=True)
    url, server = upstream
    with _serving(system, url) as serving:
        processes = serving.processes
        time.sleep(0.5)
        rss_before = {role: _rss_bytes(p.pid) for role, p in processes.items()}
        cpu_before = {role: server_cpu(p) for role, p in processes.items()}
        # The machine is shared: what else ran during the measurement is reported beside it.
        ours_before = _own_cpu_s() + server_cpu(server)
        busy_before, wall_before = _machine_busy_s(), time.monotonic()
        peak = dict(rss_before)

        async def run() -> tuple[_Reader, list[tuple[_Reader, int]], int]:
            async def sample() -> None:
                while True:
                    for role, p in processes.items():
                        peak[role] = max(peak[role], _rss_bytes(p.pid))
                    await asyncio.sleep(0.2)

            sampler = asyncio.ensure_future(sample())
            try:
                return await _fan_out(serving.port, readers, events, pace_ms, join)
            finally:
                sampler.cancel()

        poster, opened, connected_ns = asyncio.run(run())
        cpu = {role: server_cpu(p) - cpu_before[role] for role, p in processes.items()}
        wall = time.monotonic() - wall_before
        busy = _machine_busy_s() - busy_before
        ours = _own_cpu_s() + server_cpu(server) - ours_before + sum(cpu.values())
    figures = _figures(poster, opened, connected_ns, join, events, pace_ms)
    result = {"system": system, "readers": readers, **figures}
    # Delivered: one of the turn's deltas to one reader (in an event of its own or merged).
    delivered = result["delivered_deltas"]
    per_event = {
        role: round(seconds / delivered * 1e6, 3) if delivered else None
        for role, seconds in cpu.items()
    }
    total = sum(cpu.values())
    result.update(
        cpu_s={role: round(seconds, 3) for role, seconds in cpu.items()},
        cpu_us_per_delivered_delta=per_event,
        cpu_us_per_delivered_delta_total=round(total / delivered * 1e6, 3) if delivered else None,
        memory_kib_per_reader={
            role: round((peak[role] - rss_before[role]) / readers / 1024, 1) for role in processes
        },
        memory_kib_per_reader_total=round(
            sum(peak[r] - rss_before[r] for r in processes) / readers / 1024, 1
        ),
        wall_s=round(wall, 1),
        load_generator_and_upstream_cpu_s=round(ours - sum(cpu.values()), 2),
        # Busy time of the machine's cores the benchmark's processes do not account for.
        other_cpu_share_of_a_core=round(max(0.0, busy - ours) / wall, 2),
        said=serving.said[:5],  # warnings, errors, if any
    )
    return result


def _tree() -> dict[str, Any]:
    """The code the relay ran: the commit, and the files of the package changed beside it
    (the relay is measured as the working tree has it when the run starts)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "handinger_stream")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "changed": [line[3:] for line in changed.splitlines()],
    }


def run(
    readers: int = 1000,
    events: int = 2000,
    pace_ms: float = 5.0,
    join: str = "before",
    systems: tuple[str, ...] = SYSTEMS,
) -> dict[str, Any]:
    """Measure each system in turn on one upstream server; the results as a dict."""
    if join not in ("before", "during"):
        raise ValueError("join is before or during")
    tree = _tree()
    with replay_server() as upstream:
        server = upstream[1]
        cpu0 = server_cpu(server)
        results = [_measure(s, upstream, readers, events, pace_ms, join) for s in systems]
        upstream_cpu = server_cpu(server) - cpu0
    return {
        "readers": readers,
        "events": events,
        "pace_ms": pace_ms,
        "join": join,
        "upstream_cpu_s": round(upstream_cpu, 3),
        "tree": tree,
        "results": results,
    }


def label(figures: dict[str, Any]) -> str:
    """The key a run is saved under in ``results.json``'s ``fanout``: one per mode."""
    return f"{figures['readers']:,} readers, {figures['events']:,} events, join {figures['join']}"
