"""The error hierarchy. Every error is a :class:`HandingerError`.

No error text ever carries the API key: messages are built from statuses,
bodies and excerpts of event data, never from request headers. What a
server sends may echo a credential, so every error's text, ``repr``,
``args`` and body pass through :func:`redact` as well: it hides the keys
this process has sent (:func:`remember_secret`), the ``user:password@`` of
URLs, credential-like query values and ``Bearer``/``Basic`` credentials.

>>> try:
...     raise NotFoundError("worker not found", status_code=404, body={"error": "not found"})
... except APIStatusError as e:
...     e.status_code
404
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types.worker import Worker

__all__ = [
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GoneError",
    "HandingerError",
    "HistoryGoneError",
    "IncompleteStreamError",
    "InternalServerError",
    "InvalidRequestError",
    "MissingAPIKeyError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseTooLargeError",
    "StreamDecodeError",
    "StreamError",
    "StreamTimeoutError",
    "UnprocessableEntityError",
    "WorkerFailedError",
    "status_error",
]

EXCERPT_CHARS = 120


def excerpt(text: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line excerpt of raw data for an error message, redacted.

    Redacted before it is cut: a key cut in two by the limit would no longer be
    found, and its first half would show.
    """
    # A margin past the limit, so that a credential crossing it is still whole.
    reach = limit * 4 + 1024
    if isinstance(text, bytes):
        text = text[:reach].decode("utf-8", "replace")
    text = redact(text[:reach]).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- what no error shows ------------------------------------------------------

HIDDEN = "***"
MIN_SECRET_CHARS = 8
"""A credential shorter than this is not searched for in text: a test key
such as ``"k"`` must not blank every ``k`` of a message."""
_MAX_SECRETS = 256  # a relay with a key per user keeps the most recent ones
_secrets: OrderedDict[str, None] = OrderedDict()

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#'\"<>]*@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;][^\s=&#?;'\"<>]*?"
    r"(?:key|token|secret|passw(?:or)?d|pwd|pass|auth(?:orization)?|signature|sig|"
    r"credentials?|session)=)[^\s&#;'\"<>]*"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{8,}")


def remember_secret(value: str) -> None:
    """Note a credential this process sends (the transport notes each API key),
    so that no error built from anything a server says can show it."""
    value = value.strip()
    if len(value) < MIN_SECRET_CHARS:
        return
    _secrets[value] = None
    _secrets.move_to_end(value)
    while len(_secrets) > _MAX_SECRETS:
        _secrets.popitem(last=False)


def hide_query_secrets(text: str) -> str:
    """``text`` with the values of credential-like query parameters hidden.

    >>> hide_query_secrets("https://h/a?page=2&api_key=abc&password=p#x")
    'https://h/a?page=2&api_key=***&password=***#x'
    """
    return _QUERY_SECRET.sub(lambda m: m.group(1) + HIDDEN, text)


def redact(text: str) -> str:
    """``text`` fit to show: no remembered credential, no URL's ``user:password@``,
    no credential-like query value, no ``Bearer``/``Basic`` credential.

    >>> redact("GET http://me:pw@h/x?token=t1 failed; Authorization: Bearer abcdefgh123")
    'GET http://***@h/x?token=*** failed; Authorization: Bearer ***'
    """
    if _secrets:
        # Longest first, so that a key containing another is hidden whole.
        for secret in sorted(_secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, HIDDEN)
    if "://" in text:
        text = _USERINFO.sub(lambda m: m.group(1) + HIDDEN + "@", text)
    if "=" in text:
        text = hide_query_secrets(text)
    return _AUTH_SCHEME.sub(lambda m: m.group(1) + m.group(2) + HIDDEN, text)


def _redact_value(value: Any, depth: int = 0) -> Any:
    """A decoded body with :func:`redact` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact(value)
    if depth > 64:
        return HIDDEN  # deeper than any error body: not walked, not shown
    if isinstance(value, dict):
        return {_redact_value(k, depth + 1): _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return redact(bytes(value).decode("utf-8", "replace")).encode()
    return value


class HandingerError(Exception):
    """The root of every error this package raises.

    Its text, ``repr`` and ``args`` never show a credential (see :func:`redact`),
    even when a server echoed one back.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))

    def __str__(self) -> str:
        return redact(super().__str__())

    def __repr__(self) -> str:
        return redact(super().__repr__())

    def __reduce__(self) -> tuple[Any, ...]:
        # Most errors take keyword-only arguments, which Exception's own reduce (the
        # class called with ``args``) cannot give: one raised in a worker process
        # would not reach its parent. Rebuilt from args and attributes instead, as
        # already redacted, without calling __init__ again.
        return (_rebuilt, (type(self), self.args), self.__dict__)


def _rebuilt(cls: type[HandingerError], args: tuple[Any, ...]) -> HandingerError:
    error = cls.__new__(cls)
    error.args = args
    return error


class InvalidRequestError(HandingerError, ValueError):
    """A call's arguments were refused before any request was made."""


class MissingAPIKeyError(InvalidRequestError):
    """No API key was given."""


class APIConnectionError(HandingerError):
    """The server could not be reached, or the connection broke."""

    def __init__(self, message: str = "Connection error.", *, request_sent: bool = False) -> None:
        super().__init__(message)
        self.message = redact(message)
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError):
    """The request, or a stream's wait for data, took longer than allowed.

    ``request_sent`` is False only for a timeout while connecting.
    """

    def __init__(self, message: str = "Request timed out.", *, request_sent: bool = True) -> None:
        super().__init__(message, request_sent=request_sent)


class APIStatusError(HandingerError):
    """The server answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: Any = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = redact(message)
        self.status_code = status_code
        # A server may echo what it was sent: the body is kept without credentials too.
        self.body = _redact_value(body)
        self.request_id = redact(request_id) if request_id is not None else None
        self.retry_after = retry_after

    def __str__(self) -> str:
        # Redacted here as well: ``message`` may be added to after construction.
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return redact(f"{self.status_code}: {self.message}{rid}")


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404: no such worker or file."""


class ConflictError(APIStatusError):
    """409."""


class GoneError(APIStatusError):
    """410: what was asked for is no longer kept (a replay whose stored events were
    trimmed, expired or lost). Not retried: asking again cannot bring it back."""


class UnprocessableEntityError(APIStatusError):
    """422."""


class RateLimitError(APIStatusError):
    """429."""


class InternalServerError(APIStatusError):
    """5xx."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


class APIResponseValidationError(APIStatusError):
    """A successful answer whose body is not what the call returns (``status_code`` is its own).

    The message says which field did not fit, where, and shows an excerpt of the body.
    """


class ResponseTooLargeError(APIStatusError):
    """A response body that is not a stream grew past the most the client reads whole.

    ``limit`` is that bound in bytes (counted after decompression), ``url``
    the request's URL fit to show; ``status_code`` is the response's.
    """

    def __init__(self, *, status_code: int, limit: int, url: str) -> None:
        super().__init__(
            f"the response body from {url} is larger than {limit} bytes "
            "(after decompression), the most the client reads whole; the rest was not read",
            status_code=status_code,
        )
        self.limit = limit
        self.url = redact(url)


def status_error(
    status: int,
    body: Any,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIStatusError:
    """The error class for an HTTP status, with a message taken from the body."""
    cls = _BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    message = _message_from_body(body) or f"HTTP {status}"
    return cls(
        message, status_code=status, body=body, request_id=request_id, retry_after=retry_after
    )


def _message_from_body(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error", body.get("message"))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return excerpt(err if isinstance(err, str) else repr(err), 300)
    if isinstance(body, (str, bytes)) and body:
        return excerpt(body)
    return ""


class StreamError(HandingerError):
    """A stream went wrong; ``worker`` is what was folded before it did."""

    def __init__(self, message: str, *, worker: Worker | None = None) -> None:
        super().__init__(message)
        self.message = redact(message)
        self.worker = worker


class StreamDecodeError(StreamError):
    """An event's data could not be decoded; names the event and shows an excerpt."""

    def __init__(
        self,
        reason: str,
        *,
        index: int,
        event_id: str | None,
        data: str | bytes,
        worker: Worker | None = None,
    ) -> None:
        self.reason = reason
        self.index = index
        self.event_id = event_id
        self.excerpt = redact(excerpt(data))
        where = f"event {index}" + (f" (id {event_id!r})" if event_id is not None else "")
        super().__init__(f"cannot decode {where}: {reason}; data: {self.excerpt!r}", worker=worker)


class IncompleteStreamError(StreamError):
    """The stream ended before its end marker and could not be resumed.

    ``worker`` is everything folded until then; ``__cause__`` is the last break.
    """


class StreamTimeoutError(IncompleteStreamError):
    """A stall limit was hit and resuming did not help.

    ``limit`` names it: ``"first_event"``, ``"idle"`` or ``"total"``; ``seconds`` is its value.
    """

    def __init__(
        self, message: str, *, limit: str, seconds: float, worker: Worker | None = None
    ) -> None:
        super().__init__(message, worker=worker)
        self.limit = limit
        self.seconds = seconds


class HistoryGoneError(IncompleteStreamError):
    """A stream's resume was answered ``410 Gone``: the server no longer keeps the events
    after the last one received, so the turn cannot be read to its end.

    Never a silent restart from the beginning, never a gap: the stream stops here.
    ``worker`` is everything folded until then (it does not look finished);
    ``last_event_id`` is the id the resume asked to continue after; ``__cause__``
    is the server's :class:`GoneError`.

    >>> try:
    ...     raise HistoryGoneError("gone", last_event_id="41")
    ... except IncompleteStreamError as e:
    ...     e.last_event_id
    '41'
    """

    def __init__(
        self, message: str, *, last_event_id: str | None, worker: Worker | None = None
    ) -> None:
        super().__init__(message, worker=worker)
        self.last_event_id = redact(last_event_id) if last_event_id is not None else None


class WorkerFailedError(StreamError):
    """The worker reported an error; ``worker`` is the whole Worker as it ended."""

    def __init__(self, worker: Worker) -> None:
        err = worker.error
        if isinstance(err, dict):
            err = err.get("message", err)
        text = err if isinstance(err, str) else repr(err)
        super().__init__(f"worker {worker.id} failed: {text}", worker=worker)
        # ``message`` is the worker's own error text; str(e) says whose it is.
        self.message = redact(text)
