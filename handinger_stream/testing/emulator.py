"""An emulator of the Handinger Workers API, on loopback, for offline work and tests.

It speaks the API of ``docs/protocol.md``: workers are created, run by a
deterministic simulated agent (:mod:`handinger_stream.testing.agent`), streamed as AI
SDK UI message chunks framed by transient ``data-worker`` snapshots, stored,
replayed, resumed with ``Last-Event-ID``, continued and subscribed to. Faults
are injected per request with the ``x-emulator-fault`` header (see
``docs/emulator.md``).

>>> async def demo():  # doctest: +SKIP
...     async with Emulator(api_key="test") as emu:
...         async with AsyncHandinger(api_key="test", base_url=emu.base_url) as client:
...             stream = await client.workers.create(input="Hi", stream=True)
...             return await stream.get_final_worker()

Sync code, trio code and pytest fixtures use it from a background thread:

>>> with Emulator() as emu:  # doctest: +SKIP
...     print(emu.base_url)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

import msgspec
from aiohttp import BodyPartReader, web

from ..protocol.headers import SSE_HEADERS, WORKER_ID_HEADER
from ..protocol.partial_json import parse_partial_json
from ..types.worker import BUDGETS
from .agent import TurnPlan, plan_turn
from .cassette_format import Cassette
from .cassette_player import Player
from .loopback import LoopbackServer

__all__ = ["FAULT_HEADER", "ClientOptions", "Emulator", "Fault", "make_app"]

FAULT_HEADER = "x-emulator-fault"
_encode = msgspec.json.Encoder().encode
_SPOOL_PIECE = 256 * 1024  # bytes an upload is written to disk in


class ClientOptions(TypedDict):
    """``AsyncHandinger(**options)`` keywords that reach a local server (typed for mypy)."""

    api_key: str
    base_url: str


@dataclass
class Fault:
    """Faults asked for by one request's ``x-emulator-fault`` header.

    The header is a ``;``-separated list of ``name=value``:
    ``drop-after=N``, ``malformed-at=N``, ``error-after=N``,
    ``stall-after=N`` with ``stall-seconds=S``, ``status=CODE`` with
    ``status-times=K`` and ``retry-after=S``, ``no-ids=1``.
    """

    drop_after: int | None = None
    malformed_at: int | None = None
    error_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 0.0
    status: int | None = None
    status_times: int = 1
    retry_after: float | None = None
    no_ids: bool = False

    @classmethod
    def parse(cls, header: str | None) -> Fault:
        fault = cls()
        if not header:
            return fault
        for item in header.split(";"):
            name, _, value = item.strip().partition("=")
            attr = name.strip().replace("-", "_")
            if not attr:
                continue
            if attr not in cls.__dataclass_fields__:
                raise ValueError(f"unknown fault {name!r}")
            current = getattr(fault, attr)
            try:
                if isinstance(current, bool):
                    setattr(fault, attr, value.strip() not in ("", "0", "false"))
                elif attr in ("stall_seconds", "retry_after"):
                    setattr(fault, attr, float(value))
                else:
                    setattr(fault, attr, int(value))
            except ValueError:
                raise ValueError(f"fault {name!r} needs a number, got {value!r}") from None
        return fault


_FAULT_KEY: web.RequestKey[Fault] = web.RequestKey("handinger_emulator_fault", Fault)


@dataclass
class _Worker:
    id: str
    created_at: int
    input: str
    budget: str
    status: str = "pending"
    running: bool = False
    error: str | None = None
    turns: int = 0
    # Stored events: (sequence number, JSON payload). Sequence numbers are the SSE ids.
    events: list[tuple[int, bytes]] = field(default_factory=list)
    output: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    # Workspace files: (media type, bytes made by the agent, or an upload's path on disk).
    file_bytes: dict[str, tuple[str, bytes | Path]] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    costs: dict[str, float] | None = None
    turn_active: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def append(self, chunk: dict[str, Any]) -> None:
        """Store a chunk as the worker's next event (its sequence number is its SSE id)."""
        self.events.append((len(self.events), _encode(chunk)))
        self.notify()

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def snapshot_chunk(self) -> dict[str, Any]:
        """The transient ``data-worker`` chunk that carries the worker as it is now."""
        return {"type": "data-worker", "data": self.to_json(), "transient": True}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "worker",
            "created_at": self.created_at,
            "status": self.status,
            "running": self.running,
            "error": self.error,
            "incomplete_details": None,
            "output": self.output,
            "output_text": "".join(c["text"] for m in self.output for c in m["content"]),
            "sources": self.sources,
            "files": self.files,
            "messages": self.messages,
            "metadata": {"budget": self.budget},
            "costs": self.costs,
            "usage": self.usage,
        }


class _Store:
    def __init__(
        self,
        *,
        api_key: str | None,
        tokens_per_second: float,
        seed: int,
        keepalive_interval: float,
        retry_ms: int | None,
        fault_queue: deque[str] | None = None,
        fleet: bool = False,
    ) -> None:
        self.api_key = api_key
        self.fleet = fleet
        # Event streams being written now, and the most at once (Emulator.open_streams).
        self.open_streams = 0
        self.peak_open_streams = 0
        # Faults queued by Emulator.inject_fault, for the next streaming requests.
        self.fault_queue: deque[str] = fault_queue if fault_queue is not None else deque()
        self.tokens_per_second = tokens_per_second
        self.seed = seed
        self.keepalive_interval = keepalive_interval
        self.retry_ms = retry_ms
        self.workers: dict[str, _Worker] = {}
        self.fault_counts: dict[str, int] = {}
        self.created = 0
        self.uploads = itertools.count()
        self.requests = itertools.count(1)
        self._workspace: Path | None = None

    def workspace(self) -> Path:
        """The folder uploads are spooled to (made on the first upload)."""
        if self._workspace is None:
            self._workspace = Path(tempfile.mkdtemp(prefix="handinger-emulator-"))
        return self._workspace

    def remove_workspace(self) -> None:
        workspace, self._workspace = self._workspace, None
        if workspace is not None:
            shutil.rmtree(workspace, ignore_errors=True)


@dataclass(frozen=True)
class _Upload:
    """A file of a multipart create or continue, spooled to disk."""

    name: str
    media_type: str
    path: Path
    size: int


def _add_uploads(request: web.Request, worker: _Worker, uploads: list[_Upload]) -> None:
    """Put uploaded files in the worker's workspace, before its turn starts."""
    base = f"{request.scheme}://{request.host}"
    for upload in uploads:
        old = worker.file_bytes.get(upload.name)
        if old is not None and isinstance(old[1], Path):
            old[1].unlink(missing_ok=True)
        worker.file_bytes[upload.name] = (upload.media_type, upload.path)
        url = f"{base}/api/workers/{worker.id}/files/{quote(upload.name, safe='/')}"
        worker.files[:] = [f for f in worker.files if f["filename"] != upload.name]
        worker.files.append({"filename": upload.name, "mediaType": upload.media_type, "url": url})


_STORE_KEY: web.AppKey[_Store] = web.AppKey("handinger_emulator_store", _Store)


def _error(status: int, message: str, kind: str, **headers: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "status": status}}
    return web.json_response(body, status=status, headers=headers or None)


_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "method_not_allowed",
    429: "rate_limit_error",
}


@web.middleware
async def _errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # Every failure is a JSON body, never aiohttp's HTML page or a traceback.
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason, _KINDS.get(exc.status, "api_error"))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        return _error(500, "internal emulator error", "api_error")


def _auth_middleware(store: _Store) -> Any:
    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _error(
                401, "missing API key: send 'Authorization: Bearer <key>'", "authentication_error"
            )
        if store.api_key is not None and not hmac.compare_digest(key.strip(), store.api_key):
            return _error(401, "invalid API key", "authentication_error")
        spec = request.headers.get(FAULT_HEADER)
        queued = False
        if (
            spec is None
            and store.fault_queue
            and "text/event-stream" in request.headers.get("accept", "")
        ):
            try:
                spec, queued = store.fault_queue.popleft(), True
            except IndexError:
                pass
        try:
            fault = Fault.parse(spec)
        except ValueError as exc:
            return _error(400, f"bad {FAULT_HEADER} header: {exc}", "invalid_request_error")
        request[_FAULT_KEY] = fault
        if fault.status is not None:
            key_ = spec or ""
            seen = 0 if queued else store.fault_counts.get(key_, 0)
            if seen < fault.status_times:
                store.fault_counts[key_] = seen + 1
                extra = {}
                if fault.retry_after is not None:
                    extra["Retry-After"] = f"{fault.retry_after:g}"
                return _error(
                    fault.status,
                    f"injected fault: HTTP {fault.status}",
                    _KINDS.get(fault.status, "api_error"),
                    **extra,
                )
        return await handler(request)

    return auth


def make_app(
    *,
    api_key: str | None = None,
    tokens_per_second: float = 0,
    seed: int = 0,
    keepalive_interval: float = 15.0,
    retry_ms: int | None = None,
    fault_queue: deque[str] | None = None,
    cassette: Cassette | None = None,
    realtime: bool = False,
    fleet: bool = False,
) -> web.Application:
    """The emulator as an aiohttp application, to mount or run as you like.

    ``fault_queue`` holds ``x-emulator-fault`` specs applied, one each, to the
    next requests that ask for an event stream and carry no header of their own.
    With ``cassette``, every request is answered from the recording instead
    of by the simulated agent (at the recorded pace when ``realtime``).
    ``fleet``: each worker plays a turn of a realistic fleet (see ``docs/emulator.md``).

    >>> app = make_app(api_key="k", tokens_per_second=0)
    """
    store = _Store(
        api_key=api_key,
        tokens_per_second=tokens_per_second,
        seed=seed,
        keepalive_interval=keepalive_interval,
        retry_ms=retry_ms,
        fault_queue=fault_queue,
        fleet=fleet,
    )
    if cassette is not None:
        return _replay_app(store, cassette, realtime=realtime)
    app = web.Application(middlewares=[_errors_middleware, _auth_middleware(store)])
    app[_STORE_KEY] = store
    handlers = _Handlers(store)
    app.router.add_post("/api/workers", handlers.create)
    app.router.add_get("/api/workers/{id}", handlers.retrieve)
    app.router.add_post("/api/workers/{id}", handlers.continue_)
    app.router.add_get("/api/workers/{id}/stream", handlers.subscribe)
    app.router.add_get("/api/workers/{id}/email", handlers.email)
    app.router.add_get("/api/workers/{id}/files/{path:.+}", handlers.file)
    app.on_shutdown.append(handlers.shutdown)
    app.on_cleanup.append(handlers.cleanup)
    app.on_response_prepare.append(_request_id(store))
    return app


def _request_id(store: _Store) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """Every answer names its request, as services do: errors then carry ``request_id``."""

    async def name(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("x-request-id", f"req_{next(store.requests):06d}")

    return name


def _replay_app(store: _Store, cassette: Cassette, *, realtime: bool) -> web.Application:
    app = web.Application(
        middlewares=[_errors_middleware, _auth_middleware(store)],
        client_max_size=256 * 1024 * 1024,
    )
    player = Player(cassette, realtime=realtime)

    async def replay(request: web.Request) -> web.StreamResponse:
        fault = _fault(request)
        # A recording has no events to cut or break; only an injected status can apply.
        unusable = [
            name
            for name, value in (
                ("drop-after", fault.drop_after),
                ("malformed-at", fault.malformed_at),
                ("error-after", fault.error_after),
                ("stall-after", fault.stall_after),
                ("no-ids", fault.no_ids or None),
            )
            if value is not None
        ]
        if unusable:
            raise web.HTTPBadRequest(
                reason=f"fault {', '.join(unusable)} cannot apply to a cassette replay "
                "(only status= can)"
            )
        return await player.handle(request)

    app.router.add_route("*", "/{tail:.*}", replay)
    return app


class _Handlers:
    def __init__(self, store: _Store) -> None:
        self.store = store

    # -- helpers --------------------------------------------------------

    def _worker(self, request: web.Request) -> _Worker:
        worker = self.store.workers.get(request.match_info["id"])
        if worker is None:
            raise web.HTTPNotFound(reason=f"no worker {request.match_info['id']!r}")
        return worker

    async def _body(self, request: web.Request) -> tuple[str, str, bool, list[_Upload]]:
        if request.content_type == "multipart/form-data":
            return await self._form(request)
        try:
            body = msgspec.json.decode(await request.read())
        except msgspec.DecodeError:
            raise web.HTTPBadRequest(
                reason="the body must be a JSON object, or multipart/form-data with files"
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(reason="the body must be a JSON object")
        text, budget, stream = self._fields(body)
        return text, budget, stream, []

    async def _form(self, request: web.Request) -> tuple[str, str, bool, list[_Upload]]:
        """A multipart body: text fields, and files spooled to the workspace as they arrive."""
        fields: dict[str, Any] = {}
        uploads: list[_Upload] = []
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise web.HTTPBadRequest(reason="nested multipart bodies are not accepted")
                if part.filename is not None:
                    uploads.append(await self._spool(part))
                elif part.name in ("input", "budget", "stream"):
                    fields[part.name] = await part.text()
                else:
                    raise web.HTTPBadRequest(reason=f"unknown form field {part.name!r}")
            if "stream" in fields:
                value = fields["stream"].strip().lower()
                if value not in ("true", "false"):
                    raise web.HTTPBadRequest(reason="stream: must be true or false")
                fields["stream"] = value == "true"
            text, budget, stream = self._fields(fields)
        except BaseException as exc:
            for upload in uploads:
                upload.path.unlink(missing_ok=True)
            if isinstance(exc, ConnectionResetError):
                # The client went away mid-upload: its right; nobody is left to answer.
                raise asyncio.CancelledError from None
            if isinstance(exc, ValueError):
                raise web.HTTPBadRequest(reason=f"malformed multipart body: {exc}") from None
            raise
        return text, budget, stream, uploads

    async def _spool(self, part: BodyPartReader) -> _Upload:
        """Write one uploaded file to disk, a piece at a time: never whole in memory."""
        name = (part.filename or "").lstrip("/")
        if not name or any(seg in ("", ".", "..") for seg in name.split("/")):
            raise web.HTTPBadRequest(reason=f"bad file name {part.filename!r}")
        media_type = part.headers.get("content-type", "application/octet-stream")
        path = self.store.workspace() / f"upload-{next(self.store.uploads)}"
        size = 0
        with path.open("wb") as out:
            while piece := await part.read_chunk(_SPOOL_PIECE):
                size += len(piece)
                await asyncio.to_thread(out.write, piece)
        return _Upload(name, media_type, path, size)

    @staticmethod
    def _fields(body: dict[str, Any]) -> tuple[str, str, bool]:
        text = body.get("input")
        if not isinstance(text, str) or len(text) < 1:
            raise web.HTTPBadRequest(reason="input: a string of at least 1 character is required")
        budget = body.get("budget", "standard")
        if budget not in BUDGETS:
            raise web.HTTPBadRequest(reason=f"budget: must be one of {', '.join(BUDGETS)}")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise web.HTTPBadRequest(reason="stream: must be a boolean")
        return text, budget, stream

    # -- endpoints ------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        text, budget, stream, uploads = await self._body(request)
        store = self.store
        store.created += 1
        digest = hashlib.sha256(f"{store.seed}:{store.created}".encode()).hexdigest()
        worker = _Worker(
            id=f"wrk_{digest[:20]}", created_at=int(time.time()), input=text, budget=budget
        )
        store.workers[worker.id] = worker
        _add_uploads(request, worker, uploads)
        start = self._start_turn(request, worker, text, budget)
        if not stream:
            return web.json_response(worker.to_json(), headers={WORKER_ID_HEADER: worker.id})
        return await self._stream(request, worker, after=start - 1, live=True)

    async def continue_(self, request: web.Request) -> web.StreamResponse:
        worker = self._worker(request)
        text, budget, stream, uploads = await self._body(request)
        if worker.turn_active:
            for upload in uploads:
                upload.path.unlink(missing_ok=True)
            raise web.HTTPConflict(reason="the worker is still running its current turn")
        _add_uploads(request, worker, uploads)
        start = self._start_turn(request, worker, text, budget)
        if not stream:
            return web.json_response(worker.to_json(), headers={WORKER_ID_HEADER: worker.id})
        return await self._stream(request, worker, after=start - 1, live=True)

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        worker = self._worker(request)
        if request.query.get("stream", "").lower() not in ("1", "true"):
            return web.json_response(worker.to_json(), headers={WORKER_ID_HEADER: worker.id})
        return await self._stream(request, worker, after=self._last_event_id(request), live=True)

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        worker = self._worker(request)
        after = self._last_event_id(request)
        if after < 0:
            # A fresh subscriber gets the worker as it is, then what happens next.
            after = worker.events[-1][0] if worker.events else -1
            return await self._stream(request, worker, after=after, live=True, lead=True)
        return await self._stream(request, worker, after=after, live=True)

    async def email(self, request: web.Request) -> web.Response:
        worker = self._worker(request)
        return web.json_response(f"{worker.id}@workers.handinger.invalid")

    async def file(self, request: web.Request) -> web.StreamResponse:
        worker = self._worker(request)
        entry = worker.file_bytes.get(request.match_info["path"])
        if entry is None:
            raise web.HTTPNotFound(reason=f"no file {request.match_info['path']!r}")
        media_type, data = entry
        if isinstance(data, Path):
            # An upload, from disk (sendfile where it can): never whole in memory.
            return web.FileResponse(data, headers={"content-type": media_type})
        return web.Response(body=data, content_type=media_type.split(";")[0])

    async def shutdown(self, app: web.Application) -> None:
        tasks = [w.task for w in self.store.workers.values() if w.task and not w.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def cleanup(self, app: web.Application) -> None:
        self.store.remove_workspace()

    @staticmethod
    def _last_event_id(request: web.Request) -> int:
        value = request.headers.get("last-event-id", "").strip()
        return int(value) if value.isdigit() else -1

    # -- the agent ------------------------------------------------------

    def _start_turn(self, request: web.Request, worker: _Worker, text: str, budget: str) -> int:
        """Start a turn in the background; return the sequence number of its first event."""
        fault = _fault(request)
        plan = plan_turn(
            text,
            budget,
            seed=self.store.seed,
            turn=worker.turns,
            fleet=worker.id if self.store.fleet else None,
        )
        worker.turns += 1
        worker.status, worker.running, worker.error = "pending", False, None
        worker.budget = budget
        worker.messages.append(
            {
                "id": f"user_{plan.message_id[4:]}",
                "role": "user",
                "parts": [{"type": "text", "text": text}],
            }
        )
        worker.turn_active = True
        first = len(worker.events)
        worker.append(worker.snapshot_chunk())
        turn = _Turn(
            worker,
            plan,
            fault,
            base=f"{request.scheme}://{request.host}",
            tokens_per_second=self.store.tokens_per_second,
        )
        worker.task = asyncio.get_running_loop().create_task(turn.run())
        return first

    # -- streaming responses ---------------------------------------------

    async def _stream(
        self,
        request: web.Request,
        worker: _Worker,
        *,
        after: int,
        live: bool,
        lead: bool = False,
    ) -> web.StreamResponse:
        fault = _fault(request)
        response = web.StreamResponse(headers={**SSE_HEADERS, WORKER_ID_HEADER: worker.id})
        store = self.store
        store.open_streams += 1
        store.peak_open_streams = max(store.peak_open_streams, store.open_streams)
        try:
            await response.prepare(request)
            try:
                await self._write_events(
                    request, response, worker, fault, after=after, live=live, lead=lead
                )
            except ConnectionError:
                pass  # The client went away: that is its right, not our error.
        finally:
            store.open_streams -= 1
        return response

    async def _write_events(
        self,
        request: web.Request,
        response: web.StreamResponse,
        worker: _Worker,
        fault: Fault,
        *,
        after: int,
        live: bool,
        lead: bool,
    ) -> None:
        if self.store.retry_ms is not None:
            await response.write(b"retry: %d\n\n" % self.store.retry_ms)
        sent = 0
        pos = after + 1
        if lead:
            snapshot = _encode(worker.snapshot_chunk())
            await response.write(_frame(None if fault.no_ids else after, snapshot))
        while True:
            batch: list[bytes] = []
            while pos < len(worker.events):
                seq, payload = worker.events[pos]
                pos += 1
                if fault.drop_after is not None and sent >= fault.drop_after:
                    if batch:
                        await response.write(b"".join(batch))
                    _drop(request)
                    return
                if (
                    fault.stall_after is not None
                    and sent == fault.stall_after
                    and fault.stall_seconds
                ):
                    if batch:
                        await response.write(b"".join(batch))
                        batch = []
                    stall, fault.stall_seconds = fault.stall_seconds, 0.0
                    await asyncio.sleep(stall)
                if fault.malformed_at is not None and sent == fault.malformed_at:
                    payload = b'{"type": "text-delta", "id": oops'
                batch.append(_frame(None if fault.no_ids else seq, payload))
                sent += 1
            if batch:
                await response.write(b"".join(batch))
            if not live or (not worker.turn_active and pos >= len(worker.events)):
                break
            waiter = worker.changed
            try:
                await asyncio.wait_for(waiter.wait(), self.store.keepalive_interval)
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()


class _Cut(Exception):
    """The turn reached its stop point: an injected ``error-after``, or the fleet plan's failure."""


class _Turn:
    """One turn of the agent, played: each chunk of its plan appended to the worker's events
    (paced, for the tokens), and the assistant message folded alongside as an AI SDK
    client folds it. One step per part of the message, in the order they stream."""

    def __init__(
        self,
        worker: _Worker,
        plan: TurnPlan,
        fault: Fault,
        *,
        base: str,
        tokens_per_second: float,
    ) -> None:
        self.worker, self.plan, self.base = worker, plan, base
        self.tokens_per_second = tokens_per_second
        self.delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self.number = worker.turns - 1  # in the ids of its parts
        self.emitted = 0
        self.message: dict[str, Any] = {"id": plan.message_id, "role": "assistant", "parts": []}
        self.parts: list[dict[str, Any]] = self.message["parts"]
        self.metadata = {"workerId": worker.id, "createdAt": worker.created_at}
        # One stop point: the injected fault's, or the fleet plan's failure if earlier
        # (the injected fault wins a tie).
        self.stop_at, self.failure = fault.error_after, "injected fault: the agent failed"
        if plan.fail_after is not None and (self.stop_at is None or plan.fail_after < self.stop_at):
            self.stop_at, self.failure = plan.fail_after, plan.failure

    async def run(self) -> None:
        """Play the turn; end it (an error chunk if it was cut) with the worker's snapshot."""
        worker = self.worker
        try:
            worker.status, worker.running = "running", True
            for step in (
                self._start,
                self._reason,
                self._search,
                self._cite,
                self._use_tools,
                self._end_first_step,
                self._answer,
                self._attach,
                self._finish,
            ):
                await step()
        except _Cut:
            worker.error = self.failure
            worker.append({"type": "error", "errorText": worker.error})
        finally:
            worker.status, worker.running, worker.turn_active = "completed", False, False
            if self.parts or "metadata" in self.message:
                worker.messages.append(self.message)
            worker.append(worker.snapshot_chunk())

    async def emit(self, chunk: dict[str, Any], *, pace: bool = False) -> None:
        """Append one chunk (then wait a token's time, with ``pace``); :class:`_Cut` at the stop."""
        if self.stop_at is not None and self.emitted >= self.stop_at:
            raise _Cut
        self.worker.append(chunk)
        self.emitted += 1
        if pace and self.delay:
            await asyncio.sleep(self.delay)
        elif self.emitted % 64 == 0:
            await asyncio.sleep(0)  # unpaced: let the readers in now and then

    async def _start(self) -> None:
        plan = self.plan
        await self.emit(
            {"type": "start", "messageId": plan.message_id, "messageMetadata": self.metadata}
        )
        self.message["metadata"] = self.metadata
        await self.emit({"type": "start-step"})
        self.parts.append({"type": "step-start"})

    async def _reason(self) -> None:
        rid = f"reasoning-{self.number}"
        await self.emit({"type": "reasoning-start", "id": rid})
        reasoning = {"type": "reasoning", "id": rid, "text": "", "state": "streaming"}
        self.parts.append(reasoning)
        for token in self.plan.reasoning_tokens:
            await self.emit({"type": "reasoning-delta", "id": rid, "delta": token}, pace=True)
            reasoning["text"] += token
        await self.emit({"type": "reasoning-end", "id": rid})
        reasoning["state"] = "done"

    async def _search(self) -> None:
        """The web search every turn makes: its input streamed in two pieces, then its results."""
        plan = self.plan
        call = {"toolCallId": plan.tool_call_id, "toolName": "web_search"}
        tool: dict[str, Any] = {
            "type": "tool-web_search",
            "toolCallId": plan.tool_call_id,
            "state": "input-streaming",
        }
        await self.emit({"type": "tool-input-start", **call})
        self.parts.append(tool)
        args = _encode({"query": plan.query}).decode()
        half = len(args) // 2
        for sent in (args[:half], args):
            delta = sent[len(tool.get("rawInput", "")) :]
            await self.emit(
                {
                    "type": "tool-input-delta",
                    "toolCallId": plan.tool_call_id,
                    "inputTextDelta": delta,
                },
                pace=True,
            )
            # While it streams, the SDK shows the input parsed so far and the raw text.
            tool["rawInput"] = sent
            shown = parse_partial_json(sent)
            if shown is not msgspec.UNSET:
                tool["input"] = shown
        del tool["rawInput"]
        tool["input"] = {"query": plan.query}
        await self.emit({"type": "tool-input-available", **call, "input": tool["input"]})
        tool["state"] = "input-available"
        output = {"results": plan.search_results}
        await self.emit(
            {"type": "tool-output-available", "toolCallId": plan.tool_call_id, "output": output}
        )
        tool["state"], tool["output"] = "output-available", output

    async def _cite(self) -> None:
        for source in self.plan.sources:
            await self.emit({"type": "source-url", **source})
            self.parts.append({"type": "source-url", **source})
            self.worker.sources.append(
                {
                    "id": source["sourceId"],
                    "title": source["title"],
                    "type": "url",
                    "url": source["url"],
                }
            )

    async def _use_tools(self) -> None:
        """A fleet worker's further tool calls, each running for a while (silent meanwhile)."""
        for call in self.plan.tools:
            ids = {"toolCallId": call.call_id, "toolName": call.name}
            tool: dict[str, Any] = {"type": f"tool-{call.name}", "toolCallId": call.call_id}
            await self.emit({"type": "tool-input-start", **ids})
            self.parts.append({**tool, "state": "input-streaming"})
            args = _encode(call.input).decode()
            delta = {"type": "tool-input-delta", "toolCallId": call.call_id}
            await self.emit({**delta, "inputTextDelta": args}, pace=True)
            await self.emit({"type": "tool-input-available", **ids, "input": call.input})
            self.parts[-1] = {**tool, "state": "input-available", "input": call.input}
            if self.tokens_per_second > 0:
                await asyncio.sleep(call.duration / self.tokens_per_second)
            await self.emit(
                {"type": "tool-output-available", "toolCallId": call.call_id, "output": call.output}
            )
            self.parts[-1] = {**self.parts[-1], "state": "output-available", "output": call.output}

    async def _end_first_step(self) -> None:
        """The research step ends; the usage so far is told (the reasoning's tokens)."""
        plan = self.plan
        await self.emit({"type": "finish-step"})
        partial = {**plan.usage, "outputTokens": len(plan.reasoning_tokens), "steps": 1}
        partial["totalTokens"] = partial["inputTokens"] + partial["outputTokens"]
        await self.emit({"type": "message-metadata", "messageMetadata": {"usage": partial}})
        self.message["metadata"] = {**self.metadata, "usage": partial}

    async def _answer(self) -> None:
        await self.emit({"type": "start-step"})
        self.parts.append({"type": "step-start"})
        tid = f"text-{self.number}"
        await self.emit({"type": "text-start", "id": tid})
        text_part = {"type": "text", "text": "", "state": "streaming"}
        self.parts.append(text_part)
        content = {"type": "output_text", "text": ""}
        self.worker.output.append(
            {
                "id": tid,
                "content": [content],
                "role": "assistant",
                "status": "completed",
                "type": "message",
            }
        )
        for token in self.plan.answer_tokens:
            await self.emit({"type": "text-delta", "id": tid, "delta": token}, pace=True)
            text_part["text"] += token
            content["text"] += token
        await self.emit({"type": "text-end", "id": tid})
        text_part["state"] = "done"

    async def _attach(self) -> None:
        """The file the plan writes, if any: kept in the workspace, and linked."""
        file, worker = self.plan.file, self.worker
        if file is None:
            return
        path, media_type = file["filename"], file["mediaType"]
        url = f"{self.base}/api/workers/{worker.id}/files/{path}"
        worker.file_bytes[path] = (media_type, file["content"].encode())
        await self.emit({"type": "file", "url": url, "mediaType": media_type})
        self.parts.append({"type": "file", "mediaType": media_type, "url": url})
        worker.files.append({"filename": path, "mediaType": media_type, "url": url})

    async def _finish(self) -> None:
        worker = self.worker
        await self.emit({"type": "finish-step"})
        usage = _add_usage(worker.usage, self.plan.usage)
        costs = _add_costs(worker.costs, self.plan.costs)
        await self.emit(
            {
                "type": "finish",
                "finishReason": "stop",
                "messageMetadata": {"usage": usage, "costs": costs},
            }
        )
        worker.usage, worker.costs = usage, costs
        self.message["metadata"] = {**self.metadata, "usage": usage, "costs": costs}


def _fault(request: web.Request) -> Fault:
    # Parsed (from the header, or the queue) by the auth middleware.
    fault: Fault = request.get(_FAULT_KEY) or Fault()
    return fault


def _frame(seq: int | None, payload: bytes) -> bytes:
    if seq is None:
        return b"data: " + payload + b"\n\n"
    return b"id: %d\ndata: %s\n\n" % (seq, payload)


def _drop(request: web.Request) -> None:
    # Cut the connection mid-body, as a proxy or a flaky network would.
    transport = request.transport
    if transport is not None:
        transport.abort()


def _add_usage(total: dict[str, Any] | None, turn: dict[str, Any]) -> dict[str, Any]:
    if total is None:
        return dict(turn)
    out = {k: total.get(k, 0) + v for k, v in turn.items()}
    out["costUsd"] = round(out["costUsd"], 6)
    out["credits"] = round(out["credits"], 4)
    return out


def _add_costs(total: dict[str, float] | None, turn: dict[str, float]) -> dict[str, float]:
    if total is None:
        return dict(turn)
    return {k: round(total.get(k, 0) + v, 6) for k, v in turn.items()}


class Emulator(LoopbackServer):
    """Run the emulator on an ephemeral loopback port.

    ``async with`` runs it on the current asyncio loop (under trio, where
    aiohttp cannot run, in a background thread); ``with`` runs it in a
    background thread (sync code, trio, session-wide fixtures).

    The defaults: ``api_key=None`` (any non-empty bearer key is accepted;
    set one to require exactly it), ``tokens_per_second=0`` (the agent writes
    as fast as it can; ~25 looks like a real model), ``seed=0`` (the agent
    is deterministic for a given input and seed), ``keepalive_interval=15``
    (seconds of silence before a ``: keep-alive`` comment), ``port=0`` (an
    ephemeral port), ``retry_ms=None`` (no SSE ``retry:`` field).
    ``cassette`` (a path or a :class:`~handinger_stream.cassette.Cassette`)
    serves a recording instead of the simulated agent, as fast as possible
    or, with ``realtime=True``, at the recorded pace. ``fleet=True``: every
    worker plays a turn of a realistic fleet (varied lengths, tool calls
    that run a while, a few failures; see ``docs/emulator.md``).

    >>> async def main():  # doctest: +SKIP
    ...     async with Emulator(api_key="k", tokens_per_second=0, seed=0) as emu:
    ...         print(emu.base_url)
    """

    _kind, _usage = "emulator", "Emulator()"

    def __init__(
        self,
        api_key: str | None = None,
        tokens_per_second: float = 0,
        seed: int = 0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keepalive_interval: float = 15.0,
        retry_ms: int | None = None,
        cassette: Cassette | str | os.PathLike[str] | None = None,
        realtime: bool = False,
        fleet: bool = False,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        if cassette is not None and not isinstance(cassette, Cassette):
            cassette = Cassette.load(cassette)  # a bad file fails here, not at the first request
        self.cassette = cassette
        self._options: dict[str, Any] = {
            "api_key": api_key,
            "tokens_per_second": tokens_per_second,
            "seed": seed,
            "keepalive_interval": keepalive_interval,
            "retry_ms": retry_ms,
            "cassette": cassette,
            "realtime": realtime,
            "fleet": fleet,
        }
        self._faults: deque[str] = deque()

    def __repr__(self) -> str:
        return f"Emulator(base_url={self.base_url if self.port else None!r})"

    @property
    def open_streams(self) -> int:
        """Event streams the emulator is writing right now (0 when it is not running)."""
        store = self._store()
        return store.open_streams if store is not None else 0

    @property
    def peak_open_streams(self) -> int:
        """The most event streams it wrote at once since it started."""
        store = self._store()
        return store.peak_open_streams if store is not None else 0

    def _store(self) -> _Store | None:
        runner = self._runner
        if runner is None or runner.app is None:
            return None
        return runner.app.get(_STORE_KEY)

    def inject_fault(self, spec: str, times: int = 1) -> None:
        """Give the next ``times`` streaming requests this fault (``x-emulator-fault`` syntax).

        Queued faults apply in order, one per request that asks for an event
        stream without a fault header of its own: a client's automatic resume
        can be made to fail, or to succeed, on cue.

        >>> emu = Emulator()
        >>> emu.inject_fault("drop-after=10")
        >>> emu.inject_fault("status=503", times=2)
        """
        Fault.parse(spec)  # fail here, not in the server, on a bad spec
        self._faults.extend([spec] * times)

    def clear_faults(self) -> None:
        """Forget faults queued by :meth:`inject_fault` and not yet used."""
        self._faults.clear()

    def client_options(self) -> ClientOptions:
        """Keyword arguments for :class:`~handinger_stream.AsyncHandinger` to talk to it.

        >>> Emulator(api_key="k", port=8787).client_options()
        {'api_key': 'k', 'base_url': 'http://127.0.0.1:8787'}
        """
        return {"api_key": self.api_key or "emulator", "base_url": self.base_url}

    async def _app(self) -> web.Application:
        return make_app(**self._options, fault_queue=self._faults)

    async def serve_forever(self) -> None:
        """Start, then serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
