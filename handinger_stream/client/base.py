"""The client's core: options, requests, retries and opening streams.

:class:`AsyncAPIClient` is what every resource calls (``request``, and
``_open_stream`` for a stream that resumes through the worker's replay);
:class:`~handinger_stream.AsyncHandinger` adds the resources on top.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
import sniffio

from .._version import __version__
from ..errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    HandingerError,
    InvalidRequestError,
    MissingAPIKeyError,
    ResponseTooLargeError,
    excerpt,
    redact,
    status_error,
)
from ..protocol.compact import COMPACT_HEADER
from ..protocol.headers import WORKER_ID_HEADER
from ..protocol.reducer import check_ai_sdk
from ..protocol.retry import RetryPolicy, retry_after
from ..protocol.sse import DEFAULT_MAX_EVENT_BYTES
from ..protocol.wire import snapshot_event
from ..types.events import AISDKVersion, Event, WorkerSnapshotEvent
from ..types.worker import Worker
from .paths import path_segment
from .stream import OnDecodeError, Opened, StreamPolicy, WorkerStream
from .transport import (
    Body,
    PerLoop,
    Response,
    Transport,
    TransportName,
    transport_for,
)
from .upload import FileInput, Form, files_form

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

    from .telemetry import Telemetry

__all__ = ["DEFAULT_BASE_URL", "AsyncAPIClient", "Files", "Headers", "check_base_url"]

DEFAULT_BASE_URL = "https://handinger.com"  # today's service; the seed's was v3.handinger.com
_json_encoder = msgspec.json.Encoder()
log = logging.getLogger("handinger_stream")


class AsyncAPIClient:
    """The client's core, under every resource: options, requests, streams.

    Use :class:`~handinger_stream.AsyncHandinger`, which adds the resources;
    its docstring lists the options.
    """

    compact_replays: bool = False
    """Whether a worker's replay (``retrieve(stream=True)``, a watch) and every resume
    after an id ask for the compacted form: the same fold from far fewer events, each delta of a
    run merged (docs/emulator.md, "Compacted replays"; an emulator extension that a
    server without it ignores). Off by default: a stream then gives every event as
    stored. ``client.with_options(compact_replays=True)`` turns it on."""

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
        ai_sdk: AISDKVersion = 7,
    ) -> None:
        # First: a wrong value fails before anything is opened.
        self.ai_sdk: AISDKVersion = check_ai_sdk(ai_sdk)
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

    def __repr__(self) -> str:
        name = self._transport.name if self._transport else (self._transport_name or "auto")
        return f"{type(self).__name__}(base_url={self.base_url!r}, transport={name!r})"

    def with_options(self, **options: Any) -> Self:
        """A client with some options changed, sharing this one's HTTP connections.

        >>> patient = AsyncAPIClient(api_key="k").with_options(idle_timeout=None, max_reconnects=20)
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
            "ai_sdk": self.ai_sdk,
        }
        # Not a constructor argument (the sync client's signature mirrors the async one's).
        compact_replays = bool(options.pop("compact_replays", self.compact_replays))
        unknown = options.keys() - settings.keys()
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        copy = type(self)(**{**settings, **options})
        copy.compact_replays = compact_replays
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

    async def __aenter__(self) -> Self:
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

        async def send() -> Response:
            response = await self.transport.send(
                method, url, headers=all_headers, body=body, timeout=self.timeout, stream=stream
            )
            if response.status >= 400:
                raise await _status_error(response)
            return response

        def retryable(failure: Exception) -> bool:
            if not policy.retryable(failure, idempotent=idempotent):
                return False
            if isinstance(body, Form) and not body.repeatable:
                raise _not_rewound(failure) from failure
            return True

        def retrying(attempt: int, wait: float, failure: Exception) -> None:
            log.debug(
                "retrying %s %s in %.2f s (retry %d of %d) after: %s",
                method,
                path,
                wait,
                attempt,
                retries,
                failure,
            )

        try:
            return await policy.call(send, retries=retries, retryable=retryable, on_retry=retrying)
        except APIConnectionError as exc:
            if exc.request_sent and not policy.retryable(exc, idempotent=idempotent):
                raise type(exc)(
                    f"{exc.message} (the request was sent; it was not retried, "
                    "since the server may have acted on it)",
                    request_sent=True,
                ) from exc
            raise

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
        compacting = self.compact_replays
        replay = (
            method == "GET" and path.startswith(_REPLAY_PREFIX) and path.endswith(_REPLAY_QUERY)
        )
        if compacting and replay:
            headers = _compacted(headers)  # a running worker's backlog, as a watch reads it
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
                # Compacted only after an id: a resume without one skips by count.
                headers=_resuming(
                    _compacted(headers) if compacting and last_event_id else headers,
                    last_event_id,
                ),
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
            observer=telemetry.stream(worker_id, opened=opened) if telemetry is not None else None,
            ai_sdk=self.ai_sdk,
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

    def __init__(self, owner: AsyncAPIClient) -> None:
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
        timeout: float | None,
        stream: bool,
    ) -> Response:
        return await self._owner.transport.send(
            method, url, headers=headers, body=body, timeout=timeout, stream=stream
        )

    async def aclose(self) -> None:
        pass


def _not_rewound(failure: Exception) -> Exception:
    """The failure of an upload whose file object was read and cannot be read again."""
    note = (
        " (not retried: an uploaded file object was read and cannot be rewound; "
        "pass a path or bytes to let an upload be retried)"
    )
    if isinstance(failure, APIStatusError):
        failure.message += note
        return failure
    assert isinstance(failure, APIConnectionError)
    return type(failure)(failure.message + note, request_sent=failure.request_sent)


def _events_from_body(status: int, body: bytes) -> list[Event]:
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        obj = None
    if isinstance(obj, dict) and obj.get("object") == "worker":
        try:
            return [snapshot_event(obj)]
        except msgspec.ValidationError as exc:
            # A resume answered with JSON: the same typed refusal as an open's.
            raise APIResponseValidationError(
                f"the response is not a Worker: {exc} (body: {excerpt(body)!r})",
                status_code=status,
            ) from None
    if isinstance(obj, dict) and "error" in obj:
        raise status_error(status, obj)
    # Often a proxy's HTML error page: say what it was, briefly.
    raise APIStatusError(
        f"expected an event stream, got: {excerpt(body)!r}", status_code=status, body=obj
    )


async def _status_error(response: Response) -> APIStatusError:
    try:
        raw = await response.read()
    except (APIConnectionError, ResponseTooLargeError):
        # The status still says what went wrong; an error body past the bound says nothing more.
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
            f"such as {DEFAULT_BASE_URL}; got {redact(url)!r}"
        )
    if parts.username is not None or parts.password is not None:
        # The key goes in a header; credentials in the URL would be sent (and shown) besides it.
        raise InvalidRequestError(
            f"{source} must not carry credentials (user:password@); got {redact(url)!r}"
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


def _resuming(headers: Mapping[str, str] | None, last_event_id: str | None) -> dict[str, str]:
    """The caller's headers, plus ``Last-Event-ID`` when there is one to resume after."""
    out = dict(headers or {})
    if last_event_id is not None:
        out["last-event-id"] = last_event_id
    return out


_REPLAY_PREFIX, _REPLAY_QUERY = "/api/workers/", "?stream=true"


def _replay_path(worker_id: str) -> str:
    """The worker's replay stream: every stored event, then live ones.

    The id may come from a response header: one path segment, so a server cannot
    steer the resume to another API path.
    """
    return f"{_REPLAY_PREFIX}{path_segment(worker_id, 'worker_id')}{_REPLAY_QUERY}"


def _compacted(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's headers, asking a replay for its compacted form (adjacent deltas of
    a part merged: the same fold, far fewer events). An emulator extension; a server
    that does not know the header sends the replay whole. The caller's own value wins:
    ``extra_headers={"x-handinger-compact": "0"}`` asks for every event as stored.

    >>> _compacted({"x": "1"})
    {'x-handinger-compact': '1', 'x': '1'}
    """
    out = dict(headers or {})
    if not any(name.lower() == COMPACT_HEADER for name in out):
        out = {COMPACT_HEADER: "1", **out}
    return out


Headers = Mapping[str, str] | None
Files = Sequence[FileInput] | None
