"""OpenTelemetry for workers' streams: a span per stream, and GenAI-style metrics.

Needs the ``otel`` extra (``pip install 'handinger-stream[otel]'``, which
brings ``opentelemetry-api``). This module is imported only when telemetry
is on, so without the extra nothing of OpenTelemetry is imported or paid for.

A client records telemetry for every stream it opens when
``AsyncHandinger(telemetry=True)``, when given a :class:`Telemetry`, or by
default when the application has imported OpenTelemetry itself (then the
global tracer and meter providers are used). ``workers.watch(...,
telemetry=...)`` asks the same for the streams the watch opens.

>>> from opentelemetry.sdk.trace import TracerProvider  # doctest: +SKIP
>>> telemetry = Telemetry(tracer_provider=TracerProvider())  # doctest: +SKIP
>>> client = AsyncHandinger(telemetry=telemetry)  # doctest: +SKIP
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._version import __version__
from ..errors import HandingerError
from ..types.worker import Worker

__all__ = ["METRICS", "SPAN_NAME", "StreamRecorder", "Telemetry", "TelemetryObserver"]

SPAN_NAME = "handinger.stream"
PROVIDER = "handinger"
# Seconds: the GenAI conventions' advice for their time histograms.
_TIME_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)

METRICS = {
    "time_to_first_chunk": "gen_ai.client.operation.time_to_first_chunk",
    "time_per_output_chunk": "gen_ai.client.operation.time_per_output_chunk",
    "duration": "gen_ai.client.operation.duration",
    "token_usage": "gen_ai.client.token.usage",
    "events": "handinger.stream.events",
    "reconnects": "handinger.stream.reconnects",
    "open": "handinger.streams.open",
}
"""What each instrument is called."""

_FLUSH_EVERY = 64  # events counted locally before they are added to the counter


class Telemetry:
    """Where spans and metrics go: the given providers, or the global ones.

    >>> from opentelemetry.sdk.metrics import MeterProvider  # doctest: +SKIP
    >>> Telemetry(meter_provider=MeterProvider())  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(
            "handinger_stream", __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter("handinger_stream", __version__, meter_provider=meter_provider)
        self.time_to_first_chunk = meter.create_histogram(
            METRICS["time_to_first_chunk"],
            unit="s",
            description="Time from asking for a worker's stream to its first event.",
            explicit_bucket_boundaries_advisory=_TIME_BUCKETS,
        )
        self.time_per_output_chunk = meter.create_histogram(
            METRICS["time_per_output_chunk"],
            unit="s",
            description="Time between one event of a stream and the next.",
            explicit_bucket_boundaries_advisory=_TIME_BUCKETS,
        )
        self.duration = meter.create_histogram(
            METRICS["duration"],
            unit="s",
            description="How long a stream was read, from asking for it to its end.",
            explicit_bucket_boundaries_advisory=_TIME_BUCKETS,
        )
        self.token_usage = meter.create_histogram(
            METRICS["token_usage"],
            unit="{token}",
            description="Input and output tokens a worker reported.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.events = meter.create_counter(
            METRICS["events"], unit="{event}", description="Events received from workers' streams."
        )
        self.reconnects = meter.create_counter(
            METRICS["reconnects"],
            unit="{reconnect}",
            description="Times a worker's stream was resumed after a break.",
        )
        self.open = meter.create_up_down_counter(
            METRICS["open"], unit="{stream}", description="Workers' streams being read now."
        )
        self.attributes: dict[str, str] = {
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.operation.name": "invoke_agent",
        }

    def stream(self, worker_id: str, *, opened: float | None = None) -> TelemetryObserver:
        """Start observing one worker's stream (``opened``: when it was asked for, monotonic)."""
        return TelemetryObserver(self, worker_id, monotonic() if opened is None else opened)


class TelemetryObserver:
    """One stream's span, and its share of the metrics: the stream's
    :class:`~handinger_stream.client.stream.StreamObserver`, told of arrivals and of its end."""

    __slots__ = ("_flushed", "_last", "_opened", "_reconnects", "_span", "_tel", "events")

    def __init__(self, telemetry: Telemetry, worker_id: str, opened: float) -> None:
        self._tel = telemetry
        self._opened = opened
        self._last: float | None = None
        self._reconnects = 0
        self._flushed = 0
        self.events = 0
        self._span = telemetry.tracer.start_span(
            SPAN_NAME,
            kind=SpanKind.CLIENT,
            attributes={
                **telemetry.attributes,
                "handinger.worker.id": worker_id,
                "gen_ai.conversation.id": worker_id,
            },
        )
        telemetry.open.add(1, telemetry.attributes)

    def arrived(self, n: int, now: float, reconnects: int) -> None:
        """``n`` events arrived together at ``now`` (monotonic); the stream resumed
        ``reconnects`` times so far."""
        tel = self._tel
        last = self._last
        per_chunk = tel.time_per_output_chunk.record
        if last is None:
            tel.time_to_first_chunk.record(now - self._opened, tel.attributes)
        else:
            per_chunk(now - last, tel.attributes)
        for _ in range(n - 1):  # the others came with it
            per_chunk(0.0, tel.attributes)
        self._last = now
        self.events += n
        if self.events - self._flushed >= _FLUSH_EVERY:
            self._flush()
        if reconnects != self._reconnects:
            tel.reconnects.add(reconnects - self._reconnects, tel.attributes)
            self._reconnects = reconnects

    def _flush(self) -> None:
        if self.events > self._flushed:
            self._tel.events.add(self.events - self._flushed, self._tel.attributes)
            self._flushed = self.events

    def end(self, worker: Worker, error: HandingerError | None) -> None:
        """The stream ended: close the span with what the worker came to."""
        tel = self._tel
        self._flush()
        tel.open.add(-1, tel.attributes)
        span = self._span
        if error is not None:
            status = "lost"
        elif worker.error is not None:
            status = "failed"
        else:
            status = worker.status
        attributes: dict[str, Any] = {
            "handinger.worker.status": status,
            "handinger.stream.events": self.events,
            "handinger.stream.reconnects": self._reconnects,
        }
        usage = worker.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
        cost = worker.cost_usd
        if cost is not None:
            attributes["handinger.worker.cost_usd"] = round(cost, 6)
        metric_attributes = dict(tel.attributes)
        if error is not None:
            attributes["error.type"] = type(error).__name__
            metric_attributes["error.type"] = type(error).__name__
            span.set_status(Status(StatusCode.ERROR, str(error)))
            span.record_exception(error)
        elif worker.error is not None:
            attributes["error.type"] = "worker_failed"
            metric_attributes["error.type"] = "worker_failed"
            span.set_status(Status(StatusCode.ERROR, str(worker.error)))
        span.set_attributes(attributes)
        tel.duration.record(monotonic() - self._opened, metric_attributes)
        if usage is not None and error is None:
            tel.token_usage.record(
                usage.input_tokens, {**tel.attributes, "gen_ai.token.type": "input"}
            )
            tel.token_usage.record(
                usage.output_tokens, {**tel.attributes, "gen_ai.token.type": "output"}
            )
        span.end()


StreamRecorder = TelemetryObserver
"""The earlier name of :class:`TelemetryObserver`, kept for code written against it."""
