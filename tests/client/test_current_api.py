"""The 16 calls of today's generation through our client, async and sync, over loopback.

Each test runs twice: with :class:`AsyncHandinger` and with :class:`Handinger`
(``flavor``). Calls go to the session's emulator; what must be refused before
anything is sent, and answers the emulator never gives (a 200 that is not the
type, a 404 of the other generation), go to the raw server, which records
every request it gets.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import msgspec
import pytest

from handinger_stream import (
    APIResponseValidationError,
    AsyncHandinger,
    ConflictError,
    EmailAddress,
    Handinger,
    InvalidRequestError,
    NotFoundError,
    StructuredOutputError,
    SyncWorkerStream,
    TaskWithTurns,
    Worker,
    WorkerStream,
    WorkerTemplate,
)
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import FAULT_HEADER, Emulator
from handinger_stream.types.events import Event, Reconnected
from handinger_stream.types.schedule import (
    CronWorkerSchedule,
    DelayedWorkerSchedule,
    IntervalWorkerSchedule,
    ScheduledWorkerSchedule,
)
from tests.conftest import API_KEY, Canned, RawServer, until

T = TypeVar("T")
Client = AsyncHandinger | Handinger
Stream = WorkerStream | SyncWorkerStream

SCHEMA = {
    "type": "object",
    "required": ["city", "temperature", "conditions"],
    "properties": {
        "city": {"type": "string", "minLength": 2, "maxLength": 40},
        "temperature": {"type": "integer", "minimum": -30, "maximum": 45},
        "conditions": {"enum": ["sunny", "cloudy", "rain"]},
    },
    "additionalProperties": False,
}
JSON = {"content-type": "application/json"}


@asynccontextmanager
async def connect(
    flavor: str, base_url: str, transport: TransportName | None = None
) -> AsyncIterator[Client]:
    """Our async or our sync client of ``base_url``."""
    options: dict[str, Any] = {"api_key": API_KEY, "base_url": base_url, "max_retries": 0}
    if flavor == "async":
        async with AsyncHandinger(**options, transport=transport) as client:
            yield client
    else:
        with Handinger(**options, transport=transport) as sync:
            yield sync


@pytest.fixture(params=["async", "sync"])
def flavor(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def api(flavor: str, emulator: Emulator) -> AsyncIterator[Client]:
    async with connect(flavor, emulator.base_url) as client:
        yield client


async def done(value: Awaitable[T] | T) -> T:
    """The result of a call of either client: awaited for the async one."""
    if inspect.isawaitable(value):
        return await value
    return value


async def opened(value: Awaitable[WorkerStream] | SyncWorkerStream) -> Stream:
    """A stream either client opened (``done`` for a ``stream=True`` call)."""
    return value if isinstance(value, SyncWorkerStream) else await value


async def drain(stream: Stream) -> tuple[list[Event], list[Reconnected]]:
    """The stream's events, and a notice for each resume."""
    if isinstance(stream, SyncWorkerStream):
        items = list(stream.events(reconnects=True))
    else:
        items = [item async for item in stream.events(reconnects=True)]
    events = [e for e in items if not isinstance(e, Reconnected)]
    return events, [e for e in items if isinstance(e, Reconnected)]


async def final(stream: Stream) -> Worker:
    return await done(stream.get_final_worker())


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def template(api: Client, **fields: Any) -> WorkerTemplate:
    made = await done(api.workers.create(instructions="Answer about the weather", **fields))
    assert isinstance(made, WorkerTemplate)
    return made


# --- tasks ---------------------------------------------------------------------------


async def test_tasks_create_json_streamed_a_follow_up_turn_and_without_a_worker(
    api: Client, emulator: Emulator
) -> None:
    tpl = await template(api, title="Weather")
    task = new_id("task")
    started = await done(api.tasks.create(input="Weather in Oslo?", worker_id=tpl.id, task_id=task))
    assert isinstance(started, Worker)
    assert started.id == tpl.id and started.metadata["taskId"] == task
    assert started.status in ("pending", "running") and started.url

    # A follow-up turn: the same task id, without the worker's; streamed.
    stream = await opened(api.tasks.create(input="And in Bergen?", task_id=task, stream=True))
    assert isinstance(stream, (WorkerStream, SyncWorkerStream))
    worker = await final(stream)
    assert (worker.id, worker.status, worker.metadata["taskId"]) == (tpl.id, "completed", task)
    assert stream.worker_id == tpl.id and worker.usage is not None and worker.usage.credits

    found = await done(api.tasks.retrieve(task))
    assert isinstance(found, TaskWithTurns)
    assert (found.task.id, found.task.worker_id, found.task.triggered_by) == (task, tpl.id, "api")
    assert found.task.status == "completed" and found.task.totals.turn_count == 2
    assert [(t.seq, t.input, t.status) for t in found.turns] == [
        (1, "Weather in Oslo?", "completed"),
        (2, "And in Bergen?", "completed"),
    ]
    assert found.turns[1].output_text and found.turns[1].output_text in worker.output_text

    # No worker id: a template made on the fly, with the input as its instructions.
    fly = await done(api.tasks.create(input="Track copper prices", budget="low"))
    assert isinstance(fly, Worker) and fly.id != tpl.id and fly.id.startswith("wrk_")
    await emulator.idle()
    fly_task = await done(api.tasks.retrieve(fly.metadata["taskId"]))
    assert fly_task.task.worker_id == fly.id and fly_task.turns[0].input == "Track copper prices"


async def test_tasks_retrieve_and_delete(api: Client, emulator: Emulator) -> None:
    tpl = await template(api)
    task = new_id("task")
    await done(api.tasks.create(input="Hello", worker_id=tpl.id, task_id=task))
    await emulator.idle()
    found = await done(api.tasks.retrieve(task))
    assert found.task.status == "completed" and found.task.completed_at is not None
    assert found.turns[0].task_id == task and found.turns[0].credits >= 1

    assert (await done(api.tasks.delete(task))).archived is True
    # Archived: still readable, but it takes no new turn.
    assert (await done(api.tasks.retrieve(task))).task.id == task
    with pytest.raises(ConflictError, match="archived"):
        await done(api.tasks.create(input="Again", task_id=task))
    with pytest.raises(NotFoundError):
        await done(api.tasks.retrieve(new_id("missing")))


CUT_AFTER = 30
CUT = {FAULT_HEADER: f"drop-after={CUT_AFTER}"}  # sent with the create, and with each resume


async def test_a_task_stream_cut_by_a_fault_resumes_through_the_worker_replay(
    flavor: str, emulator: Emulator
) -> None:
    """Every response of this stream, resumes included, is cut after 30 events: it goes on
    through the worker's replay (``Last-Event-ID``) and ends with each event once.

    Over httpx: over aiohttp, events read before a cut can be lost (the next test).
    """
    async with connect(flavor, emulator.base_url, "httpx") as api:
        tpl = await template(api)
        stream = await opened(
            api.tasks.create(
                input="Weather in Oslo?",
                worker_id=tpl.id,
                task_id=new_id("cut"),
                stream=True,
                extra_headers=CUT,
            )
        )
        events, notices = await drain(stream)
        await _resumed_to_the_replay(api, tpl, stream, events, notices)


async def _resumed_to_the_replay(
    api: Client,
    tpl: WorkerTemplate,
    stream: Stream,
    events: list[Event],
    notices: list[Reconnected],
) -> None:
    assert len(events) > 2 * CUT_AFTER and len(notices) == (len(events) - 1) // CUT_AFTER
    assert [n.last_event_id for n in notices] == [
        str(CUT_AFTER * k - 1) for k in range(1, 1 + len(notices))
    ]
    ids = [e.event_id for e in events]
    assert ids == [str(n) for n in range(len(events))]  # each once, in order
    # The same events as the worker's replay, and the Worker it ends with.
    replay = await opened(api.workers.retrieve(tpl.id, stream=True))
    reference, _ = await drain(replay)
    assert events == reference and stream.snapshot == replay.snapshot
    # The Worker as retrieved, but for the seed's costs the finish chunk carries (see
    # tests/conformance/test_sdk_current.py::test_a_streamed_task_folds_to_the_worker_...).
    retrieved = await done(api.workers.retrieve(tpl.id))
    assert msgspec.structs.replace(stream.snapshot, costs=None) == retrieved
    assert stream.completed and stream.reconnects == len(notices)


@pytest.mark.parametrize(
    "transport",
    [
        "aiohttp",
        "httpx",
    ],
)
async def test_events_that_arrived_before_a_cut_are_read_after_it(
    emulator: Emulator, transport: TransportName
) -> None:
    """A reader that comes late (the server has written 30 events and cut the connection,
    and this loop has taken both in, before it reads any) still gets them, then resumes
    after the last one."""
    async with connect("async", emulator.base_url, transport) as api:
        tpl = await template(api)
        stream = await opened(
            api.tasks.create(
                input="Weather in Oslo?", worker_id=tpl.id, stream=True, extra_headers=CUT
            )
        )
        assert await until(lambda: emulator.open_streams == 0, timeout=5)  # written and cut
        await asyncio.sleep(0.1)  # the bytes and the cut reach the transport before a read
        events, notices = await drain(stream)
        await _resumed_to_the_replay(api, tpl, stream, events, notices)


# --- worker templates ------------------------------------------------------------------


async def test_worker_templates_create_retrieve_update_and_delete(api: Client) -> None:
    made = await template(api, title="Weather", output_schema=SCHEMA, visibility="private")
    assert (made.title, made.instructions, made.visibility) == (
        "Weather",
        "Answer about the weather",
        "private",
    )
    assert made.output_schema == SCHEMA and made.id.startswith("wrk_") and made.url

    idle = await done(api.workers.retrieve(made.id))
    assert isinstance(idle, Worker)
    assert (idle.id, idle.status, idle.output_text, idle.structured_output) == (
        made.id,
        "pending",
        "",
        None,
    )

    renamed = await done(api.workers.update(made.id, title="Forecasts", summary="Short ones"))
    assert (renamed.title, renamed.summary, renamed.output_schema) == (
        "Forecasts",
        "Short ones",
        SCHEMA,
    )
    kept = await done(api.workers.update(made.id))  # nothing given: nothing changes
    assert (kept.title, kept.output_schema) == ("Forecasts", SCHEMA)
    cleared = await done(api.workers.update(made.id, output_schema=None))
    assert cleared.output_schema is None and cleared.title == "Forecasts"

    assert (await done(api.workers.delete(made.id))).deleted is True
    with pytest.raises(NotFoundError):
        await done(api.workers.retrieve(made.id))


async def test_workers_retrieve_email(api: Client) -> None:
    made = await template(api)
    address = await done(api.workers.retrieve_email(made.id))
    assert isinstance(address, EmailAddress) and address.email == address
    assert address.startswith(made.id) and "@" in address


class Weather(msgspec.Struct):
    city: str
    temperature: int
    conditions: str


@dataclass
class WeatherRecord:
    city: str
    temperature: int
    conditions: str


class WrongWeather(msgspec.Struct):
    city: str
    temperature: str  # the schema says integer
    conditions: str


async def test_structured_output_parses_into_your_type_and_names_a_field_that_does_not_fit(
    api: Client,
) -> None:
    tpl = await template(api, output_schema=SCHEMA)
    stream = await opened(api.tasks.create(input="Weather in Oslo?", worker_id=tpl.id, stream=True))
    worker = await final(stream)
    assert isinstance(worker.structured_output, dict)
    parsed = worker.parse(Weather)
    assert msgspec.to_builtins(parsed) == worker.structured_output
    assert worker.parse(WeatherRecord) == WeatherRecord(**worker.structured_output)
    turn = (await done(api.tasks.retrieve(worker.metadata["taskId"]))).turns[-1]
    assert turn.structured_output == worker.structured_output

    with pytest.raises(StructuredOutputError, match=r"WrongWeather.*\$\.temperature"):
        worker.parse(WrongWeather)
    plain = await opened(api.tasks.create(input="Hi", stream=True))  # a template with no schema
    with pytest.raises(StructuredOutputError, match="no structured output"):
        (await final(plain)).parse(Weather)


# --- schedules -------------------------------------------------------------------------

WHENS: list[tuple[dict[str, Any], type[Any], str, object]] = [
    # (when, the type it gives, its field, the value there)
    ({"type": "cron", "cron": "0 9 * * 1"}, CronWorkerSchedule, "cron", "0 9 * * 1"),
    ({"type": "delayed", "delay_in_seconds": 600}, DelayedWorkerSchedule, "delay_in_seconds", 600),
    ({"type": "delayed", "delayInSeconds": 60}, DelayedWorkerSchedule, "delay_in_seconds", 60),
    (
        {"type": "interval", "interval_seconds": 3600},
        IntervalWorkerSchedule,
        "interval_seconds",
        3600,
    ),
    (
        {"type": "interval", "intervalSeconds": 7200},
        IntervalWorkerSchedule,
        "interval_seconds",
        7200,
    ),
    (
        {"type": "scheduled", "date": "2099-01-01T09:00:00Z"},
        ScheduledWorkerSchedule,
        "date",
        datetime(2099, 1, 1, 9, tzinfo=timezone.utc),
    ),
    (
        {"type": "scheduled", "date": datetime(2099, 6, 1, 12, tzinfo=timezone.utc)},
        ScheduledWorkerSchedule,
        "date",
        datetime(2099, 6, 1, 12, tzinfo=timezone.utc),
    ),
]


async def test_schedules_of_every_kind_by_sdk_and_wire_keys_are_listed_and_cancelled(
    api: Client,
) -> None:
    tpl = await template(api)
    made = []
    for n, (when, kind, field, value) in enumerate(WHENS):
        schedule = await done(
            api.workers.schedules.create(tpl.id, input=f"Run {n}", when=when, budget="low")
        )
        assert isinstance(schedule, kind), when
        assert getattr(schedule, field) == value, when
        assert (schedule.input, schedule.budget) == (f"Run {n}", "low")
        assert schedule.next_run_at is not None and schedule.next_run_at.tzinfo is not None
        made.append(schedule)

    listed = await done(api.workers.schedules.list(tpl.id))
    assert listed.worker_id == tpl.id and listed.schedules == made
    cancelled = await done(api.workers.schedules.cancel(made[0].id, worker_id=tpl.id))
    assert cancelled.cancelled is True
    assert (await done(api.workers.schedules.list(tpl.id))).schedules == made[1:]
    with pytest.raises(NotFoundError):
        await done(api.workers.schedules.cancel(made[0].id, worker_id=new_id("wrk")))
    # The session's emulator runs on the real clock: no run of these later in the session.
    await done(api.workers.delete(tpl.id))
    with pytest.raises(NotFoundError):
        await done(api.workers.schedules.list(tpl.id))


# --- webhooks --------------------------------------------------------------------------


async def test_webhooks_retrieve_update_list_executions_regenerate_and_delete(
    api: Client, emulator: Emulator
) -> None:
    tpl = await template(api)
    hooks = api.workers.webhooks
    unset = await done(hooks.retrieve(tpl.id))
    assert (unset.url, unset.token) == (None, None)
    with RawServer() as receiver:
        receiver.serve(Canned([b"ok"], headers={"content-type": "text/plain"}))
        url = receiver.base_url + "/hook"
        hook = await done(hooks.update(tpl.id, url=url))
        assert hook.url == url and hook.token and hook.token not in repr(hook)
        assert (await done(hooks.update(tpl.id, url=url))).token == hook.token  # kept
        assert await done(hooks.retrieve(tpl.id)) == hook

        task = new_id("hooked")
        await done(api.tasks.create(input="Hi", worker_id=tpl.id, task_id=task))
        await emulator.idle()
        [delivery] = receiver.requests
        headers = {k.lower(): v for k, v in delivery["headers"].items()}
        assert headers["x-handinger-token"] == hook.token
        assert msgspec.json.decode(delivery["body"])["task"]["id"] == task

        page = await done(hooks.list_executions(tpl.id, page=1))
        assert (page.page, page.page_count, page.total_count) == (1, 1, 1)
        [execution] = page.logs
        assert (execution.worker_id, execution.task_id, execution.url) == (tpl.id, task, url)
        assert (execution.request_status, execution.response_status) == ("success", 200)
        assert await done(hooks.list_executions(tpl.id)) == page  # page 1 by default
        beyond = await done(hooks.list_executions(tpl.id, page=2))
        assert (beyond.page, beyond.logs, beyond.total_count) == (2, [], 1)

        fresh = await done(hooks.regenerate_token(tpl.id))
        assert fresh.url == url and fresh.token not in (None, hook.token)
    removed = await done(hooks.delete(tpl.id))
    assert (removed.url, removed.token) == (None, None)
    assert await done(hooks.retrieve(tpl.id)) == removed
    await done(hooks.update(tpl.id, url="https://example.com/hook"))
    assert (await done(hooks.update(tpl.id, url=None))).token is None  # None removes it too


# --- refused before sending --------------------------------------------------------------

SCHEDULE = {"type": "cron", "cron": "0 9 * * 1"}

REFUSED: dict[str, Callable[[Client], object]] = {
    "workers.create input= and title=": lambda c: c.workers.create(input="Hi", title="T"),  # type: ignore[call-overload]
    "workers.create instructions= and budget=": lambda c: c.workers.create(  # type: ignore[call-overload]
        instructions="Hi", budget="low"
    ),
    "when: an unknown type": lambda c: c.workers.schedules.create(
        "w", input="x", when={"type": "hourly"}
    ),
    "when: not a dict": lambda c: c.workers.schedules.create("w", input="x", when="daily"),  # type: ignore[arg-type]
    "when: no seconds": lambda c: c.workers.schedules.create(
        "w", input="x", when={"type": "delayed"}
    ),
    "when: zero seconds": lambda c: c.workers.schedules.create(
        "w", input="x", when={"type": "interval", "interval_seconds": 0}
    ),
    "when: seconds as text": lambda c: c.workers.schedules.create(
        "w", input="x", when={"type": "delayed", "delay_in_seconds": "60"}
    ),
    "when: an empty cron": lambda c: c.workers.schedules.create(
        "w", input="x", when={"type": "cron", "cron": " "}
    ),
    "when: no date": lambda c: c.workers.schedules.create(
        "w", input="x", when={"type": "scheduled"}
    ),
    "page 0": lambda c: c.workers.webhooks.list_executions("w", page=0),
    "page -1": lambda c: c.workers.webhooks.list_executions("w", page=-1),
    "page True": lambda c: c.workers.webhooks.list_executions("w", page=True),
    "page '2'": lambda c: c.workers.webhooks.list_executions("w", page="2"),  # type: ignore[arg-type]
    "an empty input": lambda c: c.tasks.create(input="", worker_id="w"),
    "a budget of none": lambda c: c.tasks.create(input="x", budget="none"),  # type: ignore[call-overload]
    "tasks.create worker_id ''": lambda c: c.tasks.create(input="x", worker_id=""),
    "tasks.create task_id ''": lambda c: c.tasks.create(input="x", task_id=""),
    "tasks.retrieve ''": lambda c: c.tasks.retrieve(""),
    "tasks.delete ''": lambda c: c.tasks.delete(""),
    "workers.retrieve ''": lambda c: c.workers.retrieve(""),
    "workers.update ''": lambda c: c.workers.update("", title="T"),
    "workers.delete ''": lambda c: c.workers.delete(""),
    "workers.retrieve_email ''": lambda c: c.workers.retrieve_email(""),
    "schedules.create ''": lambda c: c.workers.schedules.create("", input="x", when=SCHEDULE),
    "schedules.list ''": lambda c: c.workers.schedules.list(""),
    "schedules.cancel schedule ''": lambda c: c.workers.schedules.cancel("", worker_id="w"),
    "schedules.cancel worker ''": lambda c: c.workers.schedules.cancel("s", worker_id=""),
    "webhooks.retrieve ''": lambda c: c.workers.webhooks.retrieve(""),
    "webhooks.update ''": lambda c: c.workers.webhooks.update("", url="https://e.com/h"),
    "webhooks.update url ''": lambda c: c.workers.webhooks.update("w", url=""),
    "webhooks.delete ''": lambda c: c.workers.webhooks.delete(""),
    "webhooks.list_executions ''": lambda c: c.workers.webhooks.list_executions(""),
    "webhooks.regenerate_token ''": lambda c: c.workers.webhooks.regenerate_token(""),
    "workers.update visibility": lambda c: c.workers.update("w", visibility="secret"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", REFUSED)
async def test_refused_before_sending(flavor: str, raw_server: RawServer, case: str) -> None:
    raw_server.serve(Canned([b"{}"], headers=JSON))
    async with connect(flavor, raw_server.base_url) as client:
        with pytest.raises(InvalidRequestError):
            await done(REFUSED[case](client))
    assert raw_server.requests == []


# --- answers the emulator never gives --------------------------------------------------

CALLS: dict[str, Callable[[Client], object]] = {
    "tasks.create": lambda c: c.tasks.create(input="x"),
    "tasks.retrieve": lambda c: c.tasks.retrieve("t"),
    "tasks.delete": lambda c: c.tasks.delete("t"),
    "workers.create": lambda c: c.workers.create(instructions="x"),
    "workers.retrieve": lambda c: c.workers.retrieve("w"),
    "workers.update": lambda c: c.workers.update("w", title="x"),
    "workers.delete": lambda c: c.workers.delete("w"),
    "workers.retrieve_email": lambda c: c.workers.retrieve_email("w"),
    "workers.schedules.create": lambda c: c.workers.schedules.create("w", input="x", when=SCHEDULE),
    "workers.schedules.list": lambda c: c.workers.schedules.list("w"),
    "workers.schedules.cancel": lambda c: c.workers.schedules.cancel("s", worker_id="w"),
    "workers.webhooks.retrieve": lambda c: c.workers.webhooks.retrieve("w"),
    "workers.webhooks.update": lambda c: c.workers.webhooks.update("w", url="https://e.com/h"),
    "workers.webhooks.delete": lambda c: c.workers.webhooks.delete("w"),
    "workers.webhooks.list_executions": lambda c: c.workers.webhooks.list_executions("w"),
    "workers.webhooks.regenerate_token": lambda c: c.workers.webhooks.regenerate_token("w"),
}


@pytest.mark.parametrize(
    "call",
    list(CALLS),
)
async def test_a_200_that_is_not_the_type_is_an_api_response_validation_error(
    flavor: str, raw_server: RawServer, call: str
) -> None:
    raw_server.serve(Canned([b"[1, 2]"], headers=JSON))
    async with connect(flavor, raw_server.base_url) as client:
        with pytest.raises(APIResponseValidationError) as caught:
            await done(CALLS[call](client))
    assert caught.value.status_code == 200 and "[1, 2]" in str(caught.value)
    assert len(raw_server.requests) == 1


NOT_FOUND = json_error = (
    b'{"error": {"message": "Not Found", "type": "not_found_error", "status": 404}}'
)


async def test_a_404_of_the_other_generation_says_which_call_to_use(
    flavor: str, raw_server: RawServer
) -> None:
    raw_server.serve(Canned([NOT_FOUND], status=404, headers=JSON))
    async with connect(flavor, raw_server.base_url) as client:
        with pytest.raises(NotFoundError) as seed_server:
            await done(client.tasks.create(input="Hi", worker_id="wrk_1"))
        with pytest.raises(NotFoundError) as todays_server:
            await done(client.workers.continue_("wrk_1", input="And then?"))
    assert "workers.create(input=...)" in str(seed_server.value)
    assert "tasks.create(task_id=" in str(todays_server.value)
    assert [r["path"] for r in raw_server.requests] == ["/api/tasks", "/api/workers/wrk_1"]


TODAY_ONLY = [
    "tasks.retrieve",
    "tasks.delete",
    "workers.update",
    "workers.delete",
    "workers.schedules.create",
    "workers.schedules.list",
    "workers.schedules.cancel",
    "workers.webhooks.retrieve",
    "workers.webhooks.update",
    "workers.webhooks.delete",
    "workers.webhooks.list_executions",
    "workers.webhooks.regenerate_token",
]


@pytest.mark.parametrize("call", TODAY_ONLY)
async def test_a_404_to_a_call_of_today_only_says_the_server_may_speak_the_seed_s(
    flavor: str, raw_server: RawServer, call: str
) -> None:
    raw_server.serve(Canned([NOT_FOUND], status=404, headers=JSON))
    async with connect(flavor, raw_server.base_url) as client:
        with pytest.raises(NotFoundError) as caught:
            await done(CALLS[call](client))
    said = str(caught.value)
    assert "seed's generation" in said and "workers.create(input=...)" in said
    assert len(raw_server.requests) == 1
