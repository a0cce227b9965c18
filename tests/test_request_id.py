"""An error names the request it answered: ``request_id`` from the response's headers."""

from __future__ import annotations

import pytest

from handinger_stream import AsyncHandinger, NotFoundError


async def test_an_error_carries_the_request_id_the_server_sent(client: AsyncHandinger) -> None:
    with pytest.raises(NotFoundError) as first:
        await client.workers.retrieve("wrk_missing")
    with pytest.raises(NotFoundError) as second:
        await client.workers.retrieve("wrk_missing")
    ids = [first.value.request_id, second.value.request_id]
    assert all(rid and rid.startswith("req_") for rid in ids)
    assert ids[0] != ids[1]  # one per request
    assert f"(request id {ids[0]})" in str(first.value)
