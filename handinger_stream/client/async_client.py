"""AsyncHandinger, the client, and its ``workers`` resource.

>>> async def main():  # doctest: +SKIP
...     async with AsyncHandinger() as client:
...         stream = await client.workers.create(input="Summarise today's news", stream=True)
...         async for text in stream.text_deltas():
...             print(text, end="", flush=True)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote, urlsplit

import anyio
import msgspec
import sniffio

from .._version import __version__
from ..errors import (
    APIConnectionError,
    APIStatusError,
    HandingerError,
    InvalidRequestError,
    MissingAPIKeyError,
    excerpt,
    status_error,
)
from ..protocol.retry import RetryPolicy, retry_after
from ..protocol.sse import DEFAULT_MAX_EVENT_BYTES
from ..protocol.wire import decode_worker, snapshot_event
from ..types.events import Event, WorkerSnapshotEvent
from ..types.worker import BUDGETS, Budget, Worker
from .stream import Checkpoint, OnDecodeError, Opened, StreamPolicy, WorkerStream
from .transport import (
    Body,
    PerLoop,
    Response,
    Transport,
    TransportName,
    close_soon,
    transport_for,
)
from .upload import FileInput, Form, files_form

if TYPE_CHECKING:  # watch and otel sit on top of the client; only their types are named here
    from collections.abc import Iterable

    from .telemetry import Telemetry
    from .watch import Watch

__all__ = ["DEFAULT_BASE_URL", "AsyncHandinger", "FileDownload", "Workers", "check_base_url"]

DEFAULT_BASE_URL = "https://v3.handinger.com"
WORKER_ID_HEADER = "x-handinger-worker-id"
_json_encoder = msgspec.json.Encoder()
log = logging.getLogger("handinger_stream")


class AsyncHandinger:
    """The Handinger Workers API client.

    ``api_key`` defaults to ``HANDINGER_API_KEY``, ``base_url`` to
    ``HANDINGER_BASE_URL`` or the public service. ``http_client`` may be your
    own ``aiohttp.ClientSession`` or ``httpx.AsyncClient`` (never closed by us).
    ``max_retries`` covers requests before their first byte; streams resume by
    themselves up to ``max_reconnects`` times in a row, and the ``*_timeout``
    limits (seconds, ``None`` for none) say when a silent stream counts as
    stalled (see ``docs/resilience.md``).

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
        transport: TransportName | None = None,
        on_decode_error: OnDecodeError = "raise",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_reconnects: int = 5,
        first_event_timeout: float | None = 60.0,
        idle_timeout: float | None = 300.0,
        total_timeout: float | None = None,
        telemetry: bool | Telemetry | None = None,
    ) -> None:
        self._api_key = api_key if api_key is not None else os.environ.get("HANDINGER_API_KEY")
        self.base_url = check_base_url(
            base_url or os.environ.get("HANDINGER_BASE_URL") or DEFAULT_BASE_URL,
            source="base_url" if base_url else "HANDINGER_BASE_URL",
        )
        self.timeout = timeout
        self.max_retries = max_retries
        self.on_decode_error: OnDecodeError = on_decode_error
        self.max_event_bytes = max_event_bytes
        self.retry_policy = RetryPolicy()
        self.stream_policy = StreamPolicy(
            max_reconnects=max_reconnects,
            first_event_timeout=first_event_timeout,
            idle_timeout=idle_timeout,
            total_timeout=total_timeout,
            read_timeout=timeout,
            retry=self.retry_policy,
        )
        self._transport_name = transport
        # Yours (never closed by us), or ours: one per event loop, closed with it.
        self._transport: Transport | None = None
        self._transports = PerLoop(
            lambda: transport_for(None, self._transport_name, _running_library())
        )
        if http_client is not None:
            self._transport = transport_for(http_client, transport, _running_library())
        elif transport is not None:
            # Fail early on a wrong transport name, or aiohttp under trio.
            transport_for(None, transport, _running_library())
        self._telemetry_setting = telemetry
        # Resolved once: nothing of OpenTelemetry is imported unless the app uses it.
        self.telemetry = _telemetry(telemetry)
        self.workers = Workers(self)

    def __repr__(self) -> str:
        name = self._transport.name if self._transport else (self._transport_name or "auto")
        return f"AsyncHandinger(base_url={self.base_url!r}, transport={name!r})"

    def with_options(self, **options: Any) -> AsyncHandinger:
        """A client with some options changed, sharing this one's HTTP connections.

        >>> patient = AsyncHandinger(api_key="k").with_options(idle_timeout=None, max_reconnects=20)
        >>> patient.stream_policy.max_reconnects
        20
        """
        policy = self.stream_policy
        settings: dict[str, Any] = {
            "api_key": self._api_key,
            "base_url": self.base_url,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "on_decode_error": self.on_decode_error,
            "max_event_bytes": self.max_event_bytes,
            "max_reconnects": policy.max_reconnects,
            "first_event_timeout": policy.first_event_timeout,
            "idle_timeout": policy.idle_timeout,
            "total_timeout": policy.total_timeout,
            "telemetry": self._telemetry_setting,
        }
        unknown = options.keys() - settings.keys()
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        copy = AsyncHandinger(**{**settings, **options})
        # The copy borrows our transports: closing it must not close them.
        copy._transport = _Borrowed(self)
        return copy

    @property
    def transport(self) -> Transport:
        """The HTTP transport in use: the one passed in, or this event loop's own."""
        if self._transport is not None:
            return self._transport
        return self._transports.get()

    async def aclose(self) -> None:
        """Close the HTTP connections this client opened on this event loop.

        An ``http_client`` you passed in is never closed. A client used under
        several ``asyncio.run`` calls has one connection pool per loop, each
        closed as its loop ends.
        """
        if self._transport is not None:
            await self._transport.aclose()
        else:
            await self._transports.aclose()

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
                "no API key: pass api_key=... to the client, "
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
        files: Sequence[FileInput] | None = None,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        max_retries: int | None = None,
    ) -> Response:
        """Send a request (retrying what is safe to retry); an error status raises.

        With ``files``, the body is ``multipart/form-data``: ``json``'s keys
        become its fields, each file a ``files`` part, streamed from disk.
        The returned response is open: read it, then ``aclose()`` it.
        """
        retries = self.max_retries if max_retries is None else max_retries
        policy = self.retry_policy
        all_headers = self._headers(stream=stream, extra=headers)
        body: bytes | Form | None = None
        if files is not None:
            body = files_form(files, _form_fields(json))
        elif json is not None:
            body = _json_encoder.encode(json)
            all_headers["content-type"] = "application/json"
        url = self.base_url + path
        idempotent = method == "GET"
        attempt = 0
        while True:
            try:
                response = await self.transport.send(
                    method, url, headers=all_headers, body=body, timeout=self.timeout, stream=stream
                )
            except APIConnectionError as exc:
                if not policy.retryable(exc, idempotent=idempotent):
                    raise type(exc)(
                        f"{exc.message} (the request was sent; it was not retried, "
                        "since the server may have acted on it)",
                        request_sent=True,
                    ) from exc
                if attempt >= retries:
                    raise
                failure: APIConnectionError | APIStatusError = exc
            else:
                if response.status < 400:
                    return response
                failure = await _status_error(response)
                if attempt >= retries or not policy.retryable(failure, idempotent=idempotent):
                    raise failure
            if isinstance(body, Form) and not body.repeatable:
                # A file object that cannot seek was (partly) read: its bytes are gone.
                note = (
                    " (not retried: an uploaded file object was read and cannot be rewound; "
                    "pass a path or bytes to let an upload be retried)"
                )
                if isinstance(failure, APIStatusError):
                    failure.message += note
                    raise failure
                raise type(failure)(
                    failure.message + note, request_sent=failure.request_sent
                ) from failure
            attempt += 1
            wait = policy.delay(
                attempt,
                retry_after=failure.retry_after if isinstance(failure, APIStatusError) else None,
            )
            log.debug(
                "retrying %s %s in %.2f s (retry %d of %d) after: %s",
                method,
                path,
                wait,
                attempt,
                retries,
                failure,
            )
            await anyio.sleep(wait)

    async def _json(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        files: Sequence[FileInput] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        response = await self.request(method, path, json=json, files=files, headers=headers)
        try:
            body = await response.read()
        finally:
            await response.aclose()
        return body

    async def _open_stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        files: Sequence[FileInput] | None = None,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
        from_start: bool = False,
        worker_id: str = "",
    ) -> WorkerStream:
        telemetry = self.telemetry
        opened = monotonic()
        try:
            response, initial = await self._opened(
                method, path, json=json, files=files, headers=_resuming(headers, last_event_id)
            )
        except HandingerError as exc:
            if telemetry is not None:
                telemetry.stream(worker_id, opened=opened).end(Worker(id=worker_id), exc)
            raise
        if response is not None:
            worker_id = response.headers.get(WORKER_ID_HEADER, "") or worker_id
        if not worker_id:
            worker_id = next(
                (e.worker.id for e in initial if isinstance(e, WorkerSnapshotEvent)), ""
            )

        async def reopen(worker_id: str, last_event_id: str | None) -> Opened:
            # Resuming always reads the worker's replay stream: never re-sends a create.
            return await self._opened(
                "GET",
                _replay_path(worker_id),
                headers=_resuming(headers, last_event_id),
                max_retries=0,
            )

        return WorkerStream(
            response,
            worker_id=worker_id,
            on_decode_error=self.on_decode_error,
            max_event_bytes=self.max_event_bytes,
            initial=initial,
            reopen=reopen,
            policy=self.stream_policy,
            from_start=from_start,
            recorder=telemetry.stream(worker_id, opened=opened) if telemetry is not None else None,
        )

    async def _opened(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        files: Sequence[FileInput] | None = None,
        headers: Mapping[str, str] | None = None,
        max_retries: int | None = None,
    ) -> Opened:
        """A stream request's answer: the response if it streams, else its events."""
        response = await self.request(
            method,
            path,
            json=json,
            files=files,
            stream=True,
            headers=headers,
            max_retries=max_retries,
        )
        if "text/event-stream" in response.headers.get("content-type", ""):
            return response, []
        # Not a stream: a Worker JSON is taken as one snapshot, anything else is an error.
        try:
            body = await response.read()
        finally:
            await response.aclose()
        return None, _events_from_body(response.status, body)


class _Borrowed:
    """The transports of a client lent to its :meth:`AsyncHandinger.with_options` copy,
    which never closes them."""

    def __init__(self, owner: AsyncHandinger) -> None:
        self._owner = owner

    @property
    def name(self) -> str:
        return self._owner.transport.name

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | Body | None,
        timeout: float | None,  # noqa: ASYNC109 (the transport's own, passed on)
        stream: bool,
    ) -> Response:
        return await self._owner.transport.send(
            method, url, headers=headers, body=body, timeout=timeout, stream=stream
        )

    async def aclose(self) -> None:
        pass


def _events_from_body(status: int, body: bytes) -> list[Event]:
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        obj = None
    if isinstance(obj, dict) and obj.get("object") == "worker":
        return [snapshot_event(obj)]
    if isinstance(obj, dict) and "error" in obj:
        raise status_error(status, obj)
    # Often a proxy's HTML error page: say what it was, briefly.
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
        request_id=headers.get("x-request-id") or headers.get("request-id"),
        retry_after=retry_after(headers),
    )


def _form_fields(json: Any) -> list[tuple[str, str]]:
    """A JSON object's keys as form fields: strings as they are, anything else as JSON."""
    if json is None:
        return []
    if not isinstance(json, Mapping):
        raise InvalidRequestError("with files, json must be an object: its keys become the fields")
    fields = []
    for key, value in json.items():
        if value is not None:
            text = value if isinstance(value, str) else _json_encoder.encode(value).decode()
            fields.append((str(key), text))
    return fields


def check_base_url(url: str, *, source: str = "base_url") -> str:
    """The API's base URL without its trailing slash; anything but an http(s) URL is refused.

    >>> check_base_url("http://127.0.0.1:8787/")
    'http://127.0.0.1:8787'
    >>> check_base_url("not-a-url")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    handinger_stream.errors.InvalidRequestError: base_url must be an http:// or https:// URL ...
    """
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (a bad port raises here)
    except (ValueError, AttributeError):
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            f"{source} must be an http:// or https:// URL with a host, "
            f"such as {DEFAULT_BASE_URL}; got {url!r}"
        )
    return url.strip().rstrip("/")


def _running_library() -> str:
    """The async library running here ("asyncio" when none is)."""
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return "asyncio"


def _telemetry(setting: bool | Telemetry | None) -> Telemetry | None:
    """The telemetry to use: off, on, or (``None``) on when the app uses OpenTelemetry.

    Nothing is imported unless the application imported ``opentelemetry`` itself
    (or asked for telemetry): without the extra, streams cost nothing more.
    """
    if setting is False:
        return None
    if setting is None and "opentelemetry.trace" not in sys.modules:
        return None
    try:
        from .telemetry import Telemetry  # on top of the client, like watch: imported when used
    except ImportError as exc:
        if setting is None:
            return None
        raise InvalidRequestError(
            "telemetry needs OpenTelemetry: pip install 'handinger-stream[otel]'"
        ) from exc
    if isinstance(setting, Telemetry):
        return setting
    return Telemetry()


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


def _resuming(headers: Mapping[str, str] | None, last_event_id: str | None) -> dict[str, str]:
    """The caller's headers, plus ``Last-Event-ID`` when there is one to resume after."""
    out = dict(headers or {})
    if last_event_id is not None:
        out["last-event-id"] = last_event_id
    return out


def _replay_path(worker_id: str) -> str:
    """The worker's replay stream: every stored event, then live ones."""
    return f"/api/workers/{_path_id(worker_id)}?stream=true"


Headers = Mapping[str, str] | None
Files = Sequence[FileInput] | None


class Workers:
    """``client.workers``: create, retrieve, continue and watch workers.

    Every call takes ``extra_headers`` (sent with it, and with any resume of its stream).
    """

    def __init__(self, client: AsyncHandinger) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[False] = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker: ...

    @overload
    async def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[True],
        files: Files = None,
        extra_headers: Headers = None,
    ) -> WorkerStream: ...

    @overload
    async def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | WorkerStream: ...

    async def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | WorkerStream:
        """Create a worker and start it on ``input``.

        ``files`` (paths, or ``(name, bytes | file object[, media_type])``)
        are uploaded into the worker's workspace before it starts, streamed
        from disk as ``multipart/form-data``.

        >>> stream = await client.workers.create(input="Hi", stream=True)  # doctest: +SKIP
        >>> worker = await client.workers.create(input="Sum it", files=["q3.csv"])  # doctest: +SKIP
        """
        body = _check_input(input, budget)
        # The create stream begins at the worker's first event, so it can resume by position.
        return await self._send("POST", "/api/workers", body, stream, files, extra_headers, True)

    @overload
    async def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[False] = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker: ...

    @overload
    async def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[True],
        files: Files = None,
        extra_headers: Headers = None,
    ) -> WorkerStream: ...

    @overload
    async def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | WorkerStream: ...

    async def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | WorkerStream:
        """Add a turn to a worker (``files`` as for :meth:`create`)."""
        body = _check_input(input, budget)
        path = f"/api/workers/{_path_id(worker_id)}"
        return await self._send("POST", path, body, stream, files, extra_headers, False)

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        stream: bool,
        files: Files,
        headers: Headers,
        from_start: bool,
    ) -> Worker | WorkerStream:
        client = self._client
        if stream:
            return await client._open_stream(
                method,
                path,
                json={**body, "stream": True},
                files=files,
                headers=headers,
                from_start=from_start,
            )
        raw = await client._json(method, path, json=body, files=files, headers=headers)
        return decode_worker(raw)

    @overload
    async def retrieve(
        self, worker_id: str, *, stream: Literal[False] = False, extra_headers: Headers = None
    ) -> Worker: ...

    @overload
    async def retrieve(
        self, worker_id: str, *, stream: Literal[True], extra_headers: Headers = None
    ) -> WorkerStream: ...

    @overload
    async def retrieve(
        self, worker_id: str, *, stream: bool, extra_headers: Headers = None
    ) -> Worker | WorkerStream: ...

    async def retrieve(
        self, worker_id: str, *, stream: bool = False, extra_headers: Headers = None
    ) -> Worker | WorkerStream:
        """The worker's state; with ``stream=True`` every stored event, then live ones."""
        client = self._client
        if stream:
            return await client._open_stream(
                "GET",
                _replay_path(worker_id),
                headers=extra_headers,
                from_start=True,
                worker_id=worker_id,
            )
        path = f"/api/workers/{_path_id(worker_id)}"
        return decode_worker(await client._json("GET", path, headers=extra_headers))

    async def subscribe(
        self, worker_id: str, *, last_event_id: str | None = None, extra_headers: Headers = None
    ) -> WorkerStream:
        """The worker's live updates (``GET /api/workers/{id}/stream``)."""
        return await self._client._open_stream(
            "GET",
            f"/api/workers/{_path_id(worker_id)}/stream",
            headers=extra_headers,
            last_event_id=last_event_id,
            worker_id=worker_id,
        )

    async def resume(
        self, checkpoint: Checkpoint, *, extra_headers: Headers = None
    ) -> WorkerStream:
        """Continue a stream from a :class:`Checkpoint`, in this process or another.

        The worker's replay is folded up to the checkpoint without being
        yielded, so the new stream's snapshot equals the checkpoint's and its
        first event is the one after it.

        >>> stream = await client.workers.resume(checkpoint)  # doctest: +SKIP
        """
        if checkpoint.last_event_id is None and checkpoint.position is None:
            raise InvalidRequestError(
                "this checkpoint has neither an event id nor a position: "
                "its stream cannot be resumed exactly"
            )
        stream = await self.retrieve(checkpoint.worker_id, stream=True, extra_headers=extra_headers)
        await stream._catch_up_to(checkpoint)
        return stream

    async def retrieve_email(self, worker_id: str, *, extra_headers: Headers = None) -> str:
        """The worker's inbound email address."""
        raw = await self._client._json(
            "GET", f"/api/workers/{_path_id(worker_id)}/email", headers=extra_headers
        )
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

    def retrieve_file(
        self, worker_id: str, path: str, *, extra_headers: Headers = None
    ) -> FileDownload:
        """The bytes of a file in the worker's workspace, as they arrive.

        The request is sent when iteration starts; leaving the loop early
        closes the response.

        >>> async for chunk in client.workers.retrieve_file(wid, "report.md"):  # doctest: +SKIP
        ...     out.write(chunk)
        >>> data = await client.workers.retrieve_file(wid, "report.md").read()  # doctest: +SKIP
        """
        if not path:
            raise InvalidRequestError("path must be a non-empty string")
        file_path = "/".join(quote(p, safe="") for p in path.lstrip("/").split("/"))
        return FileDownload(
            self._client, f"/api/workers/{_path_id(worker_id)}/files/{file_path}", extra_headers
        )

    def watch(
        self,
        workers: Iterable[str | WorkerStream],
        *,
        max_concurrency: int | None = None,
        buffer: int = 64,
        telemetry: bool | Telemetry | None = None,
    ) -> Watch:
        """Many workers' events merged in arrival order (see ``docs/monitoring.md``).

        >>> async with client.workers.watch(ids, max_concurrency=50) as watch:  # doctest: +SKIP
        ...     async for item in watch:
        ...         print(item.worker_id, type(item.event).__name__)
        """
        from .watch import Watch  # it sits on top of the client: imported when used

        return Watch(
            self._client,
            workers,
            max_concurrency=max_concurrency,
            buffer=buffer,
            telemetry=telemetry,
        )


class FileDownload:
    """A file's bytes, chunk by chunk: an async iterator that closes its response
    when it ends, fails, is closed or is dropped.
    """

    def __init__(self, client: AsyncHandinger, path: str, headers: Headers) -> None:
        self._client = client
        self._path = path
        self._headers = headers
        self._response: Response | None = None
        self._done = False

    def __aiter__(self) -> FileDownload:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        try:
            if self._response is None:
                self._response = await self._client.request(
                    "GET", self._path, headers=self._headers
                )
            chunk = await self._response.read_chunk()
        except BaseException:
            await self.aclose()
            raise
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def read(self) -> bytes:
        """The whole file."""
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        self._done = True
        response, self._response = self._response, None
        if response is not None:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def __aenter__(self) -> FileDownload:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        response = self._response
        if response is not None and not response.abort():
            close_soon(self.aclose)
