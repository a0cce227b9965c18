"""The sync client takes what the async one takes, parameter for parameter.

Found by introspection, so that a resource added later is checked too: a
resource is a ``functools.cached_property`` of the client class (``client.workers``),
and every public method of the async resource has its sync twin, with the same
names, kinds, defaults and annotations, once each async type is read as its
sync counterpart (``WorkerStream`` as ``SyncWorkerStream``).
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from handinger_stream import AsyncHandinger, Handinger, InvalidRequestError
from handinger_stream.client.resources.workers import Workers
from handinger_stream.client.telemetry import Telemetry
from handinger_stream.emulator import Emulator
from tests.conftest import API_KEY

# The sync side's names that are not the async one's with "Sync" in front.
SYNC_NAMES = {
    "AsyncHandinger": "Handinger",
    # A sync watch is a blocking iterator over the same items.
    "Watch": "_Blocking[WatchEvent]",
}


def resources(client_class: type) -> dict[str, functools.cached_property[Any]]:
    """The client's resources: its cached properties, inherited ones included."""
    found: dict[str, functools.cached_property[Any]] = {}
    for klass in reversed(client_class.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, functools.cached_property):
                found[name] = value
    return found


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[AsyncHandinger, Handinger]]:
    # Made, never used: no connection and no thread is started.
    sync = Handinger(api_key="k", base_url="http://127.0.0.1:9")
    yield AsyncHandinger(api_key="k", base_url="http://127.0.0.1:9"), sync
    sync.close()


def resource_pairs(clients: tuple[AsyncHandinger, Handinger]) -> list[tuple[str, type, type]]:
    async_client, sync_client = clients
    return [
        (name, type(getattr(async_client, name)), type(getattr(sync_client, name)))
        for name in resources(AsyncHandinger)
    ]


def public_methods(resource: type) -> dict[str, Callable[..., Any]]:
    return {
        name: value
        for name, value in vars(resource).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }


def as_sync(annotation: object, namespace: dict[str, Any]) -> object:
    """An async annotation (a string: the modules use postponed annotations) in sync terms."""
    if not isinstance(annotation, str):
        return annotation

    def name(found: re.Match[str]) -> str:
        word = found.group()
        if word in SYNC_NAMES:
            return SYNC_NAMES[word]
        return f"Sync{word}" if f"Sync{word}" in namespace else word

    return re.sub(r"\b[A-Za-z_]\w*\b", name, annotation)


def described(
    function: Callable[..., Any], namespace: dict[str, Any] | None = None
) -> list[tuple[str, object, object, object]]:
    """Each parameter as (name, kind, default, annotation), the return annotation last;
    annotations read in sync terms when ``namespace`` (the sync side's module) is given."""
    signature = inspect.signature(function)

    def read(annotation: object) -> object:
        return annotation if namespace is None else as_sync(annotation, namespace)

    rows: list[tuple[str, object, object, object]] = [
        (p.name, p.kind, p.default, read(p.annotation)) for p in signature.parameters.values()
    ]
    rows.append(("return", None, None, read(signature.return_annotation)))
    return rows


def overloads(function: Callable[..., Any]) -> list[Callable[..., Any]]:
    if sys.version_info >= (3, 11):
        return list(typing.get_overloads(function))
    return []  # Python 3.10 does not keep them: the implementations are compared


def test_the_clients_have_the_same_resources(clients: tuple[AsyncHandinger, Handinger]) -> None:
    assert resources(AsyncHandinger).keys() == resources(Handinger).keys()
    assert "workers" in resources(AsyncHandinger)
    for name, async_resource, sync_resource in resource_pairs(clients):
        assert sync_resource.__name__ == f"Sync{async_resource.__name__}", name


def test_every_resource_method_takes_the_same_parameters(
    clients: tuple[AsyncHandinger, Handinger],
) -> None:
    checked = 0
    for name, async_resource, sync_resource in resource_pairs(clients):
        async_methods = public_methods(async_resource)
        sync_methods = public_methods(sync_resource)
        assert async_methods.keys() == sync_methods.keys(), name
        for method, async_method in async_methods.items():
            sync_method = sync_methods[method]
            namespace = vars(sys.modules[sync_resource.__module__])
            where = f"{name}.{method}"
            assert described(sync_method) == described(async_method, namespace), where
            async_overloads = overloads(async_method)
            sync_overloads = overloads(sync_method)
            assert len(sync_overloads) == len(async_overloads), where
            for sync_one, async_one in zip(sync_overloads, async_overloads, strict=True):
                assert described(sync_one) == described(async_one, namespace), where
            checked += 1
    assert checked >= len(public_methods(Workers))  # the walk found the methods


def test_the_constructors_take_the_same_parameters() -> None:
    namespace = vars(sys.modules[Handinger.__module__])
    sync = described(Handinger.__init__)
    assert sync == described(AsyncHandinger.__init__, namespace)
    assert [name for name, *_ in sync] == [
        "self", "api_key", "base_url", "timeout", "max_retries", "http_client", "transport",
        "on_decode_error", "max_event_bytes", "max_reconnects", "first_event_timeout",
        "idle_timeout", "total_timeout", "telemetry", "ai_sdk", "return",
    ]  # fmt: skip


def test_a_missing_parameter_is_seen() -> None:
    def async_watch(self: object, workers: list[str], *, buffer: int = 64) -> None: ...
    def sync_watch(self: object, workers: list[str]) -> None: ...

    assert described(sync_watch) != described(async_watch, {})
    sync_names = {"SyncWorkerStream": object}
    assert as_sync("Iterable[str | WorkerStream]", sync_names) == "Iterable[str | SyncWorkerStream]"
    assert as_sync("Watch", sync_names) == "_Blocking[WatchEvent]"


# -- what the sync watch takes, it uses -----------------------------------------------


def test_the_sync_watch_hands_its_buffer_to_the_watch(emulator: Emulator) -> None:
    with Handinger(api_key=API_KEY, base_url=emulator.base_url) as client:
        with pytest.raises(InvalidRequestError, match="buffer"):
            client.workers.watch([], buffer=0)


def test_the_sync_watch_records_to_the_telemetry_it_is_given(emulator: Emulator) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(tracer_provider=tracer_provider)
    with Handinger(api_key=API_KEY, base_url=emulator.base_url) as client:
        worker = client.workers.create(input="Watched", budget="low")
        items = list(client.workers.watch([worker.id], buffer=1, telemetry=telemetry))
    assert items and all(item.worker_id == worker.id for item in items)
    finished = spans.get_finished_spans()
    assert [span.name for span in finished] == ["handinger.stream"]
    assert finished[0].attributes is not None
    assert finished[0].attributes["handinger.worker.id"] == worker.id
