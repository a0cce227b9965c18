"""Receiving Handinger's webhook deliveries, framework-neutral: verify, bound, read, dedupe.

When a task finishes, Handinger POSTs to the worker template's webhook URL
with the shared secret in ``X-Handinger-Token``. The body is not specified by
the API, so any JSON object is accepted: a Worker or a Task found in it (at
the top level or under a key, by their fields) is decoded, and the whole body
is kept in :attr:`WebhookDelivery.raw`. A delivery retried by the sender is
handed on once. The adapters (:mod:`.webhooks_asgi`, :mod:`.webhooks_aiohttp`)
only move bytes between their framework and :meth:`WebhookReceiver.handle`.

>>> task = b'{"id": "t1", "workerId": "w1", "status": "completed"}'
>>> body = b'{"type": "task.finished", "task": %s}' % task
>>> delivery = read_delivery(body)
>>> (delivery.type, delivery.task.id, delivery.task.status, delivery.worker)
('task.finished', 't1', 'completed', None)
>>> render_line(delivery)[20:]
'  task.finished  task t1 completed  worker w1'
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import logging
import re
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import msgspec

from ..errors import HandingerError, excerpt
from ..types.task import Task
from ..types.webhook import TOKEN_HEADER
from ..types.worker import Worker

__all__ = [
    "DELIVERY_ID_HEADERS",
    "MAX_BODY",
    "MAX_DEPTH",
    "DeliveryHandler",
    "WebhookDelivery",
    "WebhookReceiver",
    "WebhookRejected",
    "WebhookReply",
    "read_delivery",
    "recognise",
    "render_json",
    "render_line",
]

log = logging.getLogger("handinger_stream.webhooks")

MAX_BODY = 1024 * 1024
"""Bytes a delivery's body may have by default: a finished Worker with its messages fits."""
MAX_DEPTH = 64
"""How deeply a body's arrays and objects may nest by default (a Worker's messages need ~8)."""
DELIVERY_ID_HEADERS = ("x-handinger-delivery-id", "x-handinger-delivery", "idempotency-key")
"""Headers read, in this order, as a delivery's id: one that stays the same when the
sender retries. Without one, a delivery is known by a digest of its body."""

_MAX_ID = 200  # a delivery id longer than this, or not printable ASCII, is not used as one
_ID_CHARS = re.compile(r"[\x21-\x7e]+")
_FAILED_FIELD = re.compile(r"- at `\$\.([^.`\[]+)")
_TASK_STATUSES = frozenset({"pending", "running", "completed", "error", "aborted"})
_json = msgspec.json.Encoder()
_json_sorted = msgspec.json.Encoder(order="sorted")

DeliveryHandler = Callable[["WebhookDelivery"], "Awaitable[object] | object"]
"""What ``on_delivery`` is: a function of a delivery, or a coroutine function."""
_S = TypeVar("_S", Worker, Task)


class WebhookDelivery(msgspec.Struct, kw_only=True):
    """One delivery, handed on once: what was recognised in it, and the whole body.

    ``delivery_id`` is the sender's delivery id header when it sent one, else
    ``sha256:`` and the digest of the body (its keys sorted); ``type`` is the
    body's ``type`` (or ``event``) when it is a string.
    """

    delivery_id: str
    received_at: datetime
    raw: dict[str, Any]
    worker: Worker | None = None
    task: Task | None = None
    type: str | None = None

    @property
    def task_id(self) -> str | None:
        """The finished task's id, when a Task was recognised."""
        return self.task.id if self.task is not None else None

    @property
    def worker_id(self) -> str | None:
        """The worker's id: the Task's ``workerId``, else the Worker's ``id``."""
        if self.task is not None:
            return self.task.worker_id
        return self.worker.id if self.worker is not None else None

    @property
    def status(self) -> str | None:
        """The Task's status, else the Worker's; ``None`` when neither was recognised."""
        if self.task is not None:
            return self.task.status
        return self.worker.status if self.worker is not None else None


class WebhookRejected(HandingerError):
    """A request that is not a delivery: ``status`` is the HTTP answer, the message is
    safe to send back (it never holds the token nor anything internal)."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass
class WebhookReply:
    """What an adapter answers: a status, headers and a (small JSON) body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


# -- reading a body -----------------------------------------------------------------


def _depth_exceeds(value: object, limit: int) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` (without recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _convert(value: dict[str, Any], cls: type[_S]) -> _S | None:
    """``value`` as ``cls``, leaving out the fields that do not fit it (``raw`` keeps them):
    a sender newer or older than our models still gets the rest read."""
    data = dict(value)
    for _ in range(len(cls.__struct_fields__) + 1):
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            failed = _FAILED_FIELD.search(str(exc))
            if failed is None or failed.group(1) not in data:
                return None  # a required field is missing: not one after all
            del data[failed.group(1)]
    return None


def _looks_like_worker(value: object) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        return False
    if value.get("object") == "worker":
        return True
    return "workerId" not in value and any(k in value for k in ("output_text", "running"))


def _looks_like_task(value: object) -> bool:
    if not isinstance(value, dict) or value.get("object") == "worker":
        return False
    if not isinstance(value.get("id"), str) or not isinstance(value.get("workerId"), str):
        return False
    return "triggeredBy" in value or "totals" in value or value.get("status") in _TASK_STATUSES


def recognise(body: Mapping[str, Any]) -> tuple[Worker | None, Task | None]:
    """The Worker and the Task in ``body``, by their fields: at the top level, under a key
    (``worker`` and ``task`` first), or one level further down; the first of each found.

    >>> worker, task = recognise({"data": {"worker": {"id": "w1", "object": "worker"}}})
    >>> (worker.id, task)
    ('w1', None)
    """
    worker: Worker | None = None
    task: Task | None = None
    level: list[Mapping[str, Any]] = [body]
    for _depth in range(3):  # the body, its values, their values
        for value in level:
            if worker is None and _looks_like_worker(value):
                worker = _convert(dict(value), Worker)
            elif task is None and _looks_like_task(value):
                task = _convert(dict(value), Task)
        if worker is not None and task is not None:
            break
        below: list[Mapping[str, Any]] = []
        for value in level:
            preferred = [value[k] for k in ("worker", "task") if isinstance(value.get(k), dict)]
            rest = [v for k, v in value.items() if k not in ("worker", "task")]
            below.extend(v for v in [*preferred, *rest] if isinstance(v, dict))
        level = below
    return worker, task


def read_delivery(
    body: bytes,
    *,
    delivery_id: str | None = None,
    max_body: int = MAX_BODY,
    max_depth: int = MAX_DEPTH,
    received_at: datetime | None = None,
) -> WebhookDelivery:
    """A delivery's body → a :class:`WebhookDelivery`; :class:`WebhookRejected` when it is
    too large, not JSON, not an object, or nested too deeply. No I/O, no token check."""
    if len(body) > max_body:
        raise WebhookRejected(413, f"the body is larger than {max_body} bytes", "too_large")
    try:
        raw = msgspec.json.decode(body)
    except RecursionError:
        raise WebhookRejected(400, "the body is nested too deeply", "invalid_request") from None
    except msgspec.DecodeError:
        raise WebhookRejected(400, "the body is not valid JSON", "invalid_request") from None
    if not isinstance(raw, dict):
        raise WebhookRejected(400, "the body must be a JSON object", "invalid_request")
    if _depth_exceeds(raw, max_depth):
        raise WebhookRejected(400, f"the body nests deeper than {max_depth}", "invalid_request")
    if delivery_id is None:
        delivery_id = "sha256:" + hashlib.sha256(_json_sorted.encode(raw)).hexdigest()
    worker, task = recognise(raw)
    kind = next((raw[k] for k in ("type", "event") if isinstance(raw.get(k), str)), None)
    return WebhookDelivery(
        delivery_id=delivery_id,
        received_at=received_at or datetime.now(timezone.utc),
        raw=raw,
        worker=worker,
        task=task,
        type=kind,
    )


# -- rendering ------------------------------------------------------------------------


def render_line(delivery: WebhookDelivery) -> str:
    """One delivery as a line for a person: when, what, and the task or worker it names.

    Fields come from the sender: control characters are left out, so a line
    cannot move the cursor or clear the terminal.
    """
    parts = [delivery.received_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")]
    parts.append(delivery.type or "delivery")
    task, worker = delivery.task, delivery.worker
    if task is not None:
        parts.append(f"task {task.id} {task.status}")
        parts.append(f"worker {task.worker_id}")
        if task.title:
            parts.append(repr(task.title))
        if task.totals.credits or task.totals.duration_ms:
            seconds = task.totals.duration_ms / 1000
            parts.append(f"{task.totals.credits:g} credits {seconds:.1f}s")
    elif worker is not None:
        parts.append(f"worker {worker.id} {worker.status}")
    if worker is not None and worker.error is not None:
        error = worker.error
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            error = error["message"]  # the API's error object: its message says it
        parts.append(f"error: {_short(str(error))}")
    elif worker is not None and worker.output_text:
        parts.append(repr(_short(worker.output_text)))
    if task is None and worker is None:
        parts.append(f"{len(delivery.raw)} field{'' if len(delivery.raw) == 1 else 's'}")
    return _printable("  ".join(parts))


def render_json(delivery: WebhookDelivery) -> str:
    """One delivery as one JSON line (``--json``): the ids found, and the whole body.

    >>> d = read_delivery(b'{"a": 1}', delivery_id="d1")
    >>> render_json(d).startswith('{"type":"delivery","delivery_id":"d1",')
    True
    """
    line = {
        "type": "delivery",
        "delivery_id": delivery.delivery_id,
        "received_at": delivery.received_at,
        "event": delivery.type,
        "task_id": delivery.task_id,
        "worker_id": delivery.worker_id,
        "status": delivery.status,
        "body": delivery.raw,
    }
    return _json.encode(line).decode()


def _short(text: str, width: int = 60) -> str:
    return excerpt(" ".join(text.split()), width)


def _printable(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable())


# -- the receiver ---------------------------------------------------------------------


class _Closed(Exception):
    pass


class WebhookReceiver:
    """Handinger's webhook deliveries, checked and handed on once each.

    ``token``: the webhook's shared secret (several during a rotation, as with
    ``regenerate_token``). Each delivery goes to ``on_delivery`` (a function or
    a coroutine function; one call at a time, in arrival order), or, without
    one, into a queue of ``queue_size`` read with ``async for delivery in
    receiver``. A delivery is acknowledged (200) only once handed on; when the
    handler raises, takes longer than ``handler_timeout`` or the queue stays
    full that long, the answer is an error so that the sender retries it.

    ``window``: how many recent delivery ids are remembered to drop retries.
    ``read_timeout``: seconds a request body may take to arrive.

    >>> receiver = WebhookReceiver(token="whsec-123")
    >>> receiver
    WebhookReceiver(tokens=1, handed=0, duplicates=0, rejected=0)
    """

    def __init__(
        self,
        token: str | Iterable[str],
        on_delivery: DeliveryHandler | None = None,
        *,
        max_body: int = MAX_BODY,
        max_depth: int = MAX_DEPTH,
        window: int = 4096,
        queue_size: int = 256,
        read_timeout: float = 10.0,
        handler_timeout: float = 30.0,
        id_headers: Iterable[str] = DELIVERY_ID_HEADERS,
    ) -> None:
        tokens = [token] if isinstance(token, str) else list(token)
        if not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise ValueError("token: the webhook's shared secret (a non-empty string) is required")
        self._tokens = tuple(t.encode() for t in tokens)
        self.on_delivery = on_delivery
        self.max_body = max_body
        self.max_depth = max_depth
        self.window = window
        self.queue_size = queue_size
        self.read_timeout = read_timeout
        self.handler_timeout = handler_timeout
        self.id_headers = tuple(h.lower() for h in id_headers)
        self.handed = 0
        self.duplicates = 0
        self.rejected = 0
        # id -> True once handed on, False while being handed on; oldest first.
        self._seen: OrderedDict[str, bool] = OrderedDict()
        self._items: deque[WebhookDelivery] = deque()
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._dispatch = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"WebhookReceiver(tokens={len(self._tokens)}, handed={self.handed}, "
            f"duplicates={self.duplicates}, rejected={self.rejected})"
        )

    # -- checks ----------------------------------------------------------------------

    def authentic(self, headers: Mapping[str, str]) -> bool:
        """Whether ``headers`` (lower-case names) carry one of the tokens, compared in
        constant time; every token is compared, so the time does not say which matched."""
        given = headers.get(TOKEN_HEADER, "").encode("utf-8", "surrogateescape")
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(given, token)
        return matched and bool(given)

    def _delivery_id(self, headers: Mapping[str, str]) -> str | None:
        for name in self.id_headers:
            value = headers.get(name, "").strip()
            if value and len(value) <= _MAX_ID and _ID_CHARS.fullmatch(value):
                return value
        return None

    def check(self, method: str, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        """One request, all its checks, no I/O: the delivery, or :class:`WebhookRejected`.

        ``headers`` has lower-case names. Does not dedupe nor hand on: :meth:`handle` does.
        """
        self._check_head(method, headers)
        return self._read(headers, body)

    def _read(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        return read_delivery(
            body,
            delivery_id=self._delivery_id(headers),
            max_body=self.max_body,
            max_depth=self.max_depth,
        )

    def _check_head(self, method: str, headers: Mapping[str, str]) -> None:
        if method != "POST":
            raise WebhookRejected(405, "only POST is accepted here", "method_not_allowed")
        # Before anything about the body: a request without the token learns nothing more.
        if not self.authentic(headers):
            raise WebhookRejected(401, "unauthorized", "unauthorized")
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json" and not (
            media.startswith("application/") and media.endswith("+json")
        ):
            raise WebhookRejected(415, "the body must be application/json", "unsupported_media")
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise WebhookRejected(400, "a bad Content-Length", "invalid_request")
            if int(length) > self.max_body:
                raise WebhookRejected(
                    413, f"the body is larger than {self.max_body} bytes", "too_large"
                )

    # -- a request ---------------------------------------------------------------------

    async def handle(
        self,
        method: str,
        headers: Mapping[str, str],
        read_body: Callable[[int], Awaitable[bytes]],
    ) -> WebhookReply:
        """Answer one request. ``headers`` has lower-case names; ``read_body(limit)``
        returns the body, or its first ``limit + 1`` bytes when it is longer. Never
        raises but for cancellation, and no answer holds a stack trace."""
        try:
            self._check_head(method, headers)
            try:
                body = await asyncio.wait_for(read_body(self.max_body), self.read_timeout)
            except asyncio.TimeoutError:
                raise WebhookRejected(408, "the body took too long", "timeout") from None
            return await self._hand_on(self._read(headers, body))
        except WebhookRejected as exc:
            self.rejected += 1
            if exc.status == 401:
                log.warning("webhook: a request without the right token was refused")
            extra = {"allow": "POST"} if exc.status == 405 else {}
            return _reply(exc.status, {"error": {"message": str(exc), "type": exc.kind}}, extra)
        except Exception:
            log.exception("webhook: a request failed")
            return _reply(500, {"error": {"message": "internal error", "type": "internal"}})

    async def _hand_on(self, delivery: WebhookDelivery) -> WebhookReply:
        key = delivery.delivery_id
        state = self._seen.get(key)
        if state is not None:
            if not state:  # the first attempt is still being handed on: try again later
                raise WebhookRejected(503, "this delivery is in progress", "in_progress")
            self.duplicates += 1
            self._seen.move_to_end(key)  # a delivery still being retried stays remembered
            log.info("webhook: delivery %s again: handed on before", key)
            return _reply(200, {"ok": True, "duplicate": True, "delivery_id": key})
        self._seen[key] = False
        try:
            await asyncio.wait_for(self._dispatch_one(delivery), self.handler_timeout)
        except _Closed:
            self._seen.pop(key, None)
            raise WebhookRejected(503, "the receiver is closed", "unavailable") from None
        except asyncio.TimeoutError:
            self._seen.pop(key, None)
            log.warning("webhook: delivery %s not handed on within the timeout", key)
            raise WebhookRejected(503, "the delivery was not handled", "unavailable") from None
        except BaseException:
            self._seen.pop(key, None)  # the sender's retry is handed on again
            raise
        self._seen[key] = True
        while len(self._seen) > self.window:
            self._seen.popitem(last=False)
        self.handed += 1
        return _reply(200, {"ok": True, "delivery_id": key})

    async def _dispatch_one(self, delivery: WebhookDelivery) -> None:
        async with self._dispatch:  # one at a time: in arrival order
            if self._closed:
                raise _Closed
            if self.on_delivery is not None:
                result = self.on_delivery(delivery)
                if inspect.isawaitable(result):
                    await result
                return
            while len(self._items) >= self.queue_size:
                self._space.clear()
                await self._space.wait()
                if self._closed:
                    raise _Closed
            self._items.append(delivery)
            self._readable.set()

    # -- the queue ------------------------------------------------------------------------

    def __aiter__(self) -> WebhookReceiver:
        return self

    async def __anext__(self) -> WebhookDelivery:
        """The next delivery, in arrival order (only without ``on_delivery``)."""
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        delivery = self._items.popleft()
        self._space.set()
        return delivery

    def close(self) -> None:
        """Take no more deliveries (503, so the sender retries them elsewhere or later);
        ``async for`` ends once the queued ones are read."""
        self._closed = True
        self._readable.set()
        self._space.set()

    @property
    def closed(self) -> bool:
        return self._closed


def _reply(status: int, body: object, headers: Mapping[str, str] | None = None) -> WebhookReply:
    out = {"content-type": "application/json", "cache-control": "no-store"}
    if status == 503:
        out["retry-after"] = "1"
    out.update(headers or {})
    return WebhookReply(status, out, _json.encode(body))
