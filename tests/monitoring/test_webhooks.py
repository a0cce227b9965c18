"""The webhook receiver's core, request by request without a network: what it verifies,
refuses, recognises, and hands on once. The adapters over real HTTP: test_webhooks_http.py."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handinger_stream.monitoring.webhooks import (
    WebhookDelivery,
    WebhookReceiver,
    WebhookRejected,
    WebhookReply,
    read_delivery,
    recognise,
    render_json,
    render_line,
)
from tests.helpers.webhooks import TASK, TOKEN, WORKER


def body_of(value: object) -> bytes:
    return msgspec.json.encode(value)


async def post(
    receiver: WebhookReceiver,
    body: bytes,
    *,
    token: str | None = TOKEN,
    method: str = "POST",
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    read: Callable[[int], Awaitable[bytes]] | None = None,
) -> WebhookReply:
    """One request to the core, as an adapter makes it (lower-case header names)."""
    sent = {"content-length": str(len(body))}
    if token is not None:
        sent["x-handinger-token"] = token
    if content_type is not None:
        sent["content-type"] = content_type
    sent.update(headers or {})

    async def read_body(limit: int) -> bytes:
        return body[: limit + 1]

    return await receiver.handle(method, sent, read or read_body)


def answer(reply: WebhookReply) -> Any:
    return json.loads(reply.body)


def collecting(**options: Any) -> tuple[WebhookReceiver, list[WebhookDelivery]]:
    got: list[WebhookDelivery] = []
    return WebhookReceiver(TOKEN, got.append, **options), got


# -- the token -------------------------------------------------------------------------


async def test_the_right_token_is_accepted_and_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    receiver, got = collecting()
    reply = await post(receiver, body_of({"hello": 1}))
    assert reply.status == 200 and answer(reply)["ok"] is True
    assert compared == [(TOKEN.encode(), TOKEN.encode())]
    assert len(got) == 1

    compared.clear()
    assert (await post(receiver, body_of({"hello": 2}), token="whsec-wrong")).status == 401
    assert compared == [(b"whsec-wrong", TOKEN.encode())]


@pytest.mark.parametrize("token", ["wrong", None, "", TOKEN + "x", TOKEN[:-1], TOKEN.upper()])
async def test_a_wrong_or_missing_token_is_401_with_no_detail(token: str | None) -> None:
    reply_read: list[int] = []

    async def read_body(limit: int) -> bytes:
        reply_read.append(limit)
        return b"{}"

    receiver, got = collecting()
    reply = await post(receiver, b"{}", token=token, read=read_body)
    assert reply.status == 401
    assert answer(reply) == {"error": {"message": "unauthorized", "type": "unauthorized"}}
    assert not got and not reply_read  # the body of a stranger is not even read
    assert receiver.rejected == 1


async def test_every_token_of_a_rotation_is_accepted() -> None:
    got: list[WebhookDelivery] = []
    receiver = WebhookReceiver(["whsec-old", "whsec-new"], got.append)
    assert (await post(receiver, b'{"a": 1}', token="whsec-old")).status == 200
    assert (await post(receiver, b'{"a": 2}', token="whsec-new")).status == 200
    assert (await post(receiver, b'{"a": 3}', token="whsec-other")).status == 401
    assert [d.raw["a"] for d in got] == [1, 2]


@pytest.mark.parametrize("token", ["", [], [""]])
def test_a_receiver_needs_a_token(token: Any) -> None:
    with pytest.raises(ValueError, match="token"):
        WebhookReceiver(token)


async def test_the_token_is_in_no_repr_log_line_or_answer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="handinger_stream")

    def fail(delivery: WebhookDelivery) -> None:
        raise RuntimeError(f"handler failed on {delivery.delivery_id}")

    receiver = WebhookReceiver(TOKEN, fail)
    replies = [
        await post(receiver, b'{"a": 1}'),
        await post(receiver, b'{"a": 1}', token="x" + TOKEN),
        await post(receiver, b"[]"),
        await post(receiver, b"{}", method="GET"),
    ]
    assert [r.status for r in replies] == [500, 401, 400, 405]
    shown = [repr(receiver), str(receiver), caplog.text, *(r.body.decode() for r in replies)]
    shown += [repr(r.headers) for r in replies]
    assert not any(TOKEN in text for text in shown)
    assert "handler failed" in caplog.text  # the server's log says what went wrong...
    assert answer(replies[0]) == {"error": {"message": "internal error", "type": "internal"}}
    assert b"Traceback" not in replies[0].body and b"RuntimeError" not in replies[0].body


# -- what is refused ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"])
async def test_only_post_is_accepted(method: str) -> None:
    receiver, got = collecting()
    reply = await post(receiver, b"{}", method=method)
    assert reply.status == 405 and reply.headers["allow"] == "POST"
    assert not got


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "json", ""]
)
async def test_a_body_that_is_not_json_by_its_type_is_415(content_type: str | None) -> None:
    receiver, got = collecting()
    assert (await post(receiver, b"{}", content_type=content_type)).status == 415
    assert not got


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=utf-8", "application/vnd.handinger+json"],
)
async def test_json_content_types_are_accepted(content_type: str) -> None:
    receiver, got = collecting()
    assert (await post(receiver, b"{}", content_type=content_type)).status == 200
    assert len(got) == 1


async def test_an_oversize_body_is_413_by_its_length_before_it_is_read() -> None:
    read: list[int] = []

    async def read_body(limit: int) -> bytes:
        read.append(limit)
        return b"{}"

    receiver, got = collecting(max_body=100)
    reply = await post(receiver, b"{" + b" " * 200 + b"}", read=read_body)
    assert reply.status == 413 and not read and not got


async def test_an_oversize_body_without_a_length_is_413_once_read() -> None:
    receiver, got = collecting(max_body=100)
    body = body_of({"text": "x" * 200})
    reply = await receiver.handle(
        "POST",
        {"x-handinger-token": TOKEN, "content-type": "application/json"},
        lambda limit: _const(body[: limit + 1]),
    )
    assert reply.status == 413 and not got


async def _const(data: bytes) -> bytes:
    return data


async def test_a_body_that_takes_too_long_is_408() -> None:
    async def never(limit: int) -> bytes:
        await asyncio.sleep(10)
        return b"{}"

    receiver, got = collecting(read_timeout=0.05)
    assert (await post(receiver, b"{}", read=never)).status == 408
    assert not got


@pytest.mark.parametrize("depth", [65, 200, 5000, 200_000])
async def test_a_body_nested_too_deeply_is_400(depth: int) -> None:
    receiver, got = collecting()
    body = b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    reply = await post(receiver, body)
    assert reply.status == 400 and "nest" in answer(reply)["error"]["message"]
    assert not got


async def test_a_body_nested_to_the_limit_is_accepted() -> None:
    receiver, got = collecting(max_depth=10)
    assert (await post(receiver, b'{"a":' + b"[" * 9 + b"]" * 9 + b"}")).status == 200
    assert (await post(receiver, b'{"a":' + b"[" * 10 + b"]" * 10 + b"}")).status == 400
    assert len(got) == 1


@pytest.mark.parametrize("body", [b"[]", b"[{}]", b"1", b'"text"', b"null", b"true"])
async def test_json_that_is_not_an_object_is_400(body: bytes) -> None:
    receiver, got = collecting()
    reply = await post(receiver, body)
    assert reply.status == 400
    assert answer(reply)["error"]["message"] == "the body must be a JSON object"
    assert not got


@pytest.mark.parametrize("body", [b"", b"{", b"{'a': 1}", b"\xff\xfe", b'{"a": 1} x'])
async def test_a_body_that_is_not_json_is_400(body: bytes) -> None:
    receiver, got = collecting()
    reply = await post(receiver, body)
    assert reply.status == 400 and answer(reply)["error"]["message"] == "the body is not valid JSON"
    assert not got


# -- what is recognised ------------------------------------------------------------------


async def test_a_task_body_is_read_as_a_task() -> None:
    receiver, got = collecting()
    assert (await post(receiver, body_of(TASK))).status == 200
    [delivery] = got
    assert delivery.worker is None and delivery.task is not None
    assert (delivery.task.id, delivery.task.worker_id, delivery.task.triggered_by) == (
        "tsk_1",
        "wrk_1",
        "schedule",
    )
    assert delivery.task.totals.credits == 3
    assert (delivery.task_id, delivery.worker_id, delivery.status) == (
        "tsk_1",
        "wrk_1",
        "completed",
    )
    assert delivery.raw == TASK


async def test_a_worker_body_is_read_as_a_worker_whatever_its_generation() -> None:
    receiver, got = collecting()
    assert (await post(receiver, body_of(WORKER))).status == 200
    [delivery] = got
    assert delivery.task is None and delivery.worker is not None
    assert (delivery.worker.id, delivery.worker.status, delivery.worker.output_text) == (
        "wrk_1",
        "completed",
        "All done.",
    )
    assert delivery.raw == WORKER  # what did not fit the model is still here
    assert (delivery.worker_id, delivery.status) == ("wrk_1", "completed")


def test_a_task_and_a_worker_under_keys_are_both_read() -> None:
    delivery = read_delivery(body_of({"type": "task.completed", "task": TASK, "worker": WORKER}))
    assert delivery.type == "task.completed"
    assert delivery.task is not None and delivery.task.id == "tsk_1"
    assert delivery.worker is not None and delivery.worker.output_text == "All done."


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"task": TASK}},
        {"event": "finished", "payload": {"result": WORKER, "run": TASK}},
        {"items": [TASK], "data": {"object": WORKER}},
    ],
)
def test_a_task_or_worker_is_found_a_level_or_two_down(body: dict[str, Any]) -> None:
    worker, task = recognise(body)
    if "items" in body:  # inside a list is not looked into: only objects' values
        assert task is None and worker is not None
    else:
        assert task is not None and task.id == "tsk_1"
    if "payload" in body:
        assert worker is not None and worker.id == "wrk_1"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"hello": "world"},
        {"id": "x", "status": "completed"},  # an id and a status: neither a Task nor a Worker
        {"id": "ex_1", "workerId": "wrk_1", "taskId": "tsk_1", "requestStatus": "error"},
        {"id": 5, "object": "worker"},
        {"id": "t", "workerId": 5, "triggeredBy": "api"},
        {"a": {"b": {"c": TASK}}},  # too far down
    ],
)
async def test_an_unknown_body_is_kept_raw(body: dict[str, Any]) -> None:
    receiver, got = collecting()
    assert (await post(receiver, body_of(body))).status == 200
    [delivery] = got
    assert (delivery.worker, delivery.task, delivery.status) == (None, None, None)
    assert delivery.raw == body


def test_fields_that_do_not_fit_are_left_out_and_the_rest_read() -> None:
    task = {**TASK, "totals": {"credits": "lots"}, "status": "exploded", "title": 7}
    delivery = read_delivery(body_of({"task": task}))
    assert delivery.task is not None
    assert (delivery.task.id, delivery.task.title, delivery.task.status) == ("tsk_1", "", "pending")
    assert delivery.task.triggered_by == "schedule"
    assert delivery.raw["task"]["status"] == "exploded"


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)
OBJECTS = st.dictionaries(
    st.sampled_from(["id", "workerId", "object", "task", "worker", "status", "type"])
    | st.text(max_size=8),
    JSON | st.just(TASK) | st.just(WORKER),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(OBJECTS)
def test_any_json_object_is_accepted_and_kept_whole(body: dict[str, Any]) -> None:
    async def once() -> tuple[WebhookReply, list[WebhookDelivery]]:
        receiver, got = collecting()
        return await post(receiver, body_of(body)), got

    reply, got = asyncio.run(once())
    assert reply.status == 200, reply.body
    [delivery] = got
    assert delivery.raw == body
    assert delivery.delivery_id.startswith("sha256:")
    render_line(delivery)
    assert json.loads(render_json(delivery))["body"] == body


# -- once each ----------------------------------------------------------------------------


async def test_a_retried_delivery_is_handed_on_once() -> None:
    receiver, got = collecting()
    first = await post(receiver, body_of(TASK))
    again = await post(receiver, body_of(TASK))
    # The sender may serialise its retry with its keys in another order.
    reordered = await post(receiver, json.dumps(dict(reversed(TASK.items()))).encode())
    assert [r.status for r in (first, again, reordered)] == [200, 200, 200]
    assert answer(again)["duplicate"] is True and "duplicate" not in answer(first)
    assert answer(first)["delivery_id"] == answer(again)["delivery_id"]
    assert len(got) == 1 and (receiver.handed, receiver.duplicates) == (1, 2)


async def test_a_delivery_id_header_decides_what_is_a_retry() -> None:
    receiver, got = collecting()
    sent = [
        ({"x-handinger-delivery-id": "d1"}, {"n": 1}),
        ({"x-handinger-delivery-id": "d1"}, {"n": 1, "attempt": 2}),  # a retry, told by its id
        ({"x-handinger-delivery-id": "d2"}, {"n": 1}),  # the same body, another delivery
        ({"idempotency-key": "d3"}, {"n": 3}),
        ({"x-handinger-delivery-id": "bad id with spaces"}, {"n": 4}),  # not an id: the digest
    ]
    for headers, body in sent:
        assert (await post(receiver, body_of(body), headers=headers)).status == 200
    assert [d.delivery_id for d in got][:3] == ["d1", "d2", "d3"]
    assert got[3].delivery_id.startswith("sha256:")
    assert [d.raw for d in got] == [{"n": 1}, {"n": 1}, {"n": 3}, {"n": 4}]


async def test_a_failed_handler_leaves_the_delivery_to_be_retried() -> None:
    calls: list[str] = []

    async def flaky(delivery: WebhookDelivery) -> None:
        calls.append(delivery.delivery_id)
        if len(calls) == 1:
            raise OSError("disk full")

    receiver = WebhookReceiver(TOKEN, flaky)
    assert (await post(receiver, body_of(TASK))).status == 500
    assert (await post(receiver, body_of(TASK))).status == 200
    assert (await post(receiver, body_of(TASK))).status == 200
    assert len(calls) == 2 and calls[0] == calls[1] and receiver.handed == 1


async def test_a_slow_handler_times_out_and_its_retry_is_handed_on() -> None:
    calls: list[int] = []

    async def slow(delivery: WebhookDelivery) -> None:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(10)

    receiver = WebhookReceiver(TOKEN, slow, handler_timeout=0.05)
    first = await post(receiver, body_of(TASK))
    assert first.status == 503 and first.headers["retry-after"] == "1"
    assert (await post(receiver, body_of(TASK))).status == 200
    assert len(calls) == 2


async def test_a_retry_while_the_first_attempt_is_handled_is_told_to_come_back() -> None:
    release = asyncio.Event()
    got: list[WebhookDelivery] = []

    async def waiting(delivery: WebhookDelivery) -> None:
        await release.wait()
        got.append(delivery)

    receiver = WebhookReceiver(TOKEN, waiting)
    first = asyncio.ensure_future(post(receiver, body_of(TASK)))
    await asyncio.sleep(0.01)
    assert (await post(receiver, body_of(TASK))).status == 503
    release.set()
    assert (await first).status == 200
    assert answer(await post(receiver, body_of(TASK)))["duplicate"] is True
    assert len(got) == 1


async def test_the_window_of_remembered_deliveries_is_bounded() -> None:
    receiver, got = collecting(window=2)
    for n in (1, 2, 1, 3, 4, 1):
        await post(receiver, body_of({"n": n}))
    # 1 is remembered while in the window; after 3 and 4 it has left it.
    assert [d.raw["n"] for d in got] == [1, 2, 3, 4, 1]
    assert len(receiver._seen) == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=8), max_size=40))
def test_each_delivery_is_handed_on_once_in_arrival_order(ns: list[int]) -> None:
    async def run() -> list[WebhookDelivery]:
        receiver, got = collecting()
        for n in ns:
            assert (await post(receiver, body_of({"n": n}))).status == 200
        return got

    got = asyncio.run(run())
    assert [d.raw["n"] for d in got] == list(dict.fromkeys(ns))


# -- the queue --------------------------------------------------------------------------------


async def test_without_a_handler_deliveries_are_read_in_order_with_async_for() -> None:
    receiver = WebhookReceiver(TOKEN, queue_size=4)
    sent = [{"n": n} for n in range(30)]

    async def send_all() -> None:
        for body in sent:
            assert (await post(receiver, body_of(body))).status == 200
        await post(receiver, body_of(sent[0]))  # a retry: not read twice
        receiver.close()

    sender = asyncio.ensure_future(send_all())
    read = [delivery.raw async for delivery in receiver]
    await sender
    assert read == sent
    assert (await post(receiver, body_of({"late": True}))).status == 503


async def test_a_full_queue_answers_503_and_the_retry_gets_in_later() -> None:
    receiver = WebhookReceiver(TOKEN, queue_size=1, handler_timeout=0.05)
    assert (await post(receiver, b'{"n": 1}')).status == 200
    assert (await post(receiver, b'{"n": 2}')).status == 503  # nobody reads: no room
    assert (await anext_(receiver)).raw == {"n": 1}
    assert (await post(receiver, b'{"n": 2}')).status == 200
    assert (await anext_(receiver)).raw == {"n": 2}


async def anext_(receiver: WebhookReceiver) -> WebhookDelivery:
    return await asyncio.wait_for(receiver.__anext__(), 1)


async def test_close_ends_the_iteration_after_the_queued_deliveries() -> None:
    receiver = WebhookReceiver(TOKEN)
    await post(receiver, b'{"n": 1}')
    receiver.close()
    assert receiver.closed
    assert [d.raw async for d in receiver] == [{"n": 1}]


# -- the lines the CLI prints ---------------------------------------------------------------------


AT = datetime(2026, 5, 1, 10, 0, 4, tzinfo=timezone.utc)


def test_render_line_names_the_task_its_worker_and_totals() -> None:
    delivery = read_delivery(
        body_of({"type": "task.completed", "task": TASK, "worker": WORKER}), received_at=AT
    )
    assert render_line(delivery) == (
        "2026-05-01T10:00:04Z  task.completed  task tsk_1 completed  worker wrk_1  "
        "'Weekly report'  3 credits 2.5s  'All done.'"
    )


def test_render_line_of_a_worker_a_failure_and_an_unknown_body() -> None:
    worker = read_delivery(body_of(WORKER), received_at=AT)
    assert (
        render_line(worker) == "2026-05-01T10:00:04Z  delivery  worker wrk_1 completed  'All done.'"
    )
    failed = read_delivery(body_of({**WORKER, "error": {"message": "boom\x1b[2J"}}), received_at=AT)
    assert render_line(failed).endswith("completed  error: boom[2J")
    assert "\x1b" not in render_line(failed)
    other = read_delivery(b'{"a": 1, "b": 2}', received_at=AT)
    assert render_line(other) == "2026-05-01T10:00:04Z  delivery  2 fields"


def test_render_json_is_one_line_with_the_ids_and_the_whole_body() -> None:
    body = {"type": "task.completed", "task": TASK, "note": "line\nbreak"}
    delivery = read_delivery(body_of(body), delivery_id="d1", received_at=AT)
    line = render_json(delivery)
    assert "\n" not in line
    assert json.loads(line) == {
        "type": "delivery",
        "delivery_id": "d1",
        "received_at": "2026-05-01T10:00:04Z",
        "event": "task.completed",
        "task_id": "tsk_1",
        "worker_id": "wrk_1",
        "status": "completed",
        "body": body,
    }


def test_check_is_the_whole_verification_without_io() -> None:
    receiver = WebhookReceiver(TOKEN)
    headers = {"x-handinger-token": TOKEN, "content-type": "application/json"}
    assert receiver.check("POST", headers, body_of(TASK)).task_id == "tsk_1"
    with pytest.raises(WebhookRejected) as refused:
        receiver.check("POST", {**headers, "x-handinger-token": "no"}, b"{}")
    assert refused.value.status == 401 and TOKEN not in repr(refused.value)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"type": "task.completed"}, "task.completed"),
        ({"event": "finished"}, "finished"),
        ({"type": 5, "event": "finished"}, "finished"),
        ({"type": {"name": "x"}}, None),
        ({}, None),
    ],
)
def test_the_type_is_the_bodys_type_or_event_when_a_string(
    body: dict[str, Any], kind: str | None
) -> None:
    assert read_delivery(body_of(body)).type == kind
