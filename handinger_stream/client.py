"""AsyncHandinger, the client, and its ``workers`` resource.

>>> async def main():  # doctest: +SKIP
...     async with AsyncHandinger() as client:
...         stream = await client.workers.create(input="Summarise today's news", stream=True)
...         async for text in stream.text_deltas():
...             print(text, end="", flush=True)
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Literal, overload
from urllib.parse import quote

import anyio
import msgspec
import sniffio

from . import __version__
from .errors import (
    APIConnectionError,
    APIStatusError,
    InvalidRequestError,
    MissingAPIKeyError,
    excerpt,
    status_error,
)
from .events import Event
from .models import BUDGETS, Budget, Worker
from .stream import OnDecodeError, WorkerStream
from .transport import Response, Transport, transport_for
from .wire import decode_worker, snapshot_event

__all__ = ["DEFAULT_BASE_URL", "AsyncHandinger", "Workers"]

DEFAULT_BASE_URL = "https://v3.handinger.com"
WORKER_ID_HEADER = "x-handinger-worker-id"
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_INITIAL_RETRY_DELAY = 0.5
_MAX_RETRY_DELAY = 8.0
_json_encoder = msgspec.json.Encoder()


class AsyncHandinger:
    """The Handinger Workers API client.

    ``api_key`` defaults to ``HANDINGER_API_KEY``, ``base_url`` to
    ``HANDINGER_BASE_URL`` or the public service. ``http_client`` may be your
    own ``aiohttp.ClientSession`` or ``httpx.AsyncClient`` (never closed by us).

    >>> client = AsyncHandinger(api_key="sk-secret", base_url="http://127.0.0.1:8787")
    >>> "sk-secret" in repr(client)
    False
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        http_client: Any = None,
        *,
        transport: Literal["aiohttp", "httpx"] | None = None,
        on_decode_error: OnDecodeError = "raise",
    ) -> None:
        self._api_key = api_key if api_key is not None else os.environ.get("HANDINGER_API_KEY")
        self.base_url = (
            base_url or os.environ.get("HANDINGER_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.on_decode_error: OnDecodeError = on_decode_error
        self._http_client = http_client
        self._transport_name = transport
        self._transport: Transport | None = None
        if http_client is not None or transport is not None:
            # Fail early on a wrong http_client or transport name.
            self._transport = transport_for(http_client, transport, "asyncio")
        self.workers = Workers(self)

    def __repr__(self) -> str:
        name = self._transport.name if self._transport else (self._transport_name or "auto")
        return f"AsyncHandinger(base_url={self.base_url!r}, transport={name!r})"

    @property
    def transport(self) -> Transport:
        """The HTTP transport in use (chosen on first use when not given)."""
        if self._transport is None:
            try:
                library = sniffio.current_async_library()
            except sniffio.AsyncLibraryNotFoundError:
                library = "asyncio"
            self._transport = transport_for(None, self._transport_name, library)
        return self._transport

    async def aclose(self) -> None:
        """Close the HTTP client this client created (not one you passed in)."""
        if self._transport is not None:
            await self._transport.aclose()

    async def __aenter__(self) -> AsyncHandinger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- requests -------------------------------------------------------

    def _headers(self, *, stream: bool, extra: Mapping[str, str] | None) -> dict[str, str]:
        if not self._api_key:
            raise MissingAPIKeyError(
                "no API key: pass api_key=... to AsyncHandinger(), "
                "or set the HANDINGER_API_KEY environment variable"
            )
        headers = {
            "authorization": f"Bearer {self._api_key}",
            "accept": "text/event-stream" if stream else "application/json",
            "user-agent": f"handinger-stream/{__version__}",
        }
        if extra:
            headers.update(extra)
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send a request (retrying what is safe to retry); an error status raises.

        The returned response is open: read it, then ``aclose()`` it.
        """
        all_headers = self._headers(stream=stream, extra=headers)
        body = None
        if json is not None:
            body = _json_encoder.encode(json)
            all_headers["content-type"] = "application/json"
        url = self.base_url + path
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = await self.transport.send(
                    method, url, headers=all_headers, body=body, timeout=self.timeout, stream=stream
                )
            except APIConnectionError as exc:
                # A POST that reached the server may have created a worker: never resend it.
                if attempt >= self.max_retries or (exc.request_sent and method != "GET"):
                    if exc.request_sent and method != "GET":
                        exc.message += " (the request was sent; it was not retried, "
                        exc.message += "since the server may have acted on it)"
                        exc.args = (exc.message,)
                    raise
            else:
                if response.status < 400:
                    return response
                error = await _status_error(response)
                if attempt >= self.max_retries or response.status not in _RETRY_STATUSES:
                    raise error
                retry_after = error.retry_after
            attempt += 1
            await anyio.sleep(_retry_delay(attempt, retry_after))

    async def _json(self, method: str, path: str, *, json: Any = None) -> bytes:
        response = await self.request(method, path, json=json)
        try:
            body = await response.read()
        finally:
            await response.aclose()
        return body

    async def _open_stream(
        self, method: str, path: str, *, json: Any = None, last_event_id: str | None = None
    ) -> WorkerStream:
        extra = {"last-event-id": last_event_id} if last_event_id is not None else None
        response = await self.request(method, path, json=json, stream=True, headers=extra)
        worker_id = response.headers.get(WORKER_ID_HEADER, "")
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" in content_type:
            return WorkerStream(response, worker_id=worker_id, on_decode_error=self.on_decode_error)
        # Not a stream: a Worker JSON is taken as one snapshot, anything else is an error.
        try:
            body = await response.read()
        finally:
            await response.aclose()
        return WorkerStream(
            None, worker_id=worker_id, initial=_events_from_body(response.status, body)
        )


def _events_from_body(status: int, body: bytes) -> list[Event]:
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        obj = None
    if isinstance(obj, dict) and obj.get("object") == "worker":
        return [snapshot_event(obj)]
    raise APIStatusError(
        f"expected an event stream, got: {excerpt(body)!r}", status_code=status, body=obj
    )


async def _status_error(response: Response) -> APIStatusError:
    try:
        raw = await response.read()
    except APIConnectionError:
        raw = b""
    finally:
        await response.aclose()
    try:
        body: Any = msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        body = raw.decode("utf-8", "replace")
    headers = response.headers
    return status_error(
        response.status,
        body,
        request_id=headers.get("x-request-id"),
        retry_after=_retry_after(headers),
    )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The server's wish, from ``retry-after-ms`` or ``retry-after`` (seconds or a date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _retry_delay(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None and 0 < retry_after <= 60:
        return retry_after
    delay = min(_INITIAL_RETRY_DELAY * 2.0 ** (attempt - 1), _MAX_RETRY_DELAY)
    # Jitter down by up to a quarter, so many clients do not retry in lockstep.
    return delay * (1 - 0.25 * random.random())


def _check_input(input: str, budget: str | None) -> dict[str, Any]:
    if not isinstance(input, str) or not input:
        raise InvalidRequestError("input must be a non-empty string")
    body: dict[str, Any] = {"input": input}
    if budget is not None:
        if budget not in BUDGETS:
            raise InvalidRequestError(f"budget must be one of {', '.join(BUDGETS)}; got {budget!r}")
        body["budget"] = budget
    return body


def _path_id(worker_id: str) -> str:
    if not worker_id:
        raise InvalidRequestError("worker_id must be a non-empty string")
    return quote(worker_id, safe="")


class Workers:
    """``client.workers``: create, retrieve, continue and watch workers."""

    def __init__(self, client: AsyncHandinger) -> None:
        self._client = client

    @overload
    async def create(
        self, *, input: str, budget: Budget | None = None, stream: Literal[False] = False
    ) -> Worker: ...

    @overload
    async def create(
        self, *, input: str, budget: Budget | None = None, stream: Literal[True]
    ) -> WorkerStream: ...

    @overload
    async def create(
        self, *, input: str, budget: Budget | None = None, stream: bool
    ) -> Worker | WorkerStream: ...

    async def create(
        self, *, input: str, budget: Budget | None = None, stream: bool = False
    ) -> Worker | WorkerStream:
        """Create a worker and start it on ``input``.

        >>> stream = await client.workers.create(input="Hi", stream=True)  # doctest: +SKIP
        """
        body = _check_input(input, budget)
        return await self._send("POST", "/api/workers", body, stream)

    @overload
    async def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[False] = False,
    ) -> Worker: ...

    @overload
    async def continue_(
        self, worker_id: str, *, input: str, budget: Budget | None = None, stream: Literal[True]
    ) -> WorkerStream: ...

    @overload
    async def continue_(
        self, worker_id: str, *, input: str, budget: Budget | None = None, stream: bool
    ) -> Worker | WorkerStream: ...

    async def continue_(
        self, worker_id: str, *, input: str, budget: Budget | None = None, stream: bool = False
    ) -> Worker | WorkerStream:
        """Add a turn to a worker."""
        body = _check_input(input, budget)
        return await self._send("POST", f"/api/workers/{_path_id(worker_id)}", body, stream)

    async def _send(
        self, method: str, path: str, body: dict[str, Any], stream: bool
    ) -> Worker | WorkerStream:
        if stream:
            return await self._client._open_stream(method, path, json={**body, "stream": True})
        return decode_worker(await self._client._json(method, path, json=body))

    @overload
    async def retrieve(self, worker_id: str, *, stream: Literal[False] = False) -> Worker: ...

    @overload
    async def retrieve(self, worker_id: str, *, stream: Literal[True]) -> WorkerStream: ...

    @overload
    async def retrieve(self, worker_id: str, *, stream: bool) -> Worker | WorkerStream: ...

    async def retrieve(self, worker_id: str, *, stream: bool = False) -> Worker | WorkerStream:
        """The worker's state; with ``stream=True`` every stored event, then live ones."""
        path = f"/api/workers/{_path_id(worker_id)}"
        if stream:
            return await self._client._open_stream("GET", path + "?stream=true")
        return decode_worker(await self._client._json("GET", path))

    async def subscribe(self, worker_id: str, *, last_event_id: str | None = None) -> WorkerStream:
        """The worker's live updates (``GET /api/workers/{id}/stream``)."""
        return await self._client._open_stream(
            "GET", f"/api/workers/{_path_id(worker_id)}/stream", last_event_id=last_event_id
        )

    async def retrieve_email(self, worker_id: str) -> str:
        """The worker's inbound email address."""
        raw = await self._client._json("GET", f"/api/workers/{_path_id(worker_id)}/email")
        try:
            value = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return raw.decode("utf-8", "replace").strip()
        if isinstance(value, dict):
            value = value.get("email", value.get("address"))
        if not isinstance(value, str):
            raise APIStatusError(
                f"unexpected email response: {excerpt(raw)!r}", status_code=200, body=value
            )
        return value

    async def retrieve_file(self, worker_id: str, path: str) -> AsyncIterator[bytes]:
        """The bytes of a file in the worker's workspace, as they arrive.

        >>> async for chunk in client.workers.retrieve_file(wid, "report.md"):  # doctest: +SKIP
        ...     out.write(chunk)
        """
        if not path:
            raise InvalidRequestError("path must be a non-empty string")
        file_path = "/".join(quote(p, safe="") for p in path.lstrip("/").split("/"))
        response = await self._client.request(
            "GET", f"/api/workers/{_path_id(worker_id)}/files/{file_path}"
        )
        try:
            while chunk := await response.read_chunk():
                yield chunk
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
