"""Errors cross process boundaries (a ProcessPoolExecutor, multiprocessing): every
error pickles, keyword-only arguments and all, and stays redacted."""

from __future__ import annotations

import pickle

import pytest

from handinger_stream import AsyncHandinger, AuthenticationError
from handinger_stream import errors as E
from handinger_stream.relay import access as A
from handinger_stream.relay import errors as R
from handinger_stream.types import Worker
from tests.conftest import Canned, RawServer

KEY = "sk-live-pickle-0123456789abcdef"

SAMPLES = [
    E.APIStatusError("failed", status_code=500, body={"k": 1}, request_id="r"),
    E.RateLimitError("slow down", status_code=429, retry_after=3.0),
    E.APIConnectionError("refused", request_sent=True),
    E.APITimeoutError(),
    E.StreamDecodeError("bad json", index=3, event_id="7", data=b"{"),
    E.StreamTimeoutError("idle", limit="idle", seconds=1.5),
    E.WorkerFailedError(Worker(id="w1", status="completed")),
    E.ResponseTooLargeError(status_code=200, limit=10, url="http://h/x"),
    E.HistoryGoneError("gone", last_event_id="4"),
    E.IncompleteStreamError("cut", worker=Worker(id="w2", status="running")),
    E.InvalidRequestError("no"),
    A.TooManyRequests("too many turns", retry_after=2.0),
    A.NotFound(),
    R.EntriesGoneError("trimmed"),
]


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_error_pickles_whole(error: E.HandingerError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (str(back), repr(back), back.args) == (str(error), repr(error), error.args)
    assert back.__dict__ == error.__dict__


@pytest.mark.asyncio
async def test_an_error_from_a_real_answer_pickles_still_redacted(raw_server: RawServer) -> None:
    echo = f'{{"error":{{"message":"bad key {KEY}"}}}}'.encode()
    headers = {"content-type": "application/json", "x-request-id": "req-9"}
    raw_server.serve(Canned([echo], status=401, headers=headers))
    async with AsyncHandinger(api_key=KEY, base_url=raw_server.base_url, max_retries=0) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.workers.retrieve("w1")
    pickled = pickle.dumps(info.value)
    assert KEY.encode() not in pickled  # what crosses to another process has no key
    back = pickle.loads(pickled)
    assert isinstance(back, AuthenticationError)
    assert (back.status_code, back.request_id, str(back)) == (401, "req-9", str(info.value))
    assert KEY not in repr(back) and KEY not in str(back) and KEY not in repr(back.body)
