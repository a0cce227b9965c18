"""OpenTelemetry for watched streams: spans and metrics, through the SDK's in-memory exporters.

And the other half of the promise: without the extra nothing of OpenTelemetry
is imported, and a watch runs all the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from handinger_stream import AsyncHandinger, InvalidRequestError, NotFoundError, Worker
from handinger_stream.emulator import Emulator
from handinger_stream.otel import METRICS, SPAN_NAME, Telemetry
from tests.conftest import API_KEY
from tests.helpers.emulators import emulator_fixture

FAULT = "x-emulator-fault"


emu = emulator_fixture(api_key=API_KEY, retry_ms=5, keepalive_interval=0.05)


class Recorded:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.telemetry = Telemetry(
            tracer_provider=tracer_provider,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
        )

    def finished(self) -> dict[str, ReadableSpan]:
        spans = self.spans.get_finished_spans()
        assert all(span.name == SPAN_NAME for span in spans)
        return {str(span.attributes["handinger.worker.id"]): span for span in spans}  # type: ignore[index]

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        assert data is not None
        out: dict[str, list[Any]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out[metric.name] = list(metric.data.data_points)
        return out


def test_each_stream_is_a_span_and_the_metrics_add_up(emu: Emulator) -> None:
    recorded = Recorded()

    async def main() -> tuple[list[str], str, dict[str, int]]:
        async with AsyncHandinger(api_key=API_KEY, base_url=emu.base_url) as client:
            ids = [
                (await client.workers.create(input=f"Metered {i}", budget="low")).id
                for i in range(3)
            ]
            failing = (
                await client.workers.create(
                    input="Doomed", budget="low", extra_headers={FAULT: "error-after=9"}
                )
            ).id
            counts: dict[str, int] = {}
            # One connection at a time, so the queued fault cuts the first worker's replay.
            emu.inject_fault("drop-after=10")
            watch = client.workers.watch(
                [*ids, failing, "wrk_missing"], max_concurrency=1, telemetry=recorded.telemetry
            )
            async with watch:
                async for item in watch:
                    counts[item.worker_id] = counts.get(item.worker_id, 0) + 1
            return ids, failing, counts

    ids, failing, counts = anyio.run(main)
    spans = recorded.finished()
    assert set(spans) == {*ids, failing, "wrk_missing"}
    for worker_id in ids:
        attributes = spans[worker_id].attributes or {}
        assert attributes["handinger.worker.status"] == "completed"
        assert attributes["handinger.stream.events"] == counts[worker_id]
        assert attributes["gen_ai.usage.output_tokens"] > 0  # type: ignore[operator]
        assert attributes["gen_ai.usage.input_tokens"] > 0  # type: ignore[operator]
        assert attributes["handinger.worker.cost_usd"] > 0  # type: ignore[operator]
        assert attributes["gen_ai.provider.name"] == "handinger"
        assert spans[worker_id].status.status_code != StatusCode.ERROR
    assert (spans[ids[0]].attributes or {})["handinger.stream.reconnects"] == 1
    assert (spans[ids[1]].attributes or {})["handinger.stream.reconnects"] == 0
    failed = spans[failing]
    assert (failed.attributes or {})["handinger.worker.status"] == "failed"
    assert (failed.attributes or {})["error.type"] == "worker_failed"
    assert failed.status.status_code == StatusCode.ERROR
    lost = spans["wrk_missing"]
    assert (lost.attributes or {})["handinger.worker.status"] == "lost"
    assert (lost.attributes or {})["error.type"] == "NotFoundError"
    assert lost.status.status_code == StatusCode.ERROR

    metrics = recorded.metrics()
    events = sum(n for worker_id, n in counts.items() if worker_id != "wrk_missing")
    (received,) = metrics[METRICS["events"]]
    assert received.value == events
    (first,) = metrics[METRICS["time_to_first_chunk"]]
    assert first.count == 4 and first.sum > 0
    (per_chunk,) = metrics[METRICS["time_per_output_chunk"]]
    assert per_chunk.count == events - 4
    (reconnects,) = metrics[METRICS["reconnects"]]
    assert reconnects.value == 1
    (still_open,) = metrics[METRICS["open"]]
    assert still_open.value == 0
    durations = metrics[METRICS["duration"]]
    assert sum(point.count for point in durations) == 5
    assert {point.attributes.get("error.type") for point in durations} == {
        None,
        "worker_failed",
        "NotFoundError",
    }
    tokens = metrics[METRICS["token_usage"]]
    assert {point.attributes["gen_ai.token.type"] for point in tokens} == {"input", "output"}
    # The three that completed reported usage; the failed one failed before it could.
    assert [point.count for point in tokens] == [3, 3]


def test_streams_open_counts_the_streams_being_read(emu: Emulator) -> None:
    recorded = Recorded()

    async def main() -> list[int]:
        seen: list[int] = []
        async with AsyncHandinger(api_key=API_KEY, base_url=emu.base_url) as client:
            ids = [(await client.workers.create(input=f"Open {i}")).id for i in range(4)]
            async with client.workers.watch(ids, telemetry=recorded.telemetry) as watch:
                async for _ in watch:
                    (point,) = recorded.metrics()[METRICS["open"]]
                    seen.append(point.value)
        return seen

    seen = anyio.run(main)
    assert max(seen) >= 1 and min(seen) >= 0
    (point,) = recorded.metrics()[METRICS["open"]]
    assert point.value == 0


def python(*pieces: str) -> subprocess.CompletedProcess[str]:
    """Run the pieces of code (each dedented) as one script in a fresh interpreter."""
    code = "\n".join(textwrap.dedent(piece) for piece in pieces)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ
    )


WATCH_ONE = """
    import anyio
    from handinger_stream import AsyncHandinger
    from handinger_stream.emulator import Emulator

    async def main():
        async with Emulator() as emu:
            async with AsyncHandinger(**emu.client_options()) as client:
                worker = await client.workers.create(input="Hi", budget="low")
                async with client.workers.watch([worker.id]) as watch:
                    events = [item async for item in watch]
                assert events and watch.workers[worker.id].status == "completed"
    anyio.run(main)
"""


def test_without_opentelemetry_nothing_is_imported_and_a_watch_runs() -> None:
    done = python(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        """,
        WATCH_ONE,
        """
        loaded = [m for m in sys.modules if m.startswith("opentelemetry")]
        assert loaded == ["opentelemetry"] and sys.modules["opentelemetry"] is None, loaded
        assert "handinger_stream.otel" not in sys.modules
        print("ok")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_installed_but_unused_opentelemetry_is_not_imported() -> None:
    done = python(
        WATCH_ONE,
        """
import sys
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
assert "handinger_stream.otel" not in sys.modules
print("ok")
""",
    )
    assert done.returncode == 0, done.stderr


def test_asking_for_telemetry_without_the_extra_says_what_to_install() -> None:
    done = python(
        """
        import sys
        sys.modules["opentelemetry"] = None
        from handinger_stream import AsyncHandinger, InvalidRequestError, NotFoundError
        try:
            AsyncHandinger(api_key="k").workers.watch([], telemetry=True)
        except InvalidRequestError as exc:
            print(exc)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "handinger-stream[otel]" in done.stdout


def test_an_app_that_configured_opentelemetry_gets_spans_by_default() -> None:
    done = python(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        """,
        WATCH_ONE,
        """
spans = exporter.get_finished_spans()
assert [s.name for s in spans] == ["handinger.stream"], spans
assert spans[0].attributes["handinger.worker.status"] == "completed"
print("ok")
""",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_telemetry_false_records_nothing(emu: Emulator) -> None:
    recorded = Recorded()

    async def main() -> None:
        async with AsyncHandinger(api_key=API_KEY, base_url=emu.base_url) as client:
            worker = await client.workers.create(input="Quiet")
            async with client.workers.watch([worker.id], telemetry=False) as watch:
                assert [item async for item in watch]
            with pytest.raises(InvalidRequestError):
                client.workers.watch("x")

    anyio.run(main)
    assert recorded.spans.get_finished_spans() == ()


def test_every_stream_a_client_opens_is_a_span_not_only_watched_ones(emu: Emulator) -> None:
    recorded = Recorded()

    async def main() -> Worker:
        async with AsyncHandinger(
            api_key=API_KEY, base_url=emu.base_url, telemetry=recorded.telemetry
        ) as client:
            stream = await client.workers.create(input="Spans please", stream=True)
            worker = await stream.get_final_worker()
            await client.workers.retrieve(worker.id)  # a JSON answer: no stream, no span
            replay = await client.workers.retrieve(worker.id, stream=True)
            async for _ in replay:
                break  # left early: the span ends with the stream
            with pytest.raises(NotFoundError):
                await client.workers.retrieve("wrk_nobody", stream=True)
            return worker

    worker = anyio.run(main)
    spans = recorded.spans.get_finished_spans()
    assert [s.attributes["handinger.worker.id"] for s in spans] == [  # type: ignore[index]
        worker.id,
        worker.id,
        "wrk_nobody",
    ]
    first, early, missing = spans
    assert first.attributes is not None and early.attributes is not None
    assert first.attributes["handinger.worker.status"] == "completed"
    assert int(str(first.attributes["handinger.stream.events"])) > 10
    assert int(str(early.attributes["handinger.stream.events"])) >= 1
    assert missing.status.status_code is StatusCode.ERROR
    metrics = recorded.metrics()
    assert sum(p.value for p in metrics[METRICS["open"]]) == 0  # every stream closed
