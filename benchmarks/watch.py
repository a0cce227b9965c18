"""The watch scenario: many paced streams watched at once, against one WorkerStream each.

    python -m benchmarks watch                  1,000 workers x 1,000 events at 50/s, 3 rounds
    python -m benchmarks watch --smoke          20 workers x 100 events (2 s): only that it runs
    python -m benchmarks.watch CONSUMER JOB     one measurement, in this process (JSON out)

The replay server (``benchmarks/server.py``, its own process) paces each
stream at ``pace_ms`` and stamps every delta with ``time.monotonic_ns()`` at
sending. Two consumers read the same streams, each in a fresh process, rounds
interleaved:

- ``streams``: one task per stream in an anyio task group, ``async for event
  in stream`` (what a user writes without ``watch``);
- ``watch``: the same streams given to ``client.workers.watch``, one ``async
  for`` over the merged items.

Both open their streams the same way (a POST each; the server gives every
stream one worker id, so each stream is made with its own id), and both
measure lag (receive minus send) where the consumer gets the event.

The machine is shared, so absolute figures drift from minute to minute; what
is compared is each round's pair (the two consumers one after the other,
their order alternating from round to round): ``ratios`` are watch / streams
for lag p50, lag p99 and CPU per event, per round and their median. The
targets: every event delivered once, lag p50 and p99 within 1.2x of
``streams``, CPU per event within 1.05x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from array import array
from typing import Any

from .consumers import cpu_seconds, vm_hwm_kib
from .suite import replay_server, server_cpu

CONSUMERS = ("streams", "watch")
HEAD_AND_TAIL = 4  # start, text-start ... text-end, finish


async def _open(client: Any, spec: str, n: int) -> list[Any]:
    """``n`` streams of ``spec``, each a WorkerStream with an id of its own."""
    import anyio

    from handinger_stream import WorkerStream

    streams: list[Any] = [None] * n
    limiter = anyio.CapacityLimiter(100)

    async def one(i: int) -> None:
        async with limiter:
            response = await client.request(
                "POST", "/api/workers", json={"input": spec, "stream": True}, stream=True
            )
            streams[i] = WorkerStream(
                response, worker_id=f"wrk_{i:05d}", policy=client.stream_policy, from_start=True
            )

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return streams


def _stamp(event: Any) -> int | None:
    metadata = getattr(event, "provider_metadata", None)
    if isinstance(metadata, dict) and "b" in metadata:
        return int(metadata["b"]["t"])
    return None


async def run(consumer: str, base_url: str, spec: str, workers: int) -> dict[str, Any]:
    import anyio

    from handinger_stream import AsyncHandinger, TextDeltaEvent

    lags: array[int] = array("q")
    counts = [0] * workers
    async with AsyncHandinger(api_key="bench", base_url=base_url) as client:
        streams = await _open(client, spec, workers)
        baseline_kib = vm_hwm_kib()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        if consumer == "streams":

            async def read(i: int, stream: Any) -> None:
                seen = 0
                async for event in stream:
                    seen += 1
                    if type(event) is TextDeltaEvent:
                        stamp = _stamp(event)
                        if stamp is not None:
                            lags.append(time.monotonic_ns() - stamp)
                counts[i] = seen

            async with anyio.create_task_group() as tg:
                for i, stream in enumerate(streams):
                    tg.start_soon(read, i, stream)
        else:
            index = {stream.worker_id: i for i, stream in enumerate(streams)}
            async with client.workers.watch(streams, telemetry=False) as watch:
                async for item in watch:
                    counts[index[item.worker_id]] += 1
                    event = item.event
                    if type(event) is TextDeltaEvent:
                        stamp = _stamp(event)
                        if stamp is not None:
                            lags.append(time.monotonic_ns() - stamp)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    ordered = sorted(lags)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6 if ordered else 0.0

    return {
        "consumer": consumer,
        "workers": workers,
        "events": sum(counts),
        "per_worker": sorted(set(counts)),
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_us_per_event": cpu / max(sum(counts), 1) * 1e6,
        "lag_ms": {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)},
        "peak_rss_kib": vm_hwm_kib(),
        "baseline_rss_kib": baseline_kib,
    }


def measure(consumer: str, base_url: str, spec: str, workers: int) -> dict[str, Any]:
    job = json.dumps({"base_url": base_url, "spec": spec, "workers": workers})
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.watch", consumer, job],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        return {"consumer": consumer, "failed": (done.stderr.strip().splitlines() or ["?"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def scenario(*, workers: int, events: int, pace_ms: float, rounds: int) -> dict[str, Any]:
    """Both consumers, ``rounds`` times each, interleaved; the medians and the targets."""
    spec = f"n={events}&pace_ms={pace_ms:g}&stamp=1"
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONSUMERS}
    server_share: list[float] = []
    with replay_server() as (base_url, server):
        for r in range(rounds):
            # Alternating which goes first: neither always gets the fresher (or busier) minute.
            for consumer in CONSUMERS if r % 2 == 0 else CONSUMERS[::-1]:
                cpu0, t0 = server_cpu(server), time.perf_counter()
                result = measure(consumer, base_url, spec, workers)
                server_share.append((server_cpu(server) - cpu0) / (time.perf_counter() - t0))
                runs[consumer].append(result)
                print(f"  {consumer:8} {json.dumps(result)}", file=sys.stderr, flush=True)
            pair = _ratios(runs["watch"][-1], runs["streams"][-1])
            if pair:
                print(f"  round {r + 1}: watch/streams {json.dumps(pair)}", file=sys.stderr)
    summary: dict[str, Any] = {
        "spec": spec,
        "workers": workers,
        "rounds": rounds,
        "server_cpu_share": statistics.median(server_share),
        "consumers": {},
    }
    expected = [events + HEAD_AND_TAIL]
    for consumer, results in runs.items():
        ok = [r for r in results if "failed" not in r]
        if not ok:
            summary["consumers"][consumer] = {"failed": results[0]["failed"]}
            continue
        summary["consumers"][consumer] = {
            "every_event_once": all(r["per_worker"] == expected for r in ok),
            "events": ok[0]["events"],
            "cpu_us_per_event": statistics.median(r["cpu_us_per_event"] for r in ok),
            "lag_p50_ms": statistics.median(r["lag_ms"]["p50"] for r in ok),
            "lag_p99_ms": statistics.median(r["lag_ms"]["p99"] for r in ok),
            "wall_s": statistics.median(r["wall_s"] for r in ok),
            "peak_rss_mib": statistics.median(r["peak_rss_kib"] for r in ok) / 1024,
        }
    body = summary["consumers"]
    paired = zip(runs["watch"], runs["streams"], strict=True)
    pairs = [p for w, s in paired if (p := _ratios(w, s))]
    if all("failed" not in body[c] for c in CONSUMERS) and pairs:
        # The median of the rounds' own ratios: each pair ran within a minute of each other.
        ratios = {key: statistics.median(p[key] for p in pairs) for key in pairs[0]}
        summary["ratios"] = {"median": ratios, "rounds": pairs}
        summary["targets"] = {
            "every event delivered once": body["watch"]["every_event_once"],
            "lag p50 within 1.2x of one WorkerStream each": ratios["lag_p50"] <= 1.2,
            "lag p99 within 1.2x of one WorkerStream each": ratios["lag_p99"] <= 1.2,
            "CPU per event within 1.05x of one WorkerStream each": ratios["cpu"] <= 1.05,
        }
        summary["cpu_ratio"] = ratios["cpu"]
    return summary


def _ratios(watch: dict[str, Any], streams: dict[str, Any]) -> dict[str, float]:
    """One round's watch / streams: lag p50, lag p99, CPU per event ({} if either failed)."""
    if "failed" in watch or "failed" in streams:
        return {}

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b > 0 else float("inf")

    return {
        "lag_p50": ratio(watch["lag_ms"]["p50"], streams["lag_ms"]["p50"]),
        "lag_p99": ratio(watch["lag_ms"]["p99"], streams["lag_ms"]["p99"]),
        "cpu": ratio(watch["cpu_us_per_event"], streams["cpu_us_per_event"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks watch")
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=1000, help="events per worker")
    parser.add_argument("--pace-ms", type=float, default=20.0, help="20 ms: 50 events/s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="20 workers x 2 s, one round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.workers, args.events, args.rounds = 20, 100, 1
    result = scenario(
        workers=args.workers, events=args.events, pace_ms=args.pace_ms, rounds=args.rounds
    )
    print(json.dumps(result, indent=1))
    failed = [c for c, body in result["consumers"].items() if "failed" in body]
    broken = [c for c, body in result["consumers"].items() if not body.get("every_event_once")]
    if failed or broken:
        sys.exit(f"benchmarks watch: failed: {failed}, events lost or repeated: {broken}")
    return result


def _one() -> None:
    consumer, job = sys.argv[1], json.loads(sys.argv[2])
    import anyio

    # Imports before the clock starts: start-up is not the subject.
    import handinger_stream  # noqa: F401

    result = anyio.run(run, consumer, job["base_url"], job["spec"], job["workers"])
    print(json.dumps(result))


if __name__ == "__main__":
    _one()
