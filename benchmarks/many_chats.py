"""Many chats in one relay process: 1,000 turns, each joined by 10 SSE readers.

``python -m benchmarks many-chats [--chats 1000 --readers-per-chat 10 --events 400
--pace-ms 500 --store redis|memory|both]``

For each store, in processes of their own: the benchmark server (``server.py``,
its events stamped with ``time.monotonic_ns()``), ONE relay (``handinger-stream
relay``, ``--redis`` on a redis-server started here for RedisStore) and this
process, the load generator, on raw asyncio sockets (``relay.py``'s ``_Reader``).

Active phase: the turns start (``POST /api/chat``, ``--batch`` at a time, each
batch once its turns have sent their first event), then every chat is joined
by its readers (``GET /api/chat/{id}/stream``, ``--joining`` at a time, each
counted joined at its response's first byte), then every stream runs to its end.

Idle phase, in the same relay (or alone, in a fresh one: ``--no-active``): as many
turns again, each sending a delta every ``--idle-pause-s`` (30 s), joined by as many
readers, who then wait on turns that send next to nothing: the resident set with them,
less that before them, per reader is an idle reader's memory. Everything is closed after.

The relay is started by ``relay.py``'s ``_start_relay`` with its per-principal limits
lifted (``_LIFTED``). The shared machine makes every figure noisy.

Reported per store: whether every reader got every event (and which chats not),
judged by content: the turn's whole text, its last id and ``[DONE]`` (the relay merges
a backlog's deltas into fewer events); the responses that were not a 200 (a 204: the
reader came after its turn had ended);
lag (receipt less the upstream's stamp) p50/p99 over the events sent after the
reader joined, and over those sent after every reader had joined; the relay's
and redis-server's CPU per delivered event (every SSE stream counts, the POSTs'
too); the relay's resident set at each step; Redis clients (``INFO clients``,
less this process's own one) at their peak and when every reader had joined,
against the chats and the readers; this process's own CPU share (near 1.0: the
load generator, not the relay, may be what lags).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .relay import (
    ROOT,
    _chat_requests,
    _drain,
    _percentile,
    _Reader,
    _redis_server,
    _rss_bytes,
    _start_relay,
)
from .suite import replay_server, server_cpu

# Around the deltas: start, text-start, text-end and finish; then the relay's end marker.
AROUND = 4 + 1
MIB = 1024 * 1024
IDLE_DELTAS = 100
_ID = re.compile(rb"(?:^|\n)id: (\d+)\n")


@dataclass
class _Chat:
    post: bytes
    get: bytes
    first: _Joining
    first_done: asyncio.Future[None]
    readers: list[_Joining] = field(default_factory=list)
    transports: list[asyncio.Transport] = field(default_factory=list)

    @property
    def chat_id(self) -> str:
        return self.get.split(b"/")[3].decode()


class _Joining(_Reader):
    """A reader that knows when its response began, and what text and last id it got.

    One whose response is not a 200 (a 204: the turn had ended; a 429: refused) is done
    at once, its status kept. The relay sends a batch of 8 entries or more compacted (a
    joiner's history, a slow reader's backlog: adjacent deltas merged into one, with the
    id of the last): so "every event" is checked as the whole text and the last id, not
    as a count of events.
    """

    def __init__(self, request: bytes, done: asyncio.Future[None]) -> None:
        super().__init__(request, done, deltas=True)
        self.responded: asyncio.Future[None] = done.get_loop().create_future()
        self.status = 0
        self.last_id = -1
        self.rest = b""

    def data_received(self, data: bytes) -> None:
        if not self.responded.done():
            self.responded.set_result(None)
            self.status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else -1
            if self.status != 200:
                if not self.done.done():
                    self.done.set_result(None)
                return
        super().data_received(data)
        data = self.rest + data
        cut = data.rfind(b"\n\n") + 2
        whole, self.rest = data[:cut], data[cut:]
        ids = _ID.findall(whole)
        if ids:
            self.last_id = int(ids[-1])

    @property
    def text(self) -> bytes:
        return b"".join(text for text, _, _ in self.deltas or ())


# Without access control the relay still holds its one principal to ``Limits()``'s
# defaults (2 turns at once, 10 a minute, 100 chats): a thousand chats need them raised.
_LIFTED = tuple(
    arg
    for flag in ("--max-concurrent-turns", "--turns-per-minute", "--max-chats")
    for arg in (flag, str(10**9))
)


class _Watch:
    """Samples the relay's resident set and Redis's clients every 0.2 s, in a thread
    (a busy event loop would sample late); keeps the peaks."""

    def __init__(self, relay_pid: int, redis_url: str | None) -> None:
        self.relay_pid = relay_pid
        self.redis: Any = None
        if redis_url is not None:
            import redis

            self.redis = redis.Redis.from_url(redis_url)
            self.redis.client_setname("many-chats-benchmark")
        self.peak_rss = 0
        self.peak_clients = 0
        self.peak_blocked = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def clients(self) -> tuple[int, int]:
        """Redis clients other than this one, and how many of them are blocked (XREAD)."""
        if self.redis is None:
            return 0, 0
        info = self.redis.info("clients")
        return int(info["connected_clients"]) - 1, int(info["blocked_clients"])

    def sample(self) -> dict[str, Any]:
        rss = _rss_bytes(self.relay_pid)
        clients, blocked = self.clients()
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_clients = max(self.peak_clients, clients)
        self.peak_blocked = max(self.peak_blocked, blocked)
        out: dict[str, Any] = {"rss_mib": round(rss / MIB, 1)}
        if self.redis is not None:
            out.update(redis_clients=clients, redis_blocked=blocked)
        return out

    def peaks(self) -> dict[str, Any]:
        """The peaks since the last call (then reset to what is now)."""
        out: dict[str, Any] = {"rss_peak_mib": round(self.peak_rss / MIB, 1)}
        if self.redis is not None:
            out.update(redis_clients_peak=self.peak_clients, redis_blocked_peak=self.peak_blocked)
        self.peak_rss = self.peak_clients = self.peak_blocked = 0
        self.sample()
        return out

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            with contextlib.suppress(Exception):
                self.sample()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        if self.redis is not None:
            self.redis.close()


async def _open(port: int, reader: _Joining, timeout: float) -> asyncio.Transport:
    """Connect a reader; return once its response has begun."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(lambda: reader, "127.0.0.1", port)
    assert isinstance(transport, asyncio.Transport)
    await asyncio.wait_for(asyncio.shield(reader.responded), timeout)
    return transport


async def _start_turns(
    port: int, chats: int, events: int, pace_ms: float, batch: int
) -> list[_Chat]:
    """Start the turns, ``batch`` at a time: the next batch once this one's turns run."""
    loop = asyncio.get_running_loop()
    started: list[_Chat] = []
    for begin in range(0, chats, batch):
        group: list[_Chat] = []
        for _ in range(begin, min(begin + batch, chats)):
            post, get = _chat_requests(port, events, pace_ms)
            done: asyncio.Future[None] = loop.create_future()
            group.append(_Chat(post, get, _Joining(post, done), done))
        transports = await asyncio.gather(*(_open(port, c.first, 120) for c in group))
        # The turns have begun (their first event came), or were refused (said below).
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    asyncio.wait({c.first.started, c.first_done}, return_when="FIRST_COMPLETED")
                    for c in group
                )
            ),
            120,
        )
        for chat, transport in zip(group, transports, strict=True):
            chat.transports.append(transport)
        started += group
    ids = {c.chat_id for c in started}
    assert len(ids) == len(started), "two chats got the same id"
    return started


async def _join(port: int, chats: list[_Chat], per_chat: int, joining: int) -> float:
    """Join ``per_chat`` readers to every chat, ``joining`` at a time; the seconds it took."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(joining)
    t0 = time.perf_counter()

    async def one(chat: _Chat) -> None:
        async with gate:
            reader = _Joining(chat.get, loop.create_future())
            chat.readers.append(reader)
            chat.transports.append(await _open(port, reader, 300))

    # Round-robin over the chats: each chat's readers join spread over the whole join.
    await asyncio.gather(*(one(chat) for _ in range(per_chat) for chat in chats))
    return time.perf_counter() - t0


def _close(chats: list[_Chat]) -> None:
    for chat in chats:
        for transport in chat.transports:
            transport.close()


def _text(events: int) -> bytes:
    """The text of a turn of ``events`` deltas (``server.py``'s: ``w{i % 1000} ``)."""
    return b"".join(b"w%d " % (i % 1000) for i in range(events))


def _whole(reader: _Joining, text: bytes, last_id: int) -> bool:
    return reader.complete and reader.text == text and reader.last_id == last_id


def _tally(chats: list[_Chat], events: int, connected_ns: int) -> dict[str, Any]:
    text = _text(events)
    short = [
        c.chat_id
        for c in chats
        if not _whole(c.first, text, c.first.last_id)
        or any(not _whole(r, text, c.first.last_id) for r in c.readers)
    ]
    readers_ = [r for c in chats for r in c.readers]
    statuses = Counter(r.status for c in chats for r in (c.first, *c.readers))
    tally: dict[str, Any] = {
        "every_reader_got_every_event": not short,
        "readers_complete": sum(_whole(r, text, c.first.last_id) for c in chats for r in c.readers),
        "readers_with_done": sum(r.complete for r in readers_),
        "readers_without_events": sum(r.events == 0 for r in readers_),
        "readers_short_text": sum(r.complete and r.text != text for r in readers_),
        "posts_complete": sum(_whole(c.first, text, c.first.last_id) for c in chats),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "chats_short": len(short),
        "chats_short_ids": short[:10],
        # Events as sent to a reader (a compacted batch counts once): what the CPU divides.
        "events_per_post_min_max": [
            min(c.first.events for c in chats),
            max(c.first.events for c in chats),
        ],
    }
    readers = readers_
    live = [
        received - sent
        for r in readers
        for sent, received in r.stamps
        if r.first_byte_ns is not None and sent >= r.first_byte_ns
    ]
    after_all = [
        received - sent for r in readers for sent, received in r.stamps if sent >= connected_ns
    ]
    return {
        **tally,
        "lag_ms_p50": _percentile(live, 50),
        "lag_ms_p99": _percentile(live, 99),
        "lag_samples": len(live),
        "lag_after_all_joined_ms_p50": _percentile(after_all, 50),
        "lag_after_all_joined_ms_p99": _percentile(after_all, 99),
        "lag_after_all_joined_samples": len(after_all),
    }


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Options:
    chats: int
    per_chat: int
    events: int
    pace_ms: float
    batch: int
    joining: int
    idle_pause_s: float
    idle: bool
    active: bool = True


async def _active(
    port: int, o: _Options, watch: _Watch, relay_pid: int, redis_pid: int | None
) -> dict[str, Any]:
    watch.peaks()
    marks: dict[str, Any] = {"before": watch.sample()}
    cpu0 = _cpu(relay_pid), (_cpu(redis_pid) if redis_pid else 0.0), time.process_time()
    wall0 = time.perf_counter()
    chats = await _start_turns(port, o.chats, o.events, o.pace_ms, o.batch)
    marks["turns_started"] = watch.sample()
    turns_s = time.perf_counter() - wall0
    join_s = await _join(port, chats, o.per_chat, o.joining)
    connected_ns = time.monotonic_ns()
    marks["readers_joined"] = watch.sample()
    dones = [c.first_done for c in chats] + [r.done for c in chats for r in c.readers]
    await asyncio.wait_for(asyncio.gather(*dones), 900)
    wall = time.perf_counter() - wall0
    relay_cpu = _cpu(relay_pid) - cpu0[0]
    redis_cpu = (_cpu(redis_pid) - cpu0[1]) if redis_pid else None
    own_cpu = time.process_time() - cpu0[2]
    marks["turns_ended"] = watch.sample()
    _close(chats)
    await asyncio.sleep(1.0)
    marks["readers_closed"] = watch.sample()
    # Delivered: the events of the turn each complete stream stands for (a compacted batch
    # stands for all it merged), a cut one's as counted; sent: the SSE events as framed.
    streams = [s for c in chats for s in (c.first, *c.readers)]
    delivered = sum(o.events + AROUND if s.complete else s.events for s in streams)
    sent = sum(s.events for s in streams)
    readers = o.chats * o.per_chat
    result = _tally(chats, o.events, connected_ns)
    rss = {k: v["rss_mib"] for k, v in marks.items()}
    result.update(
        readers=readers,
        turns_start_s=round(turns_s, 2),
        join_s=round(join_s, 2),
        wall_s=round(wall, 2),
        delivered_events=delivered,
        sse_events_sent=sent,
        relay_cpu_s=round(relay_cpu, 2),
        relay_cpu_share=round(relay_cpu / wall, 2),
        relay_cpu_us_per_delivered_event=round(relay_cpu / delivered * 1e6, 3),
        redis_cpu_s=None if redis_cpu is None else round(redis_cpu, 2),
        redis_cpu_us_per_delivered_event=None
        if redis_cpu is None
        else round(redis_cpu / delivered * 1e6, 3),
        load_generator_cpu_share=round(own_cpu / wall, 2),
        rss_mib=rss,
        **watch.peaks(),
        # The readers' own cost (the turns were running already), and with the turns' too.
        memory_kib_per_reader=round(
            (rss["readers_joined"] - rss["turns_started"]) * 1024 / readers, 1
        ),
        memory_kib_per_reader_with_turns=round(
            (rss["readers_joined"] - rss["before"]) * 1024 / readers, 1
        ),
        marks=marks,
    )
    return result


async def _idle(port: int, o: _Options, watch: _Watch) -> dict[str, Any]:
    # A delta every idle_pause_s (the first at once): the readers wait on a turn that sends
    # next to nothing. (A turn silent for a minute is not: the relay's client counts ~60 s
    # without an event as a stall and reconnects, and server.py answers a reconnection
    # with its default replay: 1,000 deltas, then the end.)
    pace_ms = o.idle_pause_s * 1000
    watch.peaks()
    marks: dict[str, Any] = {"before": watch.sample()}
    chats = await _start_turns(port, o.chats, IDLE_DELTAS, pace_ms, o.batch)
    await asyncio.sleep(1.0)
    marks["turns_started"] = watch.sample()
    join_s = await _join(port, chats, o.per_chat, o.joining)
    await asyncio.sleep(2.0)  # settled: what the readers hold while nothing comes
    marks["readers_joined"] = watch.sample()
    readers = [r for c in chats for r in c.readers]
    waiting = sum(not r.done.done() for r in readers)
    _close(chats)
    await asyncio.sleep(1.0)
    marks["readers_closed"] = watch.sample()
    rss = {k: v["rss_mib"] for k, v in marks.items()}
    return {
        "readers": len(readers),
        "readers_waiting": waiting,  # connected, the turn running, nothing sent to them
        "readers_with_the_first_event": sum(r.events >= 1 for r in readers),
        "readers_ended": sum(r.complete for r in readers),  # [DONE] came: not idle
        # A reader of this turn has at most its deltas so far and AROUND: more, and it was not.
        "reader_events_max": max((r.events for r in readers), default=0),
        "statuses": {str(k): v for k, v in sorted(Counter(r.status for r in readers).items())},
        "join_s": round(join_s, 2),
        "rss_mib": rss,
        "memory_kib_per_idle_reader": round(
            (rss["readers_joined"] - rss["turns_started"]) * 1024 / max(len(readers), 1), 1
        ),
        **watch.peaks(),
        "marks": marks,
    }


@contextlib.contextmanager
def _store(store: str) -> Iterator[tuple[str | None, subprocess.Popen[str] | None]]:
    if store == "memory":
        yield None, None
        return
    with _redis_server() as (url, process):
        yield url, process


def _measure(store: str, upstream: str, o: _Options) -> dict[str, Any]:
    print(f"# {store}: {o.chats} chats x {o.per_chat} readers", file=sys.stderr, flush=True)
    with _store(store) as (redis_url, redis_process):
        relay, port = _start_relay(upstream, redis_url, _LIFTED)
        said: list[str] = []
        threading.Thread(target=_drain, args=(relay.stderr, said), daemon=True).start()
        watch = _Watch(relay.pid, redis_url)
        result: dict[str, Any] = {"store": store, "chats": o.chats, "readers_per_chat": o.per_chat}
        try:
            time.sleep(0.5)
            redis_pid = redis_process.pid if redis_process else None
            if o.active:
                result["active"] = asyncio.run(_active(port, o, watch, relay.pid, redis_pid))
                print(f"# {store}: active phase done", file=sys.stderr, flush=True)
            if o.idle and o.active:
                # The active chats' followers go first (a 2 s block, then 5 s of linger):
                # each phase's Redis clients are its own.
                time.sleep(8)
            if o.idle:
                result["idle"] = asyncio.run(_idle(port, o, watch))
        except Exception as exc:  # said in the report, with what the relay said
            result["failed"] = f"{type(exc).__name__}: {exc}"
        finally:
            watch.close()
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(30)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait(10)
    # What the relay said (warnings: a reader cut, a lease lost, Redis unavailable), by kind.
    kinds = Counter(re.sub(r"bench-\d+|Task-\d+|\d+", "N", line) for line in said)
    result["relay_said_count"] = len(said)
    result["relay_said"] = dict(kinds.most_common(12))
    return result


def _code() -> dict[str, Any]:
    """The relay measured: the working tree's, so the commit and the package's files changed."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.rstrip()

    changed = git("status", "--porcelain", "--", "handinger_stream").splitlines()
    return {"commit": git("rev-parse", "HEAD").strip(), "changed": [line[3:] for line in changed]}


def run(
    chats: int = 1000,
    per_chat: int = 10,
    events: int = 200,
    pace_ms: float = 100.0,
    stores: tuple[str, ...] = ("redis",),
    batch: int = 50,
    joining: int = 100,
    idle_pause_s: float = 30.0,
    idle: bool = True,
    active: bool = True,
) -> dict[str, Any]:
    """Measure each store; the results as a dict."""
    o = _Options(chats, per_chat, events, pace_ms, batch, joining, idle_pause_s, idle, active)
    out: dict[str, Any] = {
        "chats": chats,
        "readers_per_chat": per_chat,
        "events": events,
        "pace_ms": pace_ms,
        "cores": os.cpu_count(),
        "code": _code(),
        "results": [],
    }
    with replay_server() as (upstream, server):
        for store in stores:
            cpu0 = server_cpu(server)
            result = _measure(store, upstream, o)
            result["upstream_server_cpu_s"] = round(server_cpu(server) - cpu0, 2)
            out["results"].append(result)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.many_chats")
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--readers-per-chat", type=int, default=10)
    # 200-second turns: on 2 cores, 10,000 readers take longer than a shorter turn to join.
    parser.add_argument("--events", type=int, default=400, help="deltas per turn")
    parser.add_argument("--pace-ms", type=float, default=500.0, help="between a turn's deltas")
    parser.add_argument("--store", choices=["redis", "memory", "both"], default="redis")
    parser.add_argument("--batch", type=int, default=50, help="turns started at a time")
    parser.add_argument("--joining", type=int, default=100, help="readers joining at a time")
    parser.add_argument(
        "--idle-pause-s",
        type=float,
        default=30.0,
        help="idle phase: seconds between the turns' deltas (under 60: see _idle)",
    )
    parser.add_argument("--no-idle", action="store_true", help="skip the idle phase")
    parser.add_argument(
        "--no-active", action="store_true", help="only the idle phase (in a fresh relay)"
    )
    args = parser.parse_args(argv)
    stores = ("redis", "memory") if args.store == "both" else (args.store,)
    result = run(
        args.chats,
        args.readers_per_chat,
        args.events,
        args.pace_ms,
        stores,
        args.batch,
        args.joining,
        args.idle_pause_s,
        not args.no_idle,
        not args.no_active,
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
