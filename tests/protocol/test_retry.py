"""One retry policy for requests and resumes: its rules, and a resume that honours Retry-After."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from handinger_stream import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncHandinger,
    IncompleteStreamError,
    RateLimitError,
)
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from handinger_stream.protocol.retry import RETRY_STATUSES, RetryPolicy, retry_after
from handinger_stream.types.events import Reconnected
from tests.conftest import API_KEY, Canned, RawServer
from tests.helpers.emulators import emulator_fixture

SSE = {"content-type": "text/event-stream", "x-handinger-worker-id": "w1"}


def status(code: int) -> APIStatusError:
    return APIStatusError("x", status_code=code)


def test_which_failures_are_retried() -> None:
    policy = RetryPolicy()
    assert {c for c in range(400, 600) if policy.retryable(status(c), idempotent=True)} == set(
        RETRY_STATUSES
    )
    sent = APIConnectionError("broke", request_sent=True)
    unsent = APIConnectionError("refused", request_sent=False)
    # A POST that reached the server may have created a worker: never again.
    assert not policy.retryable(sent, idempotent=False)
    assert policy.retryable(sent, idempotent=True)
    assert policy.retryable(unsent, idempotent=False)
    assert policy.retryable(APITimeoutError("connect", request_sent=False), idempotent=False)
    assert not policy.retryable(ValueError("no"), idempotent=True)


def test_the_servers_wait_is_taken_as_is_within_bounds() -> None:
    policy = RetryPolicy()
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(4, retry_after=0.25, server_retry=2.0) == 0.25
    # Zero, negative (a date in the past) or over a minute: back off instead.
    for wish in (0.0, -5.0, 61.0):
        assert 0.375 <= policy.delay(1, retry_after=wish) <= 0.5


def test_backoff_doubles_from_the_sse_retry_field_capped_and_jittered() -> None:
    policy = RetryPolicy()
    # The SSE standard's reconnection time is the first wait, exactly.
    assert policy.delay(1, server_retry=0.2) == 0.2
    for attempt, full in [(2, 0.4), (3, 0.8), (7, 8.0), (12, 8.0)]:
        waits = [policy.delay(attempt, server_retry=0.2) for _ in range(200)]
        assert all(0.75 * full <= w <= full for w in waits), (attempt, min(waits), max(waits))
        assert len(set(waits)) > 100  # jittered, not in lockstep
    # A server that asks for more than the cap gets it.
    assert policy.delay(1, server_retry=20.0) == 20.0
    assert 15.0 <= policy.delay(3, server_retry=20.0) <= 20.0
    # Without a retry field the backoff starts at 0.5 s.
    assert 0.375 <= policy.delay(1) <= 0.5 and 1.5 <= policy.delay(3) <= 2.0


def test_retry_after_headers() -> None:
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "7"}) == 7.0
    in_a_minute = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    wait = retry_after({"retry-after": in_a_minute})
    assert wait is not None and 55 < wait <= 60
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None


emu = emulator_fixture(api_key=API_KEY, seed=4, retry_ms=5)


async def test_a_resume_waits_as_long_as_retry_after_says(
    emu: Emulator, transport: TransportName
) -> None:
    emu.inject_fault("drop-after=5")
    emu.inject_fault("status=429; retry-after=3")
    async with AsyncHandinger(
        api_key=API_KEY, base_url=emu.base_url, transport=transport
    ) as client:
        stream = await client.workers.create(input="Hi", budget="low", stream=True)
        started = time.monotonic()
        notices = [
            item async for item in stream.events(reconnects=True) if isinstance(item, Reconnected)
        ]
        waited = time.monotonic() - started
        final = await client.workers.retrieve(stream.worker_id)
    # One resume, on the second attempt, after the 3 s the server asked for.
    assert [(n.attempt, n.delay) for n in notices] == [(2, 3.0)]
    assert waited >= 3.0
    assert stream.completed and stream.snapshot == final


async def test_a_resume_that_keeps_hearing_429_gives_up_with_the_cause(
    emu: Emulator,
) -> None:
    emu.inject_fault("drop-after=3")
    emu.inject_fault("status=429; retry-after=0.05", times=3)
    async with AsyncHandinger(api_key=API_KEY, base_url=emu.base_url, max_reconnects=2) as client:
        stream = await client.workers.create(input="Hi", budget="low", stream=True)
        with pytest.raises(IncompleteStreamError) as info:
            await stream.get_final_worker()
    assert "gave up after 2 reconnect attempts" in str(info.value)
    assert isinstance(info.value.__cause__, RateLimitError)
    assert info.value.__cause__.retry_after == 0.05
    emu.clear_faults()


# -- issue 21: a hostile server's waits ------------------------------------------


def test_an_sse_retry_past_the_cap_waits_the_cap() -> None:
    """One ``retry:`` line of a day used to make every resume wait a day."""
    policy = RetryPolicy()
    assert policy.delay(1, server_retry=86_400.0) == 60.0
    assert 45.0 <= policy.delay(3, server_retry=86_400.0) <= 60.0
    assert policy.delay(1, server_retry=2**31 / 1000) == 60.0


def test_waits_that_are_not_waits_are_ignored() -> None:
    policy = RetryPolicy()
    for wish in (float("nan"), float("inf"), -1.0):
        assert 0.375 <= policy.delay(1, server_retry=wish) <= 0.5
        assert 0.375 <= policy.delay(1, retry_after=wish) <= 0.5
    # A loop without a count may reach attempts whose doubling overflows a float.
    assert 6.0 <= policy.delay(5000) <= 8.0


@pytest.mark.parametrize(
    "value",
    ["nan", "inf", "-1", "9" * 5000, "1" * 400 + ".5", "Thu, 01 Jan 1970 00:00:00 GMT", "\x00"],
)
def test_a_hostile_retry_after_is_no_wait(value: str) -> None:
    assert retry_after({"retry-after": value}) is None
    assert retry_after({"retry-after-ms": value}) is None


async def test_a_stream_with_a_retry_of_4300_digits_resumes(
    raw_server: RawServer, transport: TransportName
) -> None:
    """The decoder took ``int()`` of any run of digits: 4,300 raised a ValueError (not a
    HandingerError) out of the stream. It is capped, and the resume waits the cap."""
    huge = b"retry: " + b"9" * 4300 + b"\n"
    raw_server.serve(
        Canned([huge + b'id: 1\ndata: {"type":"start"}\n\n'], headers=SSE),  # ends early
        Canned([b'id: 2\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n'], headers=SSE),
    )
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport
    ) as client:
        # The cap, made short for the test: what matters is that it applies.
        client.stream_policy = replace(
            client.stream_policy, retry=RetryPolicy(max_retry_after=0.01)
        )
        stream = await client.workers.retrieve("w1", stream=True)
        items = [item async for item in stream.events(reconnects=True)]
    notices = [item for item in items if isinstance(item, Reconnected)]
    assert [n.delay for n in notices] == [0.01]
    assert stream.completed
