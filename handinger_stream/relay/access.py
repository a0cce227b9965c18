"""Access control for the relay, framework-neutral: who may use it, from where, how much.

The pieces the HTTP layer calls before it routes a request, each usable alone:

- :class:`RequestInfo`: what a hook sees of a request (never its body);
- ``authenticate``: an async ``(RequestInfo) -> principal | None`` (``None``:
  401); :func:`bearer_token` is a ready one, :func:`load_token` reads its
  token from a file or an environment variable;
- ``policy``: an async ``(principal, RequestInfo, ChatRequest) -> TurnOptions``
  that decides a turn's budget, template and files, or raises :class:`Forbidden`;
  :func:`default_policy` ignores the browser's budget;
- :class:`Limits` and :class:`LimitChecker`: turns at once, turns per minute
  and chats kept, per principal, counted in the store (so every relay sharing
  it counts the same), and each chat's owner (anyone else gets 404);
- :class:`Origins`: the ``Host`` and ``Origin`` allow-lists (DNS-rebinding
  safe), CORS headers and preflight answers, the JSON content type of a ``POST``;
- :class:`AccessRefused` and its kinds (400, 401, 403, 404, 413, 415, 429, 431):
  short public messages, never a secret or an internal detail;
- :class:`Access`: all of it behind four calls.

>>> from handinger_stream.relay import MemoryStore
>>> access = Access(
...     MemoryStore(),
...     authenticate=bearer_token("s3cret-token-of-32-characters-xx"),
...     origins=Origins.for_bind("127.0.0.1", 8788),
... )
>>> "s3cret" in repr(access)
False
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from ..errors import InvalidRequestError
from ..types.worker import BUDGETS, Budget
from .errors import RelayError
from .store import Admission, Quota, Store, check_principal

__all__ = [
    "ANONYMOUS",
    "MAX_HEADERS",
    "MAX_HEADER_VALUE",
    "MAX_STREAMS",
    "TOKEN_ENV",
    "WS_BEARER_PROTOCOL",
    "Access",
    "AccessRefused",
    "Admitted",
    "Answer",
    "Authenticate",
    "BadRequest",
    "BearerToken",
    "ChatRequest",
    "Forbidden",
    "Headers",
    "HeadersTooLarge",
    "LimitChecker",
    "Limits",
    "NotFound",
    "Origins",
    "Policy",
    "RequestInfo",
    "TooLarge",
    "TooManyRequests",
    "TurnOptions",
    "Unauthorized",
    "UnsupportedMediaType",
    "bearer_token",
    "check_length",
    "count_files",
    "default_policy",
    "load_token",
    "require_json",
]

log = logging.getLogger("handinger_stream.relay")

MAX_HEADERS = 128
"""Header lines a request may have for the relay to look at it."""
MAX_HEADER_VALUE = 8192
"""Bytes in one header value (a browser's cookies fit; larger is refused with 431)."""
TOKEN_ENV = "HANDINGER_RELAY_TOKEN"
"""The environment variable ``handinger-stream relay`` reads its bearer token from."""
WS_BEARER_PROTOCOL = "handinger.bearer"
"""A browser cannot set ``Authorization`` on a WebSocket: it offers the subprotocols
``handinger.bearer`` and then its token, ``new WebSocket(url, ["handinger.bearer", token])``;
the server accepts the upgrade with ``handinger.bearer`` alone (never the token)."""
ANONYMOUS = "anonymous"
"""The principal of every request when no ``authenticate`` hook is given: one shared
principal, so that the limits still hold for the relay as a whole."""

_MIN_TOKEN = 16  # characters: shorter can be guessed
_MAX_TOKEN = 1024
_MAX_TOKEN_FILE = 4096  # bytes read from a token file, at most
_MAX_ORIGIN = 300  # an origin or a Host is a scheme and a host name (253) with a port
_MAX_LISTED = 32  # names in Access-Control-Request-Headers
_JSON = "application/json"
_json = msgspec.json.Encoder()


# -- answers -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer the relay gives without routing: a status, headers, a body.

    The HTTP layer turns it into its own reply: ``Reply(a.status, a.headers, a.body)``.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class AccessRefused(RelayError):
    """A request refused before it reached the relay: its status and a short public message.

    ``str(refusal)`` is the message, fit for any client: it names no secret, no
    principal and nothing of the server's insides.

    >>> refused = TooManyRequests(retry_after=2.5)
    >>> (refused.status, refused.answer().headers["retry-after"])
    (429, '3')
    """

    status = 403
    kind = "forbidden"
    message = "this request is not allowed"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)

    def headers(self) -> dict[str, str]:
        """The answer's headers (its content type, and what its status calls for)."""
        return {"content-type": _JSON, "cache-control": "no-store"}

    def answer(self) -> Answer:
        """The JSON error answer, shaped as every error of the relay."""
        body = {"error": {"message": str(self), "type": self.kind, "status": self.status}}
        return Answer(self.status, self.headers(), _json.encode(body))


class BadRequest(AccessRefused):
    """400: the request's headers make no sense (a repeated ``Host``, a bad length)."""

    status = 400
    kind = "invalid_request"
    message = "malformed request headers"


class Unauthorized(AccessRefused):
    """401: no credentials, or not ones the relay knows."""

    status = 401
    kind = "unauthorized"
    message = "authentication required"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "www-authenticate": 'Bearer realm="handinger-relay"'}


class Forbidden(AccessRefused):
    """403: known, or not needing to be, but not allowed this (a policy's refusal, an
    origin or a ``Host`` not in the lists)."""


class NotFound(AccessRefused):
    """404: no such chat, for this principal (another's chat is not said to exist)."""

    status = 404
    kind = "not_found"
    message = "no such chat"


class TooLarge(AccessRefused):
    """413: the body is larger than the relay takes."""

    status = 413
    kind = "too_large"
    message = "the request body is too large"


class UnsupportedMediaType(AccessRefused):
    """415: a ``POST`` that is not JSON (so no page can send it as a plain form)."""

    status = 415
    kind = "unsupported_media_type"
    message = "the body must be JSON (content-type: application/json)"


class TooManyRequests(AccessRefused):
    """429: a limit of the principal's was reached; ``retry_after`` seconds to wait."""

    status = 429
    kind = "rate_limited"
    message = "too many requests: try again later"

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "retry-after": str(max(1, math.ceil(self.retry_after)))}


class HeadersTooLarge(AccessRefused):
    """431: more header lines, or a longer one, than the relay looks at."""

    status = 431
    kind = "headers_too_large"
    message = "the request headers are too large"


# -- what a hook sees ------------------------------------------------------------

# The only values a repr shows: any other header may carry a secret (a key, a cookie).
_SHOWN_HEADERS = frozenset({"host", "origin", "content-type", "content-length", "sec-fetch-site"})


class Headers:
    """A request's headers: names case-insensitive, every value kept (a header may come
    more than once), bounded in count and size.

    Built from what a framework has: ASGI's ``scope["headers"]`` or aiohttp's
    ``request.raw_headers`` (pairs of bytes), or a mapping.

    >>> headers = Headers([(b"Host", b"relay.example"), (b"X-A", b"1"), (b"x-a", b"2")])
    >>> (headers.single("host"), headers.get_all("X-A"))
    ('relay.example', ('1', '2'))
    """

    __slots__ = ("_values",)

    def __init__(
        self, pairs: Iterable[tuple[str | bytes, str | bytes]] | Mapping[str, str] = ()
    ) -> None:
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        values: dict[str, list[str]] = {}
        count = 0
        for name, value in items:
            count += 1
            if count > MAX_HEADERS or len(name) > 256 or len(value) > MAX_HEADER_VALUE:
                raise HeadersTooLarge()
            # HTTP header bytes are ISO-8859-1 at most: never a decoding error.
            key = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            values.setdefault(key, []).append(text.strip())
        self._values = values

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of the header, in order (``()`` when absent)."""
        return tuple(self._values.get(name.lower(), ()))

    def single(self, name: str) -> str | None:
        """The header's value, ``None`` when absent; :class:`BadRequest` when it came more
        than once (``Host``, ``Origin`` and ``Authorization`` must not be ambiguous)."""
        found = self._values.get(name.lower())
        if not found:
            return None
        if len(found) > 1:
            raise BadRequest(f"the {name.lower()} header is repeated")
        return found[0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = {
            name: ", ".join(values)[:100] if name in _SHOWN_HEADERS else "<hidden>"
            for name, values in self._values.items()
        }
        return f"Headers({shown!r})"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What an ``authenticate`` or ``policy`` hook sees of a request: never its body.

    ``path`` is relative to where the relay is mounted; ``client`` is the peer's
    address as the server saw it (a proxy's, behind one: ``X-Forwarded-For``
    is only a header, anyone can send it).

    >>> info = RequestInfo("GET", "/api/chat/c1", Headers({"Authorization": "Bearer x"}))
    >>> "Bearer" in repr(info)
    False
    """

    method: str
    path: str
    headers: Headers
    client: str | None = None

    def without_cookies(self) -> RequestInfo:
        """The same request, its ``Cookie`` headers left out (what a hook may see of a
        WebSocket upgrade from a site that is not the relay's own, without credentials).

        >>> info = RequestInfo.of("GET", "/", {"Cookie": "s=1", "Host": "h"})
        >>> info.without_cookies().headers.get_all("cookie"), info.headers.get_all("cookie")
        ((), ('s=1',))
        """
        pairs = [(n, v) for n in self.headers if n != "cookie" for v in self.headers.get_all(n)]
        return RequestInfo(self.method, self.path, Headers(pairs), self.client)

    @classmethod
    def of(
        cls,
        method: str,
        path: str,
        headers: Headers | Iterable[tuple[str | bytes, str | bytes]] | Mapping[str, str],
        client: str | None = None,
    ) -> RequestInfo:
        """From what the framework has: the headers as pairs or a mapping."""
        if not isinstance(headers, Headers):
            headers = Headers(headers)
        return cls(method.upper(), path, headers, client)


# -- who: authentication -----------------------------------------------------------

Authenticate = Callable[[RequestInfo], Awaitable[str | None]]
"""The ``authenticate=`` hook: the request's principal (a user's, a key's name), or
``None`` (answered 401). It may raise :class:`AccessRefused` to answer otherwise."""


def _check_token(token: str, where: str) -> str:
    """A token fit to compare; the errors never repeat it."""
    if not isinstance(token, str):
        raise InvalidRequestError(f"{where}: a token is a string")
    if not _MIN_TOKEN <= len(token) <= _MAX_TOKEN:
        raise InvalidRequestError(
            f"{where}: a token must have {_MIN_TOKEN} to {_MAX_TOKEN} characters "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise InvalidRequestError(f"{where}: a token must be printable ASCII without spaces")
    return token


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class BearerToken:
    """An ``authenticate`` hook: ``Authorization: Bearer <token>`` against known tokens.

    The comparison takes the same time whichever token is presented, however
    much of it matches (digests of equal length, compared with
    :func:`hmac.compare_digest`, against every known token, with no early exit).
    Use :func:`bearer_token` to make one.
    """

    __slots__ = ("_known",)

    def __init__(self, tokens: str | Mapping[str, str] | Iterable[str]) -> None:
        if isinstance(tokens, str):
            named = {"token": tokens}
        elif isinstance(tokens, Mapping):
            named = dict(tokens)
        else:
            # A principal per token, named by a digest of it (stable across restarts,
            # and across relays; a token of 16 characters or more is not found from it).
            named = {f"token:{hashlib.sha256(t.encode()).hexdigest()[:12]}": t for t in tokens}
        if not named:
            raise InvalidRequestError("bearer_token: give at least one token")
        known: list[tuple[bytes, str]] = []
        for principal, token in named.items():
            check_principal(principal)
            known.append((_digest(_check_token(token, "bearer_token")), principal))
        if len({digest for digest, _ in known}) != len(known):
            raise InvalidRequestError("bearer_token: the same token is given twice")
        self._known = tuple(known)

    def __repr__(self) -> str:
        return f"BearerToken({len(self._known)} token{'s' if len(self._known) != 1 else ''})"

    async def __call__(self, info: RequestInfo) -> str | None:
        presented = _presented_token(info)
        if presented is None:
            return None
        presented_digest = _digest(presented)
        found: str | None = None
        for digest, principal in self._known:
            if hmac.compare_digest(digest, presented_digest):
                found = principal
        return found


def _presented_token(info: RequestInfo) -> str | None:
    """The token of ``Authorization: Bearer``, or of a WebSocket's subprotocols."""
    header = info.headers.single("authorization")
    if header is not None:
        if len(header) > _MAX_TOKEN + 16:
            return None
        scheme, _, presented = header.partition(" ")
        return presented.strip() if scheme.lower() == "bearer" else None
    offered = [
        name.strip()
        for line in info.headers.get_all("sec-websocket-protocol")
        for name in line.split(",")
    ]
    if len(offered) >= 2 and offered[0] == WS_BEARER_PROTOCOL:
        return offered[1] if len(offered[1]) <= _MAX_TOKEN else None
    return None


def bearer_token(tokens: str | Mapping[str, str] | Iterable[str]) -> BearerToken:
    """The minimal access control for a relay on a network: one secret token (or a few).

    A string is one token (principal ``"token"``); a mapping names each
    token's principal (``{"alice": token_a, "bob": token_b}``), so each has
    its own chats and limits. The page and any client send
    ``Authorization: Bearer <token>``; a WebSocket offers it as a subprotocol
    (:data:`WS_BEARER_PROTOCOL`).

    >>> auth = bearer_token({"alice": "a" * 32, "bob": "b" * 32})
    >>> auth
    BearerToken(2 tokens)
    """
    return BearerToken(tokens)


def load_token(*, file: str | os.PathLike[str] | None = None, env: str | None = None) -> str:
    """A bearer token from a file (its first line; keep it readable by the relay alone)
    or an environment variable, never from a command line (which ``ps`` shows to all).

    >>> os.environ["DOC_RELAY_TOKEN"] = "0123456789abcdef0123"
    >>> load_token(env="DOC_RELAY_TOKEN")
    '0123456789abcdef0123'
    >>> del os.environ["DOC_RELAY_TOKEN"]
    """
    if (file is None) == (env is None):
        raise InvalidRequestError("load_token: give a file or an environment variable, one")
    if env is not None:
        value = os.environ.get(env)
        if value is None or not value.strip():
            raise InvalidRequestError(f"the environment variable {env} holds no token")
        return _check_token(value.strip(), env)
    path = Path(os.fspath(file))  # type: ignore[arg-type]
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_TOKEN_FILE + 1)
            mode = os.fstat(handle.fileno()).st_mode
    except OSError as exc:
        raise InvalidRequestError(
            f"cannot read the token file {str(path)!r}: {exc.strerror}"
        ) from None
    if len(raw) > _MAX_TOKEN_FILE:
        raise InvalidRequestError(f"the token file {str(path)!r} is too large for a token")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRequestError(f"the token file {str(path)!r} is not ASCII text") from None
    lines = text.strip().splitlines()
    token = _check_token(lines[0].strip() if lines else "", f"the token file {str(path)!r}")
    if os.name == "posix" and mode & 0o077:
        # Said, not refused: a container's secret is often mounted readable by all.
        log.warning("relay: the token file %r can be read by other users (chmod 600 it)", str(path))
    return token


# -- what: the policy of a turn ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a chat request asks for, from its parsed body: a policy decides on it.

    ``budget`` is what the browser asked for: anyone can send any, so a
    policy must not just pass it on. ``files``: the file parts of the last
    user message (:func:`count_files`).
    """

    chat_id: str
    input: str
    budget: str | None = None
    files: int = 0


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """What a policy decided for a turn: its budget (``None``: the API's default), its
    worker template (``None``: the relay's own; a relay runs one template, so naming
    another is a configuration error: the turn is refused with 500 and logged) and
    whether files may come with it."""

    budget: Budget | None = "low"
    worker_id: str | None = None
    files: bool = False

    def __post_init__(self) -> None:
        if self.budget is not None and self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)} or None")


Policy = Callable[[str, RequestInfo, ChatRequest], Awaitable[TurnOptions]]
"""The ``policy=`` hook: ``(principal, request, chat request) -> TurnOptions``; it refuses
a turn by raising :class:`Forbidden` with a public message."""


def count_files(message: object) -> int:
    """The file parts of a UI message (what ``DefaultChatTransport`` sends for attachments).

    >>> count_files({"role": "user", "parts": [{"type": "text"}, {"type": "file"}]})
    1
    """
    if not isinstance(message, dict):
        return 0
    parts = message.get("parts")
    if not isinstance(parts, list):
        return 0
    return sum(1 for p in parts if isinstance(p, dict) and p.get("type") == "file")


def default_policy(
    budget: Budget | None = "low", *, worker_id: str | None = None, files: bool = False
) -> Policy:
    """The policy when none is given: every turn at the server's ``budget``, whatever
    the browser asked; no files unless ``files``.

    >>> import asyncio
    >>> chat = ChatRequest("c1", "Hi", budget="unlimited")
    >>> info = RequestInfo.of("POST", "/api/chat", {})
    >>> asyncio.run(default_policy("standard")("anyone", info, chat)).budget
    'standard'
    """
    options = TurnOptions(budget=budget, worker_id=worker_id, files=files)

    async def policy(principal: str, info: RequestInfo, chat: ChatRequest) -> TurnOptions:
        return options

    return policy


# -- how much: limits, and owners --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """What each principal may do, across every relay sharing the store (``None``: no
    limit): ``concurrent_turns`` running at once, ``turns_per_minute`` started,
    ``chats`` kept (a chat counts until its record expires, a week after its last
    turn by default). ``hold_seconds``: how long an admitted turn counts before its
    producer's lease shows (a relay dying in between frees the slot after that).

    >>> Limits(concurrent_turns=1).quota().turns
    1
    """

    concurrent_turns: int | None = 2
    turns_per_minute: int | None = 10
    chats: int | None = 100
    hold_seconds: float = 30.0

    def quota(self) -> Quota:
        """The store's form of these limits."""
        return Quota(
            turns=self.concurrent_turns,
            rate=self.turns_per_minute,
            window=60.0,
            chats=self.chats,
            hold=self.hold_seconds,
        )


@dataclass(frozen=True, slots=True)
class Admitted:
    """A turn let through: start it with ``options``; :meth:`LimitChecker.release` it if
    it did not start (the chat was busy, the worker API refused)."""

    chat_id: str
    principal: str
    options: TurnOptions
    new_chat: bool = False


_LIMIT_MESSAGES = {
    "turns": "too many turns running: wait for one to end",
    "rate": "too many turns started in the last minute",
    "chats": "too many chats kept: wait for an old one to expire",
}


class LimitChecker:
    """Enforces :class:`Limits` and chat owners through the store: what one relay
    counts, every relay sharing the store sees.

    >>> from handinger_stream.relay import MemoryStore
    >>> checker = LimitChecker(MemoryStore(), Limits(concurrent_turns=1))
    """

    def __init__(self, store: Store, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits
        # No limits still checks owners: an empty quota.
        self._quota = limits.quota() if limits is not None else Quota()

    def __repr__(self) -> str:
        return f"LimitChecker({self.limits!r})"

    async def admit(
        self, principal: str, chat_id: str, options: TurnOptions | None = None
    ) -> Admitted:
        """Let a turn of the chat through for the principal, or raise :class:`NotFound`
        (another's chat) or :class:`TooManyRequests` (a limit, with ``retry_after``)."""
        admission: Admission = await self.store.admit_turn(chat_id, principal, self._quota)
        if admission.refused == "owner":
            raise NotFound()
        if admission.refused is not None:
            raise TooManyRequests(
                _LIMIT_MESSAGES.get(admission.refused), retry_after=admission.retry_after
            )
        return Admitted(chat_id, principal, options or TurnOptions(), admission.new_chat)

    async def release(self, admitted: Admitted) -> None:
        """The admitted turn did not start: free its slot (it still counts per minute)."""
        await self.store.drop_admission(admitted.chat_id, admitted.principal)

    async def owns(self, principal: str, chat_id: str) -> bool:
        """Whether the chat is the principal's (one it started). A chat never seen and
        another's are alike: ``False``, so that no answer tells one from the other."""
        return is_owner(await self.store.owner(chat_id), principal)

    async def check_owner(self, principal: str, chat_id: str) -> None:
        """:class:`NotFound` unless the chat is the principal's."""
        if not await self.owns(principal, chat_id):
            raise NotFound()


def is_owner(owner: str | None, principal: str) -> bool:
    """Whether a chat whose owner the store keeps as ``owner`` is ``principal``'s.

    A chat nobody owns (made without access control) is nobody's: False for all.

    >>> is_owner("alice", "alice"), is_owner("alice", "bob"), is_owner(None, "")
    (True, False, False)
    """
    return owner is not None and hmac.compare_digest(owner.encode(), principal.encode())


# -- from where: Host, Origin, CORS --------------------------------------------------

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_CORS_METHODS = ("GET", "HEAD", "POST")
_CORS_HEADERS = ("authorization", "content-type", "last-event-id", "accept")
_EXPOSED = "x-handinger-worker-id, x-vercel-ai-ui-message-stream, retry-after, www-authenticate"
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_:[]")


def _origin(value: str) -> str | None:
    """``scheme://host[:port]`` in one spelling (lower case, no default port), or ``None``
    for what is not a web origin (``null``, a path, credentials)."""
    if len(value) > _MAX_ORIGIN or value == "null":
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def _hosts_of(origin: str) -> set[str]:
    """The ``Host`` values a request for this origin carries (with and without a default port)."""
    parts = urlsplit(origin)
    netloc = parts.netloc
    if parts.port is not None:
        return {netloc}
    default = 443 if parts.scheme == "https" else 80
    return {netloc, f"{netloc}:{default}"}


def _is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Origins:
    """The ``Host`` and ``Origin`` allow-lists, and the CORS answers they make.

    ``own``: the origins the relay is served at (``https://chat.example``);
    the ``Host`` of every request must be one of theirs (or in ``hosts``), so
    a name an attacker points at the relay (DNS rebinding) is refused. ``allow``:
    other sites whose pages may call the relay (CORS), ``"*"`` for any
    (still behind ``authenticate``). ``credentials``: let those pages send
    cookies (for an ``authenticate`` hook that reads them).

    >>> origins = Origins(["https://chat.example"], allow=["https://app.example"])
    >>> sorted(origins.hosts)
    ['chat.example', 'chat.example:443']
    """

    def __init__(
        self,
        own: Iterable[str],
        *,
        allow: Iterable[str] = (),
        hosts: Iterable[str] = (),
        credentials: bool = False,
        max_age: int = 600,
        request_headers: Iterable[str] = _CORS_HEADERS,
    ) -> None:
        if isinstance(own, str) or isinstance(allow, str) or isinstance(hosts, str):
            raise TypeError("own, allow and hosts are collections of strings, not one string")
        self.own = frozenset(self._parse(o, "own") for o in own)
        if not self.own:
            raise InvalidRequestError("Origins: give the relay's own origin (where it is served)")
        listed = list(allow)
        self.any = "*" in listed
        if self.any and credentials:
            raise InvalidRequestError("Origins: any origin with credentials would let any site in")
        self.allowed = self.own | {self._parse(o, "allow") for o in listed if o != "*"}
        self.hosts = frozenset(
            {h for o in self.own for h in _hosts_of(o)} | {h.strip().lower() for h in hosts}
        )
        self.credentials = credentials
        self.max_age = max_age
        self.request_headers = frozenset(h.lower() for h in request_headers)

    def is_own(self, origin: str) -> bool:
        """Whether ``origin``, as a browser sends it, is one of the relay's own.

        >>> Origins(["https://chat.example"]).is_own("https://CHAT.example:443")
        True
        """
        return _origin(origin) in self.own

    @staticmethod
    def _parse(value: str, name: str) -> str:
        origin = _origin(value)
        if origin is None:
            raise InvalidRequestError(
                f"Origins: {name}: {value[:80]!r} is not an origin (scheme://host[:port])"
            )
        return origin

    @classmethod
    def for_bind(
        cls, host: str, port: int, *, public: Iterable[str] = (), allow: Iterable[str] = ()
    ) -> Origins:
        """The lists for a relay listening on ``host:port``: on a loopback address, its
        loopback names (``localhost``, ``127.0.0.1``, ``[::1]``) on that port; on any
        other, ``http://host:port``; plus ``public``, the origins it is reached at through a
        proxy (required on a wildcard address, ``0.0.0.0`` or ``::``).

        >>> sorted(Origins.for_bind("127.0.0.1", 8788).hosts)
        ['127.0.0.1:8788', '[::1]:8788', 'localhost:8788']
        """
        own = list(public)
        bare = host.strip("[]")
        if _is_loopback(bare):
            own += [f"http://{name}:{port}" for name in _LOOPBACK_NAMES]
        elif bare in ("", "0.0.0.0", "::"):
            if not own:
                raise InvalidRequestError(
                    f"listening on {host or 'every address'}: give the origin the relay is "
                    "reached at (e.g. https://chat.example)"
                )
        else:
            own.append(f"http://{f'[{bare}]' if ':' in bare else bare}:{port}")
        return cls(own, allow=allow)

    def __repr__(self) -> str:
        return f"Origins(own={sorted(self.own)!r}, allowed={len(self.allowed)}, any={self.any})"

    def _allowed(self, origin: str) -> str | None:
        normal = _origin(origin)
        if normal is None:
            return None
        return normal if self.any or normal in self.allowed else None

    def check(self, info: RequestInfo) -> None:
        """Refuse a request whose ``Host`` is not the relay's (:class:`Forbidden`: DNS
        rebinding, or a name it is not served at) or that comes from a page of a site
        not allowed."""
        host = info.headers.single("host")
        if host is None:
            raise BadRequest("a Host header is required")
        host = host.lower()
        if len(host) > _MAX_ORIGIN or not _HOST_CHARS.issuperset(host) or host not in self.hosts:
            raise Forbidden("this relay is not served under that host name")
        origin = info.headers.single("origin")
        if origin is not None:
            if self._allowed(origin) is None:
                raise Forbidden("requests from this origin are not allowed")
            return
        # No Origin: not a page's fetch (curl, a server), or a navigation; a page's
        # request the browser marks as another site's yet left Origin off is refused.
        site = info.headers.get_all("sec-fetch-site")
        mode = info.headers.get_all("sec-fetch-mode")
        if "cross-site" in site and mode != ("navigate",):
            raise Forbidden("requests from another site are not allowed")

    def cors_headers(self, info: RequestInfo) -> dict[str, str]:
        """The CORS headers of an answer to an allowed origin (``Vary: Origin`` always)."""
        headers = {"vary": "Origin"}
        origin = info.headers.get_all("origin")
        allowed = self._allowed(origin[0]) if len(origin) == 1 else None
        if allowed is not None:
            # The origin as browsers spell it, never the request's bytes sent back.
            headers["access-control-allow-origin"] = allowed
            headers["access-control-expose-headers"] = _EXPOSED
            if self.credentials:
                headers["access-control-allow-credentials"] = "true"
        return headers

    def preflight(self, info: RequestInfo) -> Answer:
        """The answer to an ``OPTIONS`` request: a CORS preflight from an allowed origin
        for a method and headers the relay takes (204), else :class:`Forbidden`; a plain
        ``OPTIONS`` gets the methods (204, ``Allow``). Never needs credentials:
        browsers send none with a preflight."""
        self.check(info)
        method = info.headers.single("access-control-request-method")
        origin = info.headers.single("origin")
        if method is None or origin is None:
            return Answer(204, {"allow": "GET, HEAD, POST, OPTIONS"})
        if method.upper() not in _CORS_METHODS:
            raise Forbidden("this method is not allowed from another origin")
        asked = [
            name.strip().lower()
            for line in info.headers.get_all("access-control-request-headers")
            for name in line.split(",")
            if name.strip()
        ]
        if len(asked) > _MAX_LISTED or not self.request_headers.issuperset(asked):
            raise Forbidden("a requested header is not allowed from another origin")
        headers = self.cors_headers(info)
        headers.update(
            {
                "vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                "access-control-allow-methods": ", ".join(_CORS_METHODS),
                "access-control-allow-headers": ", ".join(sorted(self.request_headers)),
                "access-control-max-age": str(self.max_age),
            }
        )
        headers.pop("access-control-expose-headers", None)
        # Chrome asks before a public site's page reaches a private or loopback address
        # (Private Network Access): only an origin listed by name is let through.
        private = info.headers.get_all("access-control-request-private-network")
        if private == ("true",) and _origin(origin) in self.allowed:
            headers["access-control-allow-private-network"] = "true"
        return Answer(204, headers)


def require_json(info: RequestInfo) -> None:
    """:class:`UnsupportedMediaType` unless the body is declared JSON: a page of another
    site can send a form or ``text/plain`` without asking (no preflight), never JSON.

    >>> require_json(RequestInfo.of("POST", "/api/chat", {"content-type": "application/json"}))
    """
    value = info.headers.single("content-type")
    if value is None or len(value) > 200:
        raise UnsupportedMediaType()
    if value.partition(";")[0].strip().lower() != _JSON:
        raise UnsupportedMediaType()


def check_length(info: RequestInfo, limit: int) -> None:
    """:class:`TooLarge` when the declared ``Content-Length`` is over ``limit`` (a body
    without one, chunked, must still be read with that bound)."""
    value = info.headers.single("content-length")
    if value is None:
        return
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise BadRequest("content-length must be a number")
    if int(value) > limit:
        raise TooLarge()


# -- all of it -------------------------------------------------------------------------

MAX_BODY = 8 * 1024 * 1024  # as the relay's HTTP layer: a chat request carries the conversation


MAX_STREAMS = 32
"""Answers (event streams, WebSockets) one principal may hold open at once in one relay
process, by default (:class:`Access`)."""


def _nothing() -> None:
    """The release of an answer that was not counted."""


class Access:
    """Access control for one relay, behind five calls the HTTP layer makes:

    - ``preflight(info)`` for ``OPTIONS``; ``cors_headers(info)`` on every answer;
    - ``principal = await access.request(info)`` before routing (Host, Origin,
      content type, length, ``authenticate``);
    - ``admitted = await access.admit(principal, info, chat)`` before a turn
      (``policy``, owner, limits), ``release(admitted)`` if it did not start;
    - ``await access.owns(principal, chat_id)`` (or ``check_owner``, raising
      :class:`NotFound`) before reading a chat;
    - ``release = access.hold_stream(principal)`` before answering with a stream
      (``max_streams`` open at once per principal, in this process), ``release()``
      once it ended.

    Without ``authenticate`` every request is :data:`ANONYMOUS`'s, and the
    limits hold for the relay as a whole. ``origins=None`` checks neither
    ``Host`` nor ``Origin`` (for an app that does so itself).
    """

    def __init__(
        self,
        store: Store,
        *,
        authenticate: Authenticate | None = None,
        policy: Policy | None = None,
        limits: Limits | None = Limits(),  # frozen: one shared default is fine
        origins: Origins | None = None,
        max_body: int = MAX_BODY,
        max_streams: int | None = MAX_STREAMS,
    ) -> None:
        if max_streams is not None and (isinstance(max_streams, bool) or max_streams < 1):
            raise InvalidRequestError("max_streams must be a positive number of answers, or None")
        self.authenticate = authenticate
        self.policy = policy or default_policy()
        self.limits = LimitChecker(store, limits)
        self.origins = origins
        self.max_body = max_body
        self.max_streams = max_streams
        self._streams: dict[str, int] = {}  # principal -> answers it holds open here

    def __repr__(self) -> str:
        auth = "none" if self.authenticate is None else repr(self.authenticate)
        limits = self.limits.limits
        return f"Access(authenticate={auth}, limits={limits!r}, origins={self.origins!r})"

    @property
    def open(self) -> bool:
        """True without ``authenticate``: anyone who reaches the relay may use it."""
        return self.authenticate is None

    def preflight(self, info: RequestInfo) -> Answer:
        """The answer to an ``OPTIONS`` request (raises :class:`AccessRefused`)."""
        if self.origins is None:
            return Answer(204, {"allow": "GET, HEAD, POST, OPTIONS"})
        return self.origins.preflight(info)

    def cors_headers(self, info: RequestInfo) -> dict[str, str]:
        """Headers to add to every answer, refusals included (a page can read its 429)."""
        return {} if self.origins is None else self.origins.cors_headers(info)

    async def request(self, info: RequestInfo) -> str:
        """The request's principal, once it passed the origin, content and credential
        checks; raises :class:`AccessRefused` (400, 401, 403, 413, 415, 431) if not."""
        if self.origins is not None:
            self.origins.check(info)
        if info.method == "POST":
            require_json(info)
            check_length(info, self.max_body)
        if self.authenticate is None:
            return ANONYMOUS
        principal = await self.authenticate(info)
        if principal is None:
            raise Unauthorized()
        if principal == ANONYMOUS:
            # The open relay's one principal: a hook's user of that name would share its
            # chats' task ids.
            log.warning("relay: the authenticate hook named the principal kept for no access")
            raise Unauthorized()
        try:
            check_principal(principal)
        except ValueError:
            # The hook's answer, perhaps from a token's claims: not one to keep.
            log.warning("relay: the authenticate hook named a principal the store cannot keep")
            raise Unauthorized() from None
        return principal

    def hold_stream(self, principal: str) -> Callable[[], None]:
        """Count an answer the principal is about to read (an event stream, a WebSocket)
        against ``max_streams``, in this process; raises :class:`TooManyRequests` when it
        holds that many already. Call what it returns once the answer ended (more than
        once does nothing).

        Each open answer holds a connection, a reader and its buffers: without a
        bound, one principal's tabs or script could take them all. Without
        ``authenticate`` everyone is one principal, and nothing is counted.

        >>> from handinger_stream.relay import MemoryStore
        >>> async def anyone(info): return "alice"
        >>> access = Access(MemoryStore(), authenticate=anyone, max_streams=1)
        >>> release = access.hold_stream("alice")
        >>> access.hold_stream("alice")
        Traceback (most recent call last):
        ...
        handinger_stream.relay.access.TooManyRequests: too many answers open at once: close one
        >>> release(); release(); access.hold_stream("alice")  # doctest: +ELLIPSIS
        <function ...>
        """
        limit = self.max_streams
        if self.authenticate is None or limit is None:
            return _nothing
        streams = self._streams
        held = streams.get(principal, 0)
        if held >= limit:
            raise TooManyRequests("too many answers open at once: close one", retry_after=1.0)
        streams[principal] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = streams[principal] - 1
                if left:
                    streams[principal] = left
                else:
                    del streams[principal]

        return release

    async def admit(self, principal: str, info: RequestInfo, chat: ChatRequest) -> Admitted:
        """Decide a turn: the policy (:class:`Forbidden`), files, then the owner
        (:class:`NotFound`) and the limits (:class:`TooManyRequests`), counted at once."""
        options = await self.policy(principal, info, chat)
        if not isinstance(options, TurnOptions):
            raise TypeError("a policy returns TurnOptions (or raises Forbidden)")
        if chat.files and not options.files:
            raise Forbidden("files are not accepted here")
        return await self.limits.admit(principal, chat.chat_id, options)

    async def release(self, admitted: Admitted) -> None:
        """The admitted turn did not start: free its slot."""
        await self.limits.release(admitted)

    async def owns(self, principal: str, chat_id: str) -> bool:
        """Whether the chat is the principal's; ``False`` alike for another's and for one
        never seen (answer both as a chat never seen: 204, no messages)."""
        return await self.limits.owns(principal, chat_id)

    async def check_owner(self, principal: str, chat_id: str) -> None:
        """:class:`NotFound` unless the chat is the principal's."""
        await self.limits.check_owner(principal, chat_id)
