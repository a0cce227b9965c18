"""The emulator's today's API over real loopback HTTP: templates, tasks and their turns,
streams, structured output, schedules on the emulator clock, webhooks, error shapes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiohttp
import jsonschema  # type: ignore[import-untyped]  # no type hints shipped
import msgspec
import pytest
from aiohttp import web

from handinger_stream.emulator import FAULT_HEADER, Emulator, EmulatorClock
from handinger_stream.protocol.sse import SSEDecoder
from handinger_stream.testing.clock import parse_iso
from handinger_stream.testing.loopback import LoopbackServer

START = "2026-03-02T08:00:00Z"  # a Monday
SCHEMA = {
    "type": "object",
    "required": ["city", "temperature", "conditions"],
    "properties": {
        "city": {"type": "string", "minLength": 2, "maxLength": 40},
        "temperature": {"type": "integer", "minimum": -30, "maximum": 45},
        "conditions": {"enum": ["sunny", "cloudy", "rain"]},
        "sources": {"type": "array", "items": {"type": "string", "format": "uri"}, "maxItems": 3},
    },
    "additionalProperties": False,
}


@dataclass
class API:
    """Requests to one emulator, with a key; JSON answers decoded."""

    emu: Emulator
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": {"authorization": "Bearer k", **headers}}
        if body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.emu.base_url + path, **kwargs) as resp:
            raw = await resp.read()
        return resp.status, msgspec.json.decode(raw) if raw else None

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, body)
        assert status == 200, answer
        return answer

    async def refused(
        self, status: int, method: str, path: str, body: Any = None, **headers: str
    ) -> str:
        """The error's message, after checking the API's error shape."""
        got, answer = await self.call(method, path, body, **headers)
        assert got == status, answer
        assert set(answer) == {"error"} and answer["error"]["status"] == status
        assert isinstance(answer["error"]["type"], str)
        message: str = answer["error"]["message"]
        return message

    async def stream(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> tuple[str, list[tuple[str | None, Any]]]:
        """The worker id header, and each event as (id, decoded data or the raw [DONE])."""
        kwargs: dict[str, Any] = {"headers": {"authorization": "Bearer k", **headers}}
        if body is not None:
            kwargs["json"] = body
        decoder = SSEDecoder()
        events: list[tuple[str | None, Any]] = []
        async with self.session.request(method, self.emu.base_url + path, **kwargs) as resp:
            assert resp.status == 200
            worker_id = resp.headers["x-handinger-worker-id"]
            try:
                async for piece in resp.content.iter_any():
                    events += [(e.id, e.raw) for e in decoder.feed(piece)]
            except aiohttp.ClientPayloadError:
                pass  # a drop-after fault cuts the body
        decoded = [(i, raw if raw == b"[DONE]" else msgspec.json.decode(raw)) for i, raw in events]
        return worker_id, decoded

    async def template(self, **fields: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await self.ok("POST", "/api/workers", fields or {"title": "T"})
        return answer


@pytest.fixture
async def api() -> AsyncIterator[API]:
    clock = EmulatorClock(start=START)
    async with (
        Emulator(clock=clock, keepalive_interval=0.2, webhook_timeout=2.0) as emu,
        aiohttp.ClientSession() as session,
    ):
        yield API(emu, session)


def chunks(events: list[tuple[str | None, Any]]) -> list[dict[str, Any]]:
    return [data for _, data in events if data != b"[DONE]"]


def iso_ok(value: str) -> bool:
    return value.endswith("Z") and datetime.fromisoformat(value[:-1]).year == 2026


# --- worker templates ---------------------------------------------------------------


async def test_a_template_is_created_read_updated_and_deleted(api: API) -> None:
    made = await api.template(prompt="Summarise the day's news. Keep it short.")
    assert made["id"].startswith("wrk_") and made["title"]  # a dog's name when none is given
    assert made["summary"] == "Summarise the day's news"
    assert made["instructions"].startswith("You are a worker that summarise the day's news")
    assert made["visibility"] == "public" and made["outputSchema"] is None
    assert made["createdAt"] == made["updatedAt"] == "2026-03-02T08:00:00.000Z"
    assert made["url"] == f"{api.emu.base_url}/dashboard/workers/{made['id']}"
    assert {"organizationId", "userId"} <= set(made)
    # No task yet: the Worker is an idle one.
    idle = await api.ok("GET", f"/api/workers/{made['id']}")
    assert (idle["id"], idle["status"], idle["output_text"]) == (made["id"], "pending", "")

    api.emu.clock.advance(60)  # type: ignore[attr-defined]
    changed = await api.ok(
        "PATCH", f"/api/workers/{made['id']}", {"title": "News", "visibility": "private"}
    )
    assert (changed["title"], changed["visibility"]) == ("News", "private")
    assert changed["instructions"] == made["instructions"]
    assert changed["updatedAt"] == "2026-03-02T08:01:00.000Z"
    assert (await api.ok("GET", f"/api/workers/{made['id']}/email")) == {
        "email": f"{made['id']}@workers.handinger.invalid"
    }
    assert await api.ok("DELETE", f"/api/workers/{made['id']}") == {"deleted": True}
    assert "no worker" in await api.refused(404, "GET", f"/api/workers/{made['id']}")
    assert "no worker" in await api.refused(404, "DELETE", f"/api/workers/{made['id']}")


async def test_post_workers_tells_the_two_generations_apart(api: API) -> None:
    run = await api.ok("POST", "/api/workers", {"input": "Hi"})  # the seed's: a run
    assert "costs" in run and "url" not in run
    template = await api.template(instructions="Be brief")  # today's: a template
    assert template["instructions"] == "Be brief" and "status" not in template
    message = await api.refused(400, "POST", "/api/workers", {"input": "Hi", "title": "T"})
    assert "input" in message and "title" in message
    assert "input" in await api.refused(400, "POST", "/api/workers", {})  # as before
    # Each generation's calls on the other's worker say which is which.
    message = await api.refused(400, "POST", f"/api/workers/{template['id']}", {"input": "x"})
    assert "worker template" in message and "/api/tasks" in message
    message = await api.refused(404, "PATCH", f"/api/workers/{run['id']}", {"title": "x"})
    assert "seed's generation" in message
    assert await api.ok("GET", f"/api/workers/{run['id']}/email") == (
        f"{run['id']}@workers.handinger.invalid"
    )


async def test_template_fields_are_checked(api: API) -> None:
    message = await api.refused(400, "POST", "/api/workers", {"title": 3})
    assert message.startswith("title:")
    message = await api.refused(400, "POST", "/api/workers", {"title": "T", "color": "red"})
    assert "'color'" in message
    message = await api.refused(400, "POST", "/api/workers", {"visibility": "secret"})
    assert message.startswith("visibility:")
    made = await api.template()
    message = await api.refused(400, "PATCH", f"/api/workers/{made['id']}", {"prompt": "x"})
    assert "prompt" in message
    assert "no worker" in await api.refused(404, "PATCH", "/api/workers/wrk_nope", {})


# --- tasks ---------------------------------------------------------------------------


async def test_a_task_runs_on_a_template_and_is_read_back(api: API) -> None:
    template = await api.template(instructions="Answer like a meteorologist")
    worker = await api.ok(
        "POST", "/api/tasks", {"input": "Write a report on the weather", "workerId": template["id"]}
    )
    assert worker["id"] == template["id"] and worker["object"] == "worker"
    assert worker["status"] == "pending"
    task_id = worker["metadata"]["taskId"]
    await api.emu.idle()
    found = await api.ok("GET", f"/api/tasks/{task_id}")
    task, turns = found["task"], found["turns"]
    assert task["workerId"] == template["id"] and task["status"] == "completed"
    assert task["triggeredBy"] == "api" and task["createdByUserId"]
    assert task["title"] == "Write a report on the weather"
    assert iso_ok(task["createdAt"]) and iso_ok(task["completedAt"])
    assert task["url"] == f"{template['url']}/tasks/{task_id}"
    [turn] = turns
    assert (turn["taskId"], turn["seq"], turn["status"]) == (task_id, 1, "completed")
    assert turn["input"] == "Write a report on the weather"
    assert turn["credits"] >= 1 and turn["durationMs"] > 0 and turn["outputTokens"] > 0
    assert turn["structuredOutput"] is None
    assert task["totals"] == {
        "credits": turn["credits"],
        "durationMs": turn["durationMs"],
        "turnCount": 1,
    }
    # The Worker: the latest task's, with today's fields.
    latest = await api.ok("GET", f"/api/workers/{template['id']}")
    assert latest["status"] == "completed" and latest["output_text"] == turn["outputText"]
    assert latest["usage"] == {"credits": turn["credits"], "durationMs": turn["durationMs"]}
    assert latest["url"] == task["url"] and latest["structured_output"] is None
    assert "costs" not in latest
    [report] = latest["files"]  # the input asks for a report
    assert report["filename"] == "report.md" and report["size"] > 0
    async with api.session.get(report["url"], headers={"authorization": "Bearer k"}) as resp:
        assert resp.status == 200 and len(await resp.read()) == report["size"]


async def test_a_task_streams_as_a_seed_run_does(api: API) -> None:
    template = await api.template()
    worker_id, events = await api.stream(
        "POST", "/api/tasks", {"input": "Hi", "workerId": template["id"], "stream": True}
    )
    _, seed_events = await api.stream("POST", "/api/workers", {"input": "Hi", "stream": True})
    assert worker_id == template["id"]
    assert events[-1][1] == b"[DONE]"
    ids = [int(i) for i, _ in events[:-1]]  # type: ignore[arg-type]
    assert ids == list(range(len(ids)))
    kinds = [c["type"] for c in chunks(events)]
    seed_kinds = [c["type"] for c in chunks(seed_events)]
    # The same kinds of chunk in the same order (the words differ: the task is its own seed).
    assert _squeezed(kinds) == _squeezed(seed_kinds)
    first, last = chunks(events)[0], chunks(events)[-1]
    assert first["type"] == last["type"] == "data-worker" and first["transient"] is True
    assert first["data"]["status"] == "pending" and last["data"]["status"] == "completed"
    assert last["data"]["metadata"]["taskId"] == first["data"]["metadata"]["taskId"]
    start = next(c for c in chunks(events) if c["type"] == "start")
    assert start["messageMetadata"]["taskId"] == first["data"]["metadata"]["taskId"]


def _squeezed(kinds: list[str]) -> list[str]:
    """Runs of the same kind as one (answers of different lengths)."""
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


async def test_a_follow_up_turn_reuses_the_task_id_and_the_log_goes_on(api: API) -> None:
    template = await api.template()
    _, first = await api.stream(
        "POST",
        "/api/tasks",
        {"input": "Hi", "workerId": template["id"], "taskId": "chat-7", "stream": True},
    )
    _, second = await api.stream(
        "POST", "/api/tasks", {"input": "More", "taskId": "chat-7", "stream": True}
    )
    last_first = int(first[-2][0])  # type: ignore[arg-type]
    assert int(second[0][0]) == last_first + 1  # type: ignore[arg-type]
    final = chunks(second)[-1]["data"]
    assert [m["role"] for m in final["messages"]] == ["user", "assistant"] * 2
    found = await api.ok("GET", "/api/tasks/chat-7")
    assert [t["seq"] for t in found["turns"]] == [1, 2]
    assert found["task"]["totals"]["turnCount"] == 2
    assert found["task"]["totals"]["credits"] == sum(t["credits"] for t in found["turns"])
    # The worker's replay holds both turns; a Last-Event-ID resumes inside it.
    _, replay = await api.stream("GET", f"/api/workers/{template['id']}?stream=true")
    assert [i for i, _ in replay[:-1]] == [i for i, _ in first[:-1] + second[:-1]]
    _, rest = await api.stream(
        "GET", f"/api/workers/{template['id']}?stream=true", **{"last-event-id": str(last_first)}
    )
    assert rest == second


async def test_injected_statuses_reach_todays_routes_too(api: API) -> None:
    template = await api.template()
    status, answer = await api.call(
        "POST",
        "/api/tasks",
        {"input": "x", "workerId": template["id"]},
        **{FAULT_HEADER: "status=503; retry-after=1"},
    )
    assert status == 503 and answer["error"]["status"] == 503
    assert "unknown fault" in await api.refused(
        400, "GET", f"/api/workers/{template['id']}", **{FAULT_HEADER: "explode=1"}
    )


async def test_task_ids_are_checked(api: API) -> None:
    template = await api.template()
    other = await api.template()
    message = await api.refused(
        400, "POST", "/api/tasks", {"input": "x", "workerId": template["id"], "taskId": "a/b"}
    )
    assert message.startswith("taskId:")
    await api.ok("POST", "/api/tasks", {"input": "x", "workerId": template["id"], "taskId": "t1"})
    message = await api.refused(
        400, "POST", "/api/tasks", {"input": "y", "workerId": other["id"], "taskId": "t1"}
    )
    assert "t1" in message and template["id"] in message
    assert "no worker" in await api.refused(
        404, "POST", "/api/tasks", {"input": "x", "workerId": "wrk_nope"}
    )
    assert (await api.refused(400, "POST", "/api/tasks", {"workerId": template["id"]})).startswith(
        "input:"
    )
    assert "budget" in await api.refused(
        400, "POST", "/api/tasks", {"input": "x", "budget": "huge"}
    )
    assert "no task" in await api.refused(404, "GET", "/api/tasks/nope")
    assert "no task" in await api.refused(404, "DELETE", "/api/tasks/nope")


async def test_without_a_worker_id_a_template_is_made_from_the_input(api: API) -> None:
    worker = await api.ok("POST", "/api/tasks", {"input": "Track the price of copper"})
    await api.emu.idle()
    template = await api.ok("PATCH", f"/api/workers/{worker['id']}", {})
    assert template["instructions"] == "Track the price of copper"


async def test_a_task_is_archived_and_takes_no_more_turns(api: API) -> None:
    template = await api.template()
    await api.ok("POST", "/api/tasks", {"input": "x", "workerId": template["id"], "taskId": "t"})
    await api.emu.idle()
    assert await api.ok("DELETE", "/api/tasks/t") == {"archived": True}
    found = await api.ok("GET", "/api/tasks/t")  # turns and files are kept
    assert len(found["turns"]) == 1
    assert "archived" in await api.refused(409, "POST", "/api/tasks", {"input": "y", "taskId": "t"})
    listed = await api.ok("GET", f"/emulator/workers/{template['id']}/tasks")
    assert [(t["id"], t["archived"]) for t in listed["tasks"]] == [("t", True)]


async def test_a_multipart_task_puts_files_in_its_workspace(api: API) -> None:
    template = await api.template()
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("input", "Read the data")
    form.add_field("workerId", template["id"])
    form.add_field("taskId", "with-files")
    form.add_field("files", b"a,b\n1,2\n", filename="data/q3.csv", content_type="text/csv")
    headers = {"authorization": "Bearer k"}
    async with api.session.post(api.emu.base_url + "/api/tasks", data=form, headers=headers) as r:
        assert r.status == 200
        worker = await r.json()
    [upload] = worker["files"]
    assert (upload["filename"], upload["size"]) == ("data/q3.csv", 8)
    assert upload["url"].endswith("/api/tasks/with-files/files/data/q3.csv")
    async with api.session.get(upload["url"], headers=headers) as r:
        assert await r.read() == b"a,b\n1,2\n"


# --- statuses: error and aborted -------------------------------------------------------


async def test_a_failed_turn_is_an_error_and_an_aborted_one_aborted(api: API) -> None:
    template = await api.template()
    _, failed = await api.stream(
        "POST",
        "/api/tasks",
        {"input": "x", "workerId": template["id"], "taskId": "bad", "stream": True},
        **{FAULT_HEADER: "error-after=5"},
    )
    assert chunks(failed)[-2]["type"] == "error"
    assert chunks(failed)[-1]["data"]["error"] == "injected fault: the agent failed"
    _, stopped = await api.stream(
        "POST",
        "/api/tasks",
        {"input": "x", "workerId": template["id"], "taskId": "stopped", "stream": True},
        **{FAULT_HEADER: "abort-after=5"},
    )
    assert chunks(stopped)[-2] == {"type": "abort"}
    assert chunks(stopped)[-1]["data"]["error"] is None
    bad = await api.ok("GET", "/api/tasks/bad")
    assert bad["task"]["status"] == bad["turns"][0]["status"] == "error"
    aborted = await api.ok("GET", "/api/tasks/stopped")
    assert aborted["task"]["status"] == aborted["turns"][0]["status"] == "aborted"
    assert aborted["turns"][0]["completedAt"] is not None
    # A follow-up that completes makes the task completed again.
    await api.ok("POST", "/api/tasks", {"input": "again", "taskId": "bad"})
    await api.emu.idle()
    assert (await api.ok("GET", "/api/tasks/bad"))["task"]["status"] == "completed"


async def test_a_cancelled_task_turn_is_aborted() -> None:
    async with (
        Emulator(clock=EmulatorClock(start=START), tokens_per_second=200) as emu,
        aiohttp.ClientSession() as session,
    ):
        api = API(emu, session)
        template = await api.template()
        await api.ok(
            "POST", "/api/tasks", {"input": "x", "workerId": template["id"], "taskId": "c"}
        )
        await asyncio.sleep(0.1)  # some chunks out, not all
        emu.cancel_task("c")
        await emu.idle()
        turn = (await api.ok("GET", "/api/tasks/c"))["turns"][0]
        assert turn["status"] == "aborted"
        assert turn["outputTokens"] < 50  # stopped early (the whole answer is longer)
        assert "no turn running" in await api.refused(409, "POST", "/emulator/tasks/c/cancel")
        # Over HTTP, while its stream is being read: the stream ends with an abort chunk.
        reading = asyncio.ensure_future(
            api.stream(
                "POST",
                "/api/tasks",
                {"input": "y", "workerId": template["id"], "taskId": "d", "stream": True},
            )
        )
        for _ in range(500):  # until the task exists (its request is on its way)
            if (await api.call("GET", "/api/tasks/d"))[0] == 200:
                break
            await asyncio.sleep(0.01)
        assert await api.ok("POST", "/emulator/tasks/d/cancel") == {"cancelled": True}
        _, events = await reading
        assert chunks(events)[-2] == {"type": "abort"} and events[-1][1] == b"[DONE]"
        assert (await api.ok("GET", "/api/tasks/d"))["task"]["status"] == "aborted"


# --- what starts a task ---------------------------------------------------------------


async def test_tasks_started_by_email_and_the_web_ui(api: API) -> None:
    template = await api.template()
    task_id = api.emu.start_task(template["id"], "Reply to this e-mail")
    worker = await api.ok(
        "POST", "/emulator/tasks", {"workerId": template["id"], "input": "Hi", "triggeredBy": "ui"}
    )
    await api.emu.idle()
    by_mail = (await api.ok("GET", f"/api/tasks/{task_id}"))["task"]
    assert (by_mail["triggeredBy"], by_mail["createdByUserId"]) == ("email", None)
    by_ui = (await api.ok("GET", f"/api/tasks/{worker['metadata']['taskId']}"))["task"]
    assert by_ui["triggeredBy"] == "ui" and by_ui["createdByUserId"]
    message = await api.refused(
        400,
        "POST",
        "/emulator/tasks",
        {"workerId": template["id"], "input": "x", "triggeredBy": "fax"},
    )
    assert message.startswith("triggeredBy:")


# --- structured output --------------------------------------------------------------------


async def test_structured_output_fits_the_schema(api: API) -> None:
    template = await api.template(title="Weather", outputSchema=SCHEMA)
    assert template["outputSchema"] == SCHEMA
    _, events = await api.stream(
        "POST",
        "/api/tasks",
        {"input": "Weather in Lyon", "workerId": template["id"], "taskId": "w", "stream": True},
    )
    final = chunks(events)[-1]["data"]
    jsonschema.Draft7Validator(SCHEMA).validate(final["structured_output"])
    turn = (await api.ok("GET", "/api/tasks/w"))["turns"][0]
    assert turn["structuredOutput"] == final["structured_output"]
    # Cleared: the next turn answers free-form.
    await api.ok("PATCH", f"/api/workers/{template['id']}", {"outputSchema": None})
    await api.ok("POST", "/api/tasks", {"input": "And Nice?", "taskId": "w"})
    await api.emu.idle()
    second = (await api.ok("GET", "/api/tasks/w"))["turns"][1]
    assert second["status"] == "completed" and second["structuredOutput"] is None


async def test_a_bad_output_schema_is_refused_naming_it(api: API) -> None:
    for schema, words in (
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": "1"}}}, "draft-07"),
        ({"type": "array"}, '"type": "object"'),
        ({"type": "object", "required": ["n"], "additionalProperties": False}, "cannot make"),
        (
            {"type": "object", "properties": {"s": {"type": "string", "minLength": 10**6}}},
            "minLength",
        ),
        ("not a schema", "JSON Schema object"),
    ):
        message = await api.refused(422, "POST", "/api/workers", {"outputSchema": schema})
        assert message.startswith("outputSchema:") and words in message, message
    made = await api.template()
    message = await api.refused(
        422, "PATCH", f"/api/workers/{made['id']}", {"outputSchema": {"type": "nope"}}
    )
    assert message.startswith("outputSchema:")


# --- schedules ------------------------------------------------------------------------------


async def _schedule_tasks(api: API, worker_id: str) -> list[dict[str, Any]]:
    await api.emu.idle()
    listed = await api.ok("GET", f"/emulator/workers/{worker_id}/tasks")
    tasks: list[dict[str, Any]] = listed["tasks"]
    return tasks


async def test_a_cron_schedule_fires_on_the_test_clock(api: API) -> None:
    clock = api.emu.clock
    assert isinstance(clock, EmulatorClock)
    template = await api.template()
    path = f"/api/workers/{template['id']}/schedules"
    schedule = await api.ok(
        "POST",
        path,
        {"input": "Morning brief", "budget": "low", "when": {"type": "cron", "cron": "0 9 * * *"}},
    )
    assert schedule["type"] == "cron" and schedule["cron"] == "0 9 * * *"
    assert schedule["nextRunAt"] == "2026-03-02T09:00:00.000Z"
    assert clock.advance(3599) == 0
    assert await _schedule_tasks(api, template["id"]) == []
    fired = [clock.advance(1), clock.advance(24 * 3600), clock.advance(24 * 3600)]
    assert fired == [1, 1, 1]
    tasks = await _schedule_tasks(api, template["id"])
    assert [t["triggeredBy"] for t in tasks] == ["schedule"] * 3
    assert [t["createdAt"][:13] for t in tasks] == [
        "2026-03-02T09",
        "2026-03-03T09",
        "2026-03-04T09",
    ]
    assert all(t["status"] == "completed" and t["createdByUserId"] is None for t in tasks)
    [listed] = (await api.ok("GET", path))["schedules"]
    assert listed["nextRunAt"] == "2026-03-05T09:00:00.000Z"
    assert await api.ok("DELETE", f"{path}/{schedule['id']}") == {"cancelled": True}
    assert clock.advance(7 * 24 * 3600) == 0
    assert len(await _schedule_tasks(api, template["id"])) == 3
    assert (await api.ok("GET", path))["schedules"] == []
    assert "no schedule" in await api.refused(404, "DELETE", f"{path}/{schedule['id']}")


async def test_scheduled_delayed_and_interval_schedules_fire(api: API) -> None:
    clock = api.emu.clock
    assert isinstance(clock, EmulatorClock)
    template = await api.template()
    path = f"/api/workers/{template['id']}/schedules"
    at = await api.ok(
        "POST", path, {"input": "At", "when": {"type": "scheduled", "date": "2026-03-02T08:30:00Z"}}
    )
    later = await api.ok(
        "POST", path, {"input": "Later", "when": {"type": "delayed", "delayInSeconds": 600}}
    )
    every = await api.ok(
        "POST", path, {"input": "Every", "when": {"type": "interval", "intervalSeconds": 900}}
    )
    assert (at["date"], at["nextRunAt"]) == ("2026-03-02T08:30:00Z", "2026-03-02T08:30:00.000Z")
    assert (later["delayInSeconds"], later["nextRunAt"]) == (600, "2026-03-02T08:10:00.000Z")
    assert (every["intervalSeconds"], every["nextRunAt"]) == (900, "2026-03-02T08:15:00.000Z")
    assert clock.advance(3600) == 1 + 1 + 4
    tasks = await _schedule_tasks(api, template["id"])
    assert [t["title"] for t in tasks] == ["Later", "Every", "At", "Every", "Every", "Every"]
    # One-offs leave the list once they ran; the interval goes on.
    [left] = (await api.ok("GET", path))["schedules"]
    assert (left["id"], left["nextRunAt"]) == (every["id"], "2026-03-02T09:15:00.000Z")


async def test_bad_schedules_are_refused_naming_the_field(api: API) -> None:
    template = await api.template()
    path = f"/api/workers/{template['id']}/schedules"
    for when, start in (
        ({"type": "hourly"}, "when.type:"),
        ({"type": "cron", "cron": "61 * * * *"}, "when.cron:"),
        ({"type": "cron", "cron": "0 0 30 2 *"}, "when.cron:"),
        ({"type": "scheduled", "date": "next tuesday"}, "when.date:"),
        ({"type": "scheduled", "date": "2020-01-01T00:00:00Z"}, "when.date:"),
        ({"type": "delayed", "delayInSeconds": 0}, "when.delayInSeconds:"),
        ({"type": "interval", "intervalSeconds": "60"}, "when.intervalSeconds:"),
    ):
        message = await api.refused(400, "POST", path, {"input": "x", "when": when})
        assert message.startswith(start), message
    assert (await api.refused(400, "POST", path, {"input": "x"})).startswith("when:")
    assert (await api.refused(400, "POST", path, {"when": {"type": "delayed"}})).startswith(
        "input:"
    )
    assert "no worker" in await api.refused(
        404, "POST", "/api/workers/wrk_nope/schedules", {"input": "x", "when": {"type": "delayed"}}
    )


async def test_deleting_a_template_cancels_its_schedules(api: API) -> None:
    template = await api.template()
    path = f"/api/workers/{template['id']}/schedules"
    await api.ok("POST", path, {"input": "x", "when": {"type": "interval", "intervalSeconds": 60}})
    await api.ok("DELETE", f"/api/workers/{template['id']}")
    assert api.emu.clock.advance(600) == 0  # type: ignore[attr-defined]


# --- webhooks -----------------------------------------------------------------------------


class Receiver(LoopbackServer):
    """A webhook receiver on loopback: answers each delivery with the next status."""

    _kind, _usage = "webhook receiver", "Receiver()"

    def __init__(self, statuses: list[int] | None = None, pause: float = 0.0) -> None:
        super().__init__()
        self.statuses = list(statuses or [])
        self.pause = pause
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        return app

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        if self.pause:
            await asyncio.sleep(self.pause)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")

    @property
    def url(self) -> str:
        return self.base_url + "/hook"


async def test_deliveries_are_retried_and_every_attempt_logged(api: API) -> None:
    template = await api.template()
    hook_path = f"/api/workers/{template['id']}/webhook"
    assert await api.ok("GET", hook_path) == {"url": None, "token": None}
    async with Receiver(statuses=[500, 503]) as receiver:
        hook = await api.ok("PUT", hook_path, {"url": receiver.url})
        assert hook["url"] == receiver.url and hook["token"]
        assert (await api.ok("PUT", hook_path, {"url": receiver.url}))["token"] == hook["token"]
        await api.ok(
            "POST", "/api/tasks", {"input": "Hi", "workerId": template["id"], "taskId": "hooked"}
        )
        await api.emu.idle()
        assert len(receiver.received) == 3
        for headers, body in receiver.received:
            assert headers["X-Handinger-Token"] == hook["token"]
            delivery = msgspec.json.decode(body)
            assert delivery["type"] == "task.completed"
            assert delivery["task"]["id"] == "hooked" and delivery["task"]["status"] == "completed"
            assert delivery["turn"]["seq"] == 1 and delivery["worker"]["id"] == template["id"]
        assert len({h["X-Handinger-Delivery"] for h, _ in receiver.received}) == 1
        page = await api.ok("GET", f"{hook_path}/executions?page=1")
        assert (page["page"], page["pageCount"], page["totalCount"]) == (1, 1, 3)
        logs = page["logs"]
        assert [e["requestStatus"] for e in logs] == ["success", "error", "error"]  # newest first
        assert [e["responseStatus"] for e in logs] == [200, 503, 500]
        assert logs[1]["errorMessage"] == "the receiver answered HTTP 503"
        assert all(
            e["workerId"] == template["id"]
            and e["taskId"] == "hooked"
            and e["taskTitle"] == "Hi"
            and e["url"] == receiver.url
            and e["durationMs"] >= 0
            and iso_ok(e["createdAt"])
            for e in logs
        )
        assert hook["token"] not in str(page)

        # A new token: the next delivery carries it, the old one is gone.
        fresh = await api.ok("POST", f"{hook_path}/regenerate-token")
        assert fresh["url"] == receiver.url and fresh["token"] not in (None, hook["token"])
        await api.ok("POST", "/api/tasks", {"input": "Again", "taskId": "hooked"})
        await api.emu.idle()
        assert receiver.received[-1][0]["X-Handinger-Token"] == fresh["token"]
        assert (await api.ok("GET", f"{hook_path}/executions"))["totalCount"] == 4

    assert await api.ok("DELETE", hook_path) == {"url": None, "token": None}
    assert "no webhook" in await api.refused(409, "POST", f"{hook_path}/regenerate-token")


async def test_the_execution_log_is_paged_newest_first() -> None:
    async with (
        Emulator(clock=EmulatorClock(start=START), webhook_retries=3) as emu,
        aiohttp.ClientSession() as session,
        Receiver(statuses=[500] * 40) as receiver,
    ):
        api = API(emu, session)
        template = await api.template()
        path = f"/api/workers/{template['id']}/webhook"
        await api.ok("PUT", path, {"url": receiver.url})
        for n in range(6):  # 4 attempts each, all failing
            await api.ok("POST", "/api/tasks", {"input": f"Q{n}", "workerId": template["id"]})
            await emu.idle()
        first = await api.ok("GET", f"{path}/executions")
        second = await api.ok("GET", f"{path}/executions?page=2")
        third = await api.ok("GET", f"{path}/executions?page=3")
        assert (first["pageCount"], first["totalCount"], len(first["logs"])) == (2, 24, 20)
        assert (second["page"], len(second["logs"]), third["logs"]) == (2, 4, [])
        assert first["logs"][0]["taskTitle"] == "Q5" and second["logs"][-1]["taskTitle"] == "Q0"
        stamps = [e["createdAt"] for e in first["logs"] + second["logs"]]
        ids = [e["id"] for e in first["logs"] + second["logs"]]
        assert stamps == sorted(stamps, reverse=True) and ids == sorted(ids, reverse=True)
        for bad in ("0", "x", "-1"):
            message = await api.refused(400, "GET", f"{path}/executions?page={bad}")
            assert message.startswith("page:")


async def test_a_slow_receiver_does_not_wedge_the_emulator() -> None:
    async with (
        Emulator(clock=EmulatorClock(start=START), webhook_timeout=0.3, webhook_retries=1) as emu,
        aiohttp.ClientSession() as session,
        Receiver(pause=5.0) as receiver,
    ):
        api = API(emu, session)
        template = await api.template()
        path = f"/api/workers/{template['id']}/webhook"
        await api.ok("PUT", path, {"url": receiver.url})
        await api.ok("POST", "/api/tasks", {"input": "Hi", "workerId": template["id"]})
        # Meanwhile the emulator answers at once.
        assert (await api.ok("GET", f"/api/workers/{template['id']}"))["id"] == template["id"]
        await emu.idle(within=5)
        logs = (await api.ok("GET", f"{path}/executions"))["logs"]
        assert [e["errorMessage"] for e in logs] == ["no answer within 0.3 s"] * 2
        assert all(e["responseStatus"] is None and e["durationMs"] < 1500 for e in logs)


async def test_webhook_urls_are_checked(api: API) -> None:
    template = await api.template()
    path = f"/api/workers/{template['id']}/webhook"
    for url in ("http://example.com/hook", "ftp://127.0.0.1/x", "not a url", 7):
        assert (await api.refused(400, "PUT", path, {"url": url})).startswith("url:")
    assert (await api.refused(400, "PUT", path, {})).startswith("url:")
    for url in ("https://example.com/hook", "http://localhost:9/x", "http://[::1]:9/x"):
        assert (await api.ok("PUT", path, {"url": url}))["url"] == url
    assert "no worker" in await api.refused(404, "GET", "/api/workers/wrk_nope/webhook")


# --- without the emulator extra ----------------------------------------------------------


async def test_without_the_extra_a_schema_and_a_cron_are_refused_saying_how(
    api: API, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import fails, as if not installed
    monkeypatch.setitem(sys.modules, "croniter", None)
    message = await api.refused(501, "POST", "/api/workers", {"outputSchema": SCHEMA})
    assert "jsonschema" in message and "pip install 'handinger-stream[emulator]'" in message
    template = await api.template()  # without a schema: fine
    message = await api.refused(
        501,
        "POST",
        f"/api/workers/{template['id']}/schedules",
        {"input": "x", "when": {"type": "cron", "cron": "0 9 * * *"}},
    )
    assert "croniter" in message and "handinger-stream[emulator]" in message
    # The rest of today's API works without them.
    await api.ok(
        "POST",
        f"/api/workers/{template['id']}/schedules",
        {"input": "x", "when": {"type": "delayed", "delayInSeconds": 5}},
    )


# --- in a thread -----------------------------------------------------------------------------


def test_the_clock_and_start_task_work_when_the_emulator_runs_in_a_thread() -> None:
    import httpx

    clock = EmulatorClock(start=START)
    with Emulator(clock=clock) as emu:
        auth = {"authorization": "Bearer k"}
        with httpx.Client(base_url=emu.base_url, headers=auth) as http:
            template = http.post("/api/workers", json={"title": "T"}).json()
            http.post(
                f"/api/workers/{template['id']}/schedules",
                json={"input": "x", "when": {"type": "cron", "cron": "*/10 * * * *"}},
            )
            assert clock.advance(1800) == 3  # from this thread; fired on the emulator's
            task_id = emu.start_task(template["id"], "By mail")
            asyncio.run(emu.idle())
            tasks = http.get(f"/emulator/workers/{template['id']}/tasks").json()["tasks"]
    assert [t["triggeredBy"] for t in tasks] == ["schedule"] * 3 + ["email"]
    assert (
        tasks[-1]["id"] == task_id
        and parse_iso(tasks[0]["createdAt"])
        == datetime(2026, 3, 2, 8, 10, tzinfo=timezone.utc).timestamp()
    )


# --- one turn at a time per template; the real clock; our own client ---------------------


async def test_a_template_plays_its_turns_one_at_a_time() -> None:
    async with (
        Emulator(clock=EmulatorClock(start=START), tokens_per_second=400) as emu,
        aiohttp.ClientSession() as session,
    ):
        api = API(emu, session)
        template = await api.template()
        body = {"workerId": template["id"], "stream": True}
        (_, first), (_, second) = await asyncio.gather(
            api.stream("POST", "/api/tasks", {**body, "input": "First", "taskId": "a"}),
            api.stream("POST", "/api/tasks", {**body, "input": "Second", "taskId": "b"}),
        )
        ids = [int(i) for i, _ in first[:-1] + second[:-1]]  # type: ignore[arg-type]
        assert ids == list(range(len(ids)))  # the second turn's events follow the first's
        assert {c["data"]["metadata"]["taskId"] for c in chunks(first) if "data" in c} == {"a"}
        assert {c["data"]["metadata"]["taskId"] for c in chunks(second) if "data" in c} == {"b"}


async def test_a_schedule_fires_on_the_real_clock_by_default() -> None:
    async with Emulator() as emu, aiohttp.ClientSession() as session:
        api = API(emu, session)
        template = await api.template()
        path = f"/api/workers/{template['id']}/schedules"
        await api.ok(
            "POST", path, {"input": "Soon", "when": {"type": "delayed", "delayInSeconds": 1}}
        )
        tasks: list[dict[str, Any]] = []
        for _ in range(40):
            await asyncio.sleep(0.05)
            tasks = (await api.ok("GET", f"/emulator/workers/{template['id']}/tasks"))["tasks"]
            if tasks:
                break
        assert [t["triggeredBy"] for t in tasks] == ["schedule"]


async def test_our_client_runs_a_task_and_resumes_it_through_the_worker_replay(
    api: API,
) -> None:
    from handinger_stream import AsyncHandinger

    template = await api.template()
    async with AsyncHandinger(**api.emu.client_options()) as client:
        await client.tasks.create(input="Warm up", worker_id=template["id"], task_id="warm")
        await api.emu.idle()
        api.emu.inject_fault("drop-after=12")  # the task's stream is cut; the resume is not
        stream = await client.tasks.create(
            input="Hi there", worker_id=template["id"], task_id="cut", stream=True
        )
        final = await stream.get_final_worker()
        found = await client.tasks.retrieve("cut")
        assert final.id == template["id"] and final.metadata["taskId"] == "cut"
        assert [t.output_text for t in found.turns] == [final.output_text]
        assert found.task.totals.turn_count == 1 and found.task.status == "completed"
        assert (await client.tasks.delete("cut")).archived is True


async def test_an_unreachable_receiver_is_logged_without_the_token() -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with (
        Emulator(clock=EmulatorClock(start=START), webhook_retries=1) as emu,
        aiohttp.ClientSession() as session,
    ):
        api = API(emu, session)
        template = await api.template()
        path = f"/api/workers/{template['id']}/webhook"
        hook = await api.ok("PUT", path, {"url": f"http://127.0.0.1:{port}/hook"})
        await api.ok("POST", "/api/tasks", {"input": "Hi", "workerId": template["id"]})
        await emu.idle()
        logs = (await api.ok("GET", f"{path}/executions"))["logs"]
        assert [(e["requestStatus"], e["responseStatus"]) for e in logs] == [("error", None)] * 2
        assert all(e["errorMessage"].startswith("ClientConnectorError") for e in logs)
        assert hook["token"] not in str(logs)
