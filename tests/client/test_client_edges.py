"""Small edges of the async client: request ids on errors, base URLs, the missing-key message."""

from __future__ import annotations

import pytest

from handinger_stream import AsyncHandinger, InvalidRequestError, MissingAPIKeyError, NotFoundError


async def test_an_error_carries_the_request_id_the_server_sent(client: AsyncHandinger) -> None:
    with pytest.raises(NotFoundError) as first:
        await client.workers.retrieve("wrk_missing")
    with pytest.raises(NotFoundError) as second:
        await client.workers.retrieve("wrk_missing")
    ids = [first.value.request_id, second.value.request_id]
    assert all(rid and rid.startswith("req_") for rid in ids)
    assert ids[0] != ids[1]  # one per request
    assert f"(request id {ids[0]})" in str(first.value)


@pytest.mark.parametrize(
    "url", ["not-a-url", "http://", "ftp://example.com", "example.com", "http://h:99999", ""]
)
def test_an_invalid_base_url_is_refused_at_construction(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDINGER_BASE_URL", url or "not-a-url-either")
    with pytest.raises(InvalidRequestError, match="must be an http:// or https:// URL"):
        AsyncHandinger(api_key="k", base_url=url or None)


def test_a_good_base_url_is_kept_without_its_trailing_slash() -> None:
    client = AsyncHandinger(api_key="k", base_url="https://api.example.com/v3/")
    assert client.base_url == "https://api.example.com/v3"


async def test_the_missing_key_message_names_no_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANDINGER_API_KEY", raising=False)
    async with AsyncHandinger(base_url="http://127.0.0.1:9") as client:
        with pytest.raises(MissingAPIKeyError) as missing:
            await client.workers.retrieve("wrk_1")
    message = str(missing.value)
    assert "api_key=" in message and "HANDINGER_API_KEY" in message
    assert "AsyncHandinger" not in message
