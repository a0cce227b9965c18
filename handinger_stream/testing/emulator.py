"""An emulator of the Handinger Workers API, on loopback, for offline work and tests.

It speaks the API of ``docs/protocol.md``: workers are created, run by a
deterministic simulated agent (:mod:`handinger_stream.testing.agent`), streamed as AI
SDK UI message chunks framed by transient ``data-worker`` snapshots, stored,
replayed, resumed with ``Last-Event-ID``, continued and subscribed to. Faults
are injected per request with the ``x-emulator-fault`` header (see
``docs/emulator.md``).

Beside it, today's generation (``api-current.md``): worker templates, tasks
and their turns (played by the same agent, streamed the same way),
schedules fired on the emulator's clock (:mod:`~handinger_stream.testing.clock`),
webhooks delivered with retries, structured output made from a template's
``outputSchema``. ``POST /api/workers`` serves both: a body with ``input``
starts a seed-generation run, one with template fields creates a template.

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
import functools
import hashlib
import hmac
import itertools
import math
import os
import random
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, TypeVar
from urllib.parse import quote

import anyio.to_thread
import msgspec
from aiohttp import BodyPartReader, web

from ..protocol.compact import COMPACT_HEADER, compact
from ..protocol.headers import SSE_HEADERS, WORKER_ID_HEADER
from ..protocol.partial_json import parse_partial_json
from ..types.worker import BUDGETS
from .agent import TurnPlan, plan_turn
from .cassette_format import Cassette
from .cassette_player import Player
from .clock import Clock, EmulatorClock, RealClock, iso
from .event_log import EventLog
from .loopback import LoopbackServer
from .refusals import Refusal
from .schedules import Schedule, Scheduler
from .structured_output import Unfit, structured_output
from .tasks import USER_ID, Task, Turn, check_task_id, check_trigger
from .templates import CREATE_FIELDS, Template, template_fields
from .webhook_delivery import Deliveries, check_url, execution_page

__all__ = [
    "FAULT_HEADER",
    "STOPPED_MID_TURN",
    "ClientOptions",
    "Clock",
    "Emulator",
    "EmulatorClock",
    "Fault",
    "RealClock",
    "make_app",
]

T = TypeVar("T")

FAULT_HEADER = "x-emulator-fault"
# The error a turn ends with when the emulator stops before the turn's end.
STOPPED_MID_TURN = "the emulator stopped before the turn's end"
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
    ``abort-after=N``, ``stall-after=N`` with ``stall-seconds=S``,
    ``status=CODE`` with ``status-times=K`` and ``retry-after=S``, ``no-ids=1``,
    ``history-gone=1``.
    """

    drop_after: int | None = None
    malformed_at: int | None = None
    error_after: int | None = None
    abort_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 0.0
    status: int | None = None
    status_times: int = 1
    retry_after: float | None = None
    no_ids: bool = False
    # 410 Gone, as a service answers a replay whose stored events it trimmed or lost.
    history_gone: bool = False

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
    """A seed-generation worker: its state, and the log of its events (the SSE ids)."""

    id: str
    created_at: int
    input: str
    budget: str
    status: str = "pending"
    running: bool = False
    error: str | None = None
    # Why the last turn stopped short (an abort chunk's reason), for the final snapshot.
    incomplete: dict[str, Any] | None = None
    turns: int = 0
    log: EventLog = field(default_factory=EventLog)
    output: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    # Workspace files: (media type, bytes made by the agent, or an upload's path on disk).
    file_bytes: dict[str, tuple[str, bytes | Path]] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    costs: dict[str, float] | None = None
    task: asyncio.Task[None] | None = None
    # Set to stop the turn at its next chunk, as aborted (today's tasks can be cancelled).
    stop_requested: bool = False

    @property
    def events(self) -> list[tuple[int, bytes]]:
        return self.log.events

    @property
    def turn_active(self) -> bool:
        return self.log.turn_active

    @turn_active.setter
    def turn_active(self, value: bool) -> None:
        self.log.turn_active = value

    def append(self, chunk: dict[str, Any]) -> None:
        """Store a chunk as the worker's next event (its sequence number is its SSE id)."""
        self.log.append(chunk)

    def turn_metadata(self) -> dict[str, Any]:
        """The metadata of each assistant message (the ``start`` chunk's ``messageMetadata``)."""
        return {"workerId": self.id, "createdAt": self.created_at}

    def finish_metadata(self, usage: dict[str, Any], costs: dict[str, float]) -> dict[str, Any]:
        """The ``finish`` chunk's ``messageMetadata``: the seed's usage and costs so far."""
        return {"usage": usage, "costs": costs}

    def files_path(self) -> str:
        """Where the workspace's files are served, below the base URL."""
        return f"/api/workers/{self.id}/files"

    def end_turn(self, player: _Turn) -> None:
        """Called as a turn ends, before its final snapshot: a seed worker has nothing to add."""

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
            "incomplete_details": self.incomplete,
            "output": self.output,
            "output_text": "".join(c["text"] for m in self.output for c in m["content"]),
            "sources": self.sources,
            "files": self.files,
            "messages": self.messages,
            "metadata": {"budget": self.budget},
            "costs": self.costs,
            "usage": self.usage,
        }


# What a turn is taken to last, per chunk it streamed (or token time a tool ran): a real
# model's 25 tokens per second. Deterministic, unlike the emulator's own pace.
_MS_PER_CHUNK = 40


@dataclass(kw_only=True)
class _TaskWorker(_Worker):
    """A task of today's API, as the Worker it shows: its own state (output, files, usage),
    its turns played into its template's event log, under the template's id."""

    record: Task = field(repr=False)  # the task (``task`` is the seed's asyncio task)
    template: Template = field(repr=False)
    clock: Clock = field(repr=False)
    seed: int
    structured_output: dict[str, Any] | None = None
    # The turn playing now, and the output schema it started with (a PATCH does not reach it).
    playing: Turn | None = None
    schema: dict[str, Any] | None = None

    def turn_metadata(self) -> dict[str, Any]:
        return {"workerId": self.id, "taskId": self.record.id, "createdAt": self.created_at}

    def finish_metadata(self, usage: dict[str, Any], costs: dict[str, float]) -> dict[str, Any]:
        # Today's Worker has no costs (api-current.md): a client folding the stream
        # must end with the Worker the JSON calls return.
        return {"usage": usage}

    def files_path(self) -> str:
        return f"/api/tasks/{self.record.id}/files"

    def end_turn(self, player: _Turn) -> None:
        """Write down what the turn became (status, tokens, credits, duration, structured
        output) before the final snapshot carries it."""
        turn = self.playing
        if turn is None:
            return
        self.stop_requested = False
        self.structured_output = None  # the Worker shows the latest turn's
        outcome, plan = player.outcome, player.plan
        turn.output_text = "".join(
            part["text"] for part in player.parts if part.get("type") == "text"
        )
        turn.input_tokens = int(plan.usage.get("inputTokens", 0))
        if outcome == "completed":
            turn.output_tokens = int(plan.usage.get("outputTokens", 0))
            turn.credits = max(1, math.ceil(plan.usage.get("credits", 0)))
        else:
            turn.output_tokens = player.deltas
            turn.credits = 1 if player.emitted else 0  # a turn that started costs something
        ran = player.emitted + sum(call.duration for call in plan.tools[: player.tools_done])
        turn.duration_ms = ran * _MS_PER_CHUNK
        if outcome == "completed" and self.schema is not None:
            outcome = self._structure(turn)
        turn.status = outcome
        turn.completed_at = self.clock.now()
        # The final snapshot is the next event: the turn's streams end with it.
        turn.last_event = len(self.log.events)

    def _structure(self, turn: Turn) -> str:
        """The turn's structured output, made from the schema it started with and validated;
        the turn's outcome (``error`` if none could be made)."""
        assert self.schema is not None
        key = f"{self.seed}\x00{self.record.id}\x00{turn.seq}"
        rng = random.Random(hashlib.sha256(key.encode()).digest())
        try:
            made = structured_output(self.schema, rng, turn.output_text)
        except (Unfit, Refusal) as exc:
            self.error = f"structured output does not fit the worker's outputSchema: {exc}"
            self.append({"type": "error", "errorText": self.error})
            return "error"
        self.structured_output = turn.structured_output = made
        return "completed"

    def to_json(self) -> dict[str, Any]:
        turns = self.record.turns
        finished = [t for t in turns if t.finished]
        return {
            "id": self.id,
            "object": "worker",
            "created_at": self.created_at,
            "status": self.status,
            "running": self.running,
            "error": self.error,
            "incomplete_details": self.incomplete,
            "output": self.output,
            "output_text": "".join(c["text"] for m in self.output for c in m["content"]),
            "sources": self.sources,
            "files": [self._sized(f) for f in self.files],
            "messages": self.messages,
            "metadata": {"budget": self.budget, "taskId": self.record.id},
            "structured_output": self.structured_output,
            "url": self.record.url,
            "usage": (
                {
                    "credits": sum(t.credits for t in finished),
                    "durationMs": sum(t.duration_ms for t in finished),
                }
                if finished
                else None
            ),
        }

    def _sized(self, file: dict[str, Any]) -> dict[str, Any]:
        entry = self.file_bytes.get(file["filename"])
        if entry is None:
            return file
        data = entry[1]
        try:
            size = len(data) if isinstance(data, bytes) else data.stat().st_size
        except OSError:
            return file
        return {**file, "size": size}


def _idle_worker(template: Template) -> dict[str, Any]:
    """The Worker of a template that has run no task yet."""
    return {
        "id": template.id,
        "object": "worker",
        "created_at": int(template.created_at),
        "status": "pending",
        "running": False,
        "error": None,
        "incomplete_details": None,
        "output": [],
        "output_text": "",
        "sources": [],
        "files": [],
        "messages": [],
        "metadata": {},
        "structured_output": None,
        "url": template.url,
        "usage": None,
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
        clock: Clock | None = None,
        webhook_timeout: float = 10.0,
        webhook_retries: int = 3,
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
        # Today's generation: templates, tasks (as the Worker each shows), their turns
        # playing, schedules on the clock, webhook deliveries.
        self.clock: Clock = clock if clock is not None else RealClock()
        self.templates: dict[str, Template] = {}
        self.tasks: dict[str, _TaskWorker] = {}
        self.turn_tasks: set[asyncio.Task[None]] = set()
        self.template_count = itertools.count(1)
        self.task_count = itertools.count(1)
        self.scheduler = Scheduler(self.clock, lambda schedule: None)  # run: set by make_app
        self.deliveries = Deliveries(self.clock, timeout=webhook_timeout, retries=webhook_retries)

    async def idle(self) -> None:
        """Return once no task turn is playing or waiting and no delivery is in flight."""
        while True:
            playing = [t for t in self.turn_tasks if not t.done()]
            if playing:
                await asyncio.wait(playing)
            elif self.deliveries.busy:
                await self.deliveries.idle()
            else:
                return

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
        url = f"{base}{worker.files_path()}/{quote(upload.name, safe='/')}"
        worker.files[:] = [f for f in worker.files if f["filename"] != upload.name]
        worker.files.append({"filename": upload.name, "mediaType": upload.media_type, "url": url})


_STORE_KEY: web.AppKey[_Store] = web.AppKey("handinger_emulator_store", _Store)
_CURRENT_KEY: web.AppKey[_Current] = web.AppKey("handinger_emulator_current")


def _error(status: int, message: str, kind: str, **headers: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "status": status}}
    return web.json_response(body, status=status, headers=headers or None)


_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "method_not_allowed",
    410: "gone_error",
    422: "invalid_request_error",
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
    except Refusal as exc:  # today's generation: a bad field named, an unknown id, no extra
        return _error(exc.status, exc.message, _KINDS.get(exc.status, "api_error"))
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
        if fault.history_gone:
            after = request.headers.get("last-event-id", "").strip()
            return _error(
                410,
                "injected fault: history gone: the events "
                + (f"after id {after}" if after else "of this worker")
                + " are no longer stored",
                "gone_error",
            )
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
    clock: Clock | None = None,
    webhook_timeout: float = 10.0,
    webhook_retries: int = 3,
) -> web.Application:
    """The emulator as an aiohttp application, to mount or run as you like.

    ``fault_queue`` holds ``x-emulator-fault`` specs applied, one each, to the
    next requests that ask for an event stream and carry no header of their own.
    With ``cassette``, every request is answered from the recording instead
    of by the simulated agent (at the recorded pace when ``realtime``).
    ``fleet``: each worker plays a turn of a realistic fleet (see ``docs/emulator.md``).
    ``clock``: the time schedules fire on (a :class:`RealClock` by default;
    an :class:`EmulatorClock` for tests); ``webhook_timeout`` (seconds per
    delivery attempt) and ``webhook_retries`` (attempts after the first).

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
        clock=clock,
        webhook_timeout=webhook_timeout,
        webhook_retries=webhook_retries,
    )
    if cassette is not None:
        return _replay_app(store, cassette, realtime=realtime)
    app = web.Application(middlewares=[_errors_middleware, _auth_middleware(store)])
    app[_STORE_KEY] = store
    handlers = _Handlers(store)
    current = _Current(store, handlers)
    store.scheduler.run = current.run_schedule
    app[_CURRENT_KEY] = current
    route = app.router
    route.add_post("/api/workers", handlers.create)
    route.add_get("/api/workers/{id}", handlers.retrieve)
    route.add_post("/api/workers/{id}", handlers.continue_)
    route.add_get("/api/workers/{id}/stream", handlers.subscribe)
    route.add_get("/api/workers/{id}/email", handlers.email)
    route.add_get("/api/workers/{id}/files/{path:.+}", handlers.file)
    # Today's generation, beside the seed's.
    route.add_patch("/api/workers/{id}", current.update_template)
    route.add_delete("/api/workers/{id}", current.delete_template)
    route.add_post("/api/workers/{id}/schedules", current.create_schedule)
    route.add_get("/api/workers/{id}/schedules", current.list_schedules)
    route.add_delete("/api/workers/{id}/schedules/{schedule}", current.cancel_schedule)
    route.add_get("/api/workers/{id}/webhook", current.webhook)
    route.add_put("/api/workers/{id}/webhook", current.set_webhook)
    route.add_delete("/api/workers/{id}/webhook", current.delete_webhook)
    route.add_post("/api/workers/{id}/webhook/regenerate-token", current.regenerate_token)
    route.add_get("/api/workers/{id}/webhook/executions", current.executions)
    route.add_post("/api/tasks", current.create_task)
    route.add_get("/api/tasks/{id}", current.retrieve_task)
    route.add_delete("/api/tasks/{id}", current.delete_task)
    route.add_get("/api/tasks/{id}/files/{path:.+}", current.task_file)
    # The emulator's own: what the API starts elsewhere (an e-mail, the web UI), and a look
    # at a template's tasks, for tests.
    route.add_post("/emulator/tasks", current.start_task)
    route.add_post("/emulator/tasks/{id}/cancel", current.cancel_task)
    route.add_get("/emulator/workers/{id}/tasks", current.list_tasks)
    app.on_startup.append(current.startup)
    app.on_shutdown.append(handlers.shutdown)
    app.on_shutdown.append(current.shutdown)
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
                "(only status= and history-gone= can)"
            )
        return await player.handle(request)

    app.router.add_route("*", "/{tail:.*}", replay)
    return app


class _Handlers:
    """The seed generation's routes (and ``POST /api/workers``, which tells the two apart)."""

    current: _Current  # today's routes, which some of these hand over to

    def __init__(self, store: _Store) -> None:
        self.store = store

    # -- helpers --------------------------------------------------------

    def _worker(self, request: web.Request) -> _Worker:
        worker = self.store.workers.get(request.match_info["id"])
        if worker is None:
            if request.match_info["id"] in self.store.templates:
                raise Refusal(
                    400,
                    f"worker {request.match_info['id']!r} is a worker template (today's API): "
                    "run it with POST /api/tasks, follow a task up with its taskId, "
                    "and fetch a task's files from its files[].url",
                )
            raise web.HTTPNotFound(reason=f"no worker {request.match_info['id']!r}")
        return worker

    async def _body(
        self, request: web.Request, extra: tuple[str, ...] = ()
    ) -> tuple[str, str, bool, list[_Upload], dict[str, Any]]:
        """``input``, ``budget``, ``stream``, the files, and the ``extra`` fields given."""
        if request.content_type == "multipart/form-data":
            return await self._form(request, extra)
        try:
            body = msgspec.json.decode(await request.read())
        except msgspec.DecodeError:
            raise web.HTTPBadRequest(
                reason="the body must be a JSON object, or multipart/form-data with files"
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(reason="the body must be a JSON object")
        text, budget, stream = self._fields(body)
        return text, budget, stream, [], {name: body[name] for name in extra if name in body}

    async def _form(
        self, request: web.Request, extra: tuple[str, ...] = ()
    ) -> tuple[str, str, bool, list[_Upload], dict[str, Any]]:
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
                elif part.name in ("input", "budget", "stream", *extra):
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
        return text, budget, stream, uploads, {n: fields[n] for n in extra if n in fields}

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
        if request.content_type != "multipart/form-data":
            # Today's API creates a template here; the body's fields tell which is meant.
            try:
                body = msgspec.json.decode(await request.read())
            except msgspec.DecodeError:
                body = None
            if isinstance(body, dict):
                named = [name for name in CREATE_FIELDS if name in body]
                if named and "input" in body:
                    raise Refusal(
                        400,
                        f"both input and {', '.join(named)}: a body with input starts a run "
                        f"(the seed's generation), one with {', '.join(named)} creates a worker "
                        "template (today's); send one or the other",
                    )
                if named:
                    return await self.current.create_template(request, body)
        text, budget, stream, uploads, _ = await self._body(request)
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
        return await self._stream(request, worker.id, worker.log, after=start - 1)

    async def continue_(self, request: web.Request) -> web.StreamResponse:
        worker = self._worker(request)
        text, budget, stream, uploads, _ = await self._body(request)
        if worker.turn_active:
            for upload in uploads:
                upload.path.unlink(missing_ok=True)
            raise web.HTTPConflict(reason="the worker is still running its current turn")
        _add_uploads(request, worker, uploads)
        start = self._start_turn(request, worker, text, budget)
        if not stream:
            return web.json_response(worker.to_json(), headers={WORKER_ID_HEADER: worker.id})
        return await self._stream(request, worker.id, worker.log, after=start - 1)

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["id"] in self.store.templates:
            return await self.current.retrieve_template(request)
        worker = self._worker(request)
        if request.query.get("stream", "").lower() not in ("1", "true"):
            return web.json_response(worker.to_json(), headers={WORKER_ID_HEADER: worker.id})
        return await self._stream(
            request, worker.id, worker.log, after=self._last_event_id(request)
        )

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        worker = self._worker(request)
        after = self._last_event_id(request)
        if after < 0:
            # A fresh subscriber gets the worker as it is, then what happens next.
            after = worker.events[-1][0] if worker.events else -1
            return await self._stream(
                request, worker.id, worker.log, after=after, lead=worker.snapshot_chunk
            )
        return await self._stream(request, worker.id, worker.log, after=after)

    async def email(self, request: web.Request) -> web.Response:
        template = self.store.templates.get(request.match_info["id"])
        if template is not None:  # today's API answers an object
            return web.json_response({"email": f"{template.id}@workers.handinger.invalid"})
        worker = self._worker(request)
        return web.json_response(f"{worker.id}@workers.handinger.invalid")

    async def file(self, request: web.Request) -> web.StreamResponse:
        return _file_response(self._worker(request), request.match_info["path"])

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
        first = _begin_turn(worker, text, budget, plan)
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
        worker_id: str,
        log: EventLog,
        *,
        after: int = -1,
        lead: Callable[[], dict[str, Any]] | None = None,
        turn: Turn | None = None,
    ) -> web.StreamResponse:
        """The events of ``log`` after ``after``, live until no turn is active, then ``[DONE]``.

        ``lead``: a snapshot sent first (a fresh subscriber's). ``turn``: only
        that turn's events, from its first (once it started) to its last.
        """
        fault = _fault(request)
        response = web.StreamResponse(headers={**SSE_HEADERS, WORKER_ID_HEADER: worker_id})
        store = self.store
        store.open_streams += 1
        store.peak_open_streams = max(store.peak_open_streams, store.open_streams)
        try:
            await response.prepare(request)
            try:
                await self._write_events(
                    request, response, log, fault, after=after, lead=lead, turn=turn
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
        log: EventLog,
        fault: Fault,
        *,
        after: int,
        lead: Callable[[], dict[str, Any]] | None,
        turn: Turn | None,
    ) -> None:
        if self.store.retry_ms is not None:
            await response.write(b"retry: %d\n\n" % self.store.retry_ms)
        sent = 0
        if turn is not None:
            while turn.first_event is None:  # waiting behind the template's earlier turns
                await self._wait(response, log)
            after = turn.first_event - 1
        pos = after + 1
        if lead is not None:
            snapshot = _encode(lead())
            await response.write(_frame(None if fault.no_ids else after, snapshot))
        while True:
            batch: list[bytes] = []
            end = _end(log, turn)
            events, pos = _replayed(request, fault, log, pos, end), end
            for seq, payload in events:
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
            if turn is not None:
                if turn.last_event is not None and pos > turn.last_event:
                    break
            elif not log.turn_active and pos >= len(log.events):
                break
            if pos < _end(log, turn):
                continue  # more came while the batch was written
            await self._wait(response, log)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()

    async def _wait(self, response: web.StreamResponse, log: EventLog) -> None:
        """Wait for the log's next change; a keep-alive comment after a silence."""
        waiter = log.changed
        try:
            await asyncio.wait_for(waiter.wait(), self.store.keepalive_interval)
        except asyncio.TimeoutError:
            await response.write(b": keep-alive\n\n")


class _Current:
    """The routes of today's generation: worker templates, tasks, schedules and webhooks."""

    def __init__(self, store: _Store, handlers: _Handlers) -> None:
        self.store, self.handlers = store, handlers
        handlers.current = self

    # -- lookups and bodies -----------------------------------------------

    def _template(self, request: web.Request) -> Template:
        name = request.match_info["id"]
        template = self.store.templates.get(name)
        if template is None:
            if name in self.store.workers:
                raise Refusal(
                    404,
                    f"no worker template {name!r}: it is a run of the seed's generation "
                    "(POST /api/workers with input), which has no schedules, webhook, "
                    "update or delete",
                )
            raise Refusal(404, f"no worker {name!r}")
        return template

    def _task(self, request: web.Request) -> _TaskWorker:
        worker = self.store.tasks.get(request.match_info["id"])
        if worker is None:
            raise Refusal(404, f"no task {request.match_info['id']!r}")
        return worker

    @staticmethod
    async def _json(request: web.Request) -> Any:
        try:
            return msgspec.json.decode(await request.read())
        except msgspec.DecodeError:
            raise Refusal(400, "the body must be a JSON object") from None

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    # -- worker templates -----------------------------------------------

    def _new_template(self, fields: dict[str, Any], base: str) -> Template:
        store = self.store
        key = f"{store.seed}:template:{next(store.template_count)}"
        name = f"wrk_{hashlib.sha256(key.encode()).hexdigest()[:20]}"
        template = Template.made(name, fields, base=base, now=store.clock.now())
        store.templates[template.id] = template
        return template

    async def create_template(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        fields = template_fields(body, update=False)
        return web.json_response(self._new_template(fields, self._base(request)).to_json())

    async def retrieve_template(self, request: web.Request) -> web.StreamResponse:
        """The Worker of the template's latest task; ``?stream=true``: its whole log, then live."""
        template = self._template(request)
        if request.query.get("stream", "").lower() not in ("1", "true"):
            latest = self.store.tasks.get(template.task_ids[-1]) if template.task_ids else None
            worker = latest.to_json() if latest is not None else _idle_worker(template)
            return web.json_response(worker, headers={WORKER_ID_HEADER: template.id})
        after = self.handlers._last_event_id(request)
        return await self.handlers._stream(request, template.id, template.log, after=after)

    async def update_template(self, request: web.Request) -> web.Response:
        template = self._template(request)
        fields = template_fields(await self._json(request), update=True)
        template.update(fields, now=self.store.clock.now())
        return web.json_response(template.to_json())

    async def delete_template(self, request: web.Request) -> web.Response:
        """Delete it and cancel its schedules; its tasks stay readable, and take no new turn."""
        template = self._template(request)
        self.store.scheduler.cancel_all(template.id)
        del self.store.templates[template.id]
        return web.json_response({"deleted": True})

    # -- tasks ------------------------------------------------------------

    async def create_task(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/tasks``: a new task, or a turn on ``taskId``; JSON or its turn's stream."""
        text, budget, stream, uploads, extra = await self.handlers._body(
            request, ("taskId", "workerId")
        )
        try:
            worker = self._task_for(
                self._base(request), text, extra.get("taskId"), extra.get("workerId"), "api"
            )
        except BaseException:
            for upload in uploads:
                upload.path.unlink(missing_ok=True)
            raise
        _add_uploads(request, worker, uploads)
        turn = self._start(worker, text, budget, _fault(request))
        if not stream:
            return web.json_response(worker.to_json(), headers={WORKER_ID_HEADER: worker.id})
        return await self.handlers._stream(request, worker.id, worker.log, turn=turn)

    def _task_for(
        self, base: str, text: str, task_id: Any, worker_id: Any, triggered_by: str
    ) -> _TaskWorker:
        """The task a turn goes to: the one named ``task_id``, or a new one on ``worker_id``'s
        template (a template made from the input when there is none)."""
        store = self.store
        if worker_id is not None and (
            not isinstance(worker_id, str) or not worker_id or len(worker_id) > 128
        ):
            raise Refusal(400, "workerId: a worker's id (a string of 1 to 128 characters)")
        if task_id is not None:
            task_id = check_task_id(task_id)
            existing = store.tasks.get(task_id)
            if existing is not None:
                if worker_id is not None and worker_id != existing.id:
                    raise Refusal(
                        400,
                        f"taskId: task {task_id!r} runs on worker {existing.id!r}, "
                        f"not {worker_id!r}",
                    )
                if existing.id not in store.templates:
                    raise Refusal(404, f"the worker {existing.id!r} of task {task_id!r} is deleted")
                if existing.record.archived:
                    raise Refusal(409, f"task {task_id!r} is archived")
                return existing
        if worker_id is None:
            template = self._new_template({"instructions": text[:20_000]}, base)
        else:
            found = store.templates.get(worker_id)
            if found is None:
                if worker_id in store.workers:
                    raise Refusal(
                        400,
                        f"workerId: {worker_id!r} is a run of the seed's generation, not a "
                        "worker template (create one with POST /api/workers {instructions})",
                    )
                raise Refusal(404, f"no worker {worker_id!r}")
            template = found
        return self._new_task(template, task_id, text, triggered_by)

    def _new_task(
        self, template: Template, task_id: str | None, text: str, triggered_by: str
    ) -> _TaskWorker:
        store = self.store
        while task_id is None or task_id in store.tasks:
            key = f"{store.seed}:task:{next(store.task_count)}"
            task_id = f"tsk_{hashlib.sha256(key.encode()).hexdigest()[:20]}"
        now = store.clock.now()
        task = Task(
            id=task_id,
            worker_id=template.id,
            title=_title(text),
            triggered_by=triggered_by,
            created_at=now,
            url=f"{template.url}/tasks/{task_id}",
            # A person started it through the API or the web UI; nobody did otherwise.
            created_by_user_id=USER_ID if triggered_by in ("api", "ui") else None,
        )
        worker = _TaskWorker(
            id=template.id,
            created_at=int(now),
            input=text,
            budget="standard",
            log=template.log,
            record=task,
            template=template,
            clock=store.clock,
            seed=store.seed,
        )
        store.tasks[task_id] = worker
        template.task_ids.append(task_id)
        return worker

    def _start(self, worker: _TaskWorker, text: str, budget: str, fault: Fault) -> Turn:
        """Add a turn to the task and play it in the background (after the template's
        earlier turns); the turn, still pending."""
        turn = worker.record.add_turn(text, budget, started_at=self.store.clock.now())
        job = asyncio.get_running_loop().create_task(self._play(worker, turn, fault))
        self.store.turn_tasks.add(job)
        job.add_done_callback(self.store.turn_tasks.discard)
        return turn

    async def _play(self, worker: _TaskWorker, turn: Turn, fault: Fault) -> None:
        store, template, log = self.store, worker.template, worker.log
        try:
            async with template.lock:
                # What the turn starts with stays its own: a PATCH meanwhile reaches the next.
                worker.schema = template.output_schema
                turn.status, turn.started_at = "running", store.clock.now()
                plan = plan_turn(
                    turn.input,
                    turn.budget,
                    seed=_mixed_seed(store.seed, template.instructions, worker.record.id),
                    turn=worker.turns,
                    fleet=worker.record.id if store.fleet else None,
                )
                worker.playing = turn
                turn.first_event = _begin_turn(worker, turn.input, turn.budget, plan)
                player = _Turn(
                    worker,
                    plan,
                    fault,
                    base=template.base,
                    tokens_per_second=store.tokens_per_second,
                )
                await player.run()
        finally:
            worker.playing = None
            if turn.last_event is None:
                # It never got to its end (the emulator is stopping, or it broke): its
                # streams end where the log is, rather than wait for it.
                if turn.first_event is None:
                    turn.first_event = len(log.events)
                turn.status, turn.last_event = "aborted", len(log.events) - 1
                log.notify()
        self._announce(worker, turn)

    def _announce(self, worker: _TaskWorker, turn: Turn) -> None:
        """Deliver the finished turn to the template's webhook, if it has one."""
        template = worker.template
        if template.webhook.url is None:
            return
        body = {
            "type": f"task.{turn.status}",
            "createdAt": iso(self.store.clock.now()),
            "task": worker.record.to_json(),
            "turn": turn.to_json(),
            "worker": worker.to_json(),
        }
        self.store.deliveries.deliver(
            template.webhook,
            _encode(body),
            worker_id=template.id,
            task_id=worker.record.id,
            task_title=worker.record.title,
            log=template.executions,
        )

    async def retrieve_task(self, request: web.Request) -> web.Response:
        return web.json_response(self._task(request).record.with_turns())

    async def delete_task(self, request: web.Request) -> web.Response:
        """Archive it: out of the task list, its turns and files kept."""
        self._task(request).record.archived = True
        return web.json_response({"archived": True})

    async def task_file(self, request: web.Request) -> web.StreamResponse:
        """A file of a task's workspace (what its ``files[].url`` points at)."""
        return _file_response(self._task(request), request.match_info["path"])

    # -- what the emulator starts itself ------------------------------------

    async def start_task(self, request: web.Request) -> web.Response:
        """``POST /emulator/tasks``: a task as an e-mail or the web UI would start it."""
        body = await self._json(request)
        if not isinstance(body, dict):
            raise Refusal(400, "the body must be a JSON object")
        worker = self.start(
            body.get("workerId"),
            body.get("input"),
            triggered_by=body.get("triggeredBy", "email"),
            budget=body.get("budget", "standard"),
            task_id=body.get("taskId"),
            base=self._base(request),
        )
        return web.json_response(worker.to_json(), headers={WORKER_ID_HEADER: worker.id})

    def start(
        self,
        worker_id: Any,
        text: Any,
        *,
        triggered_by: Any,
        budget: Any,
        task_id: Any = None,
        base: str = "",
    ) -> _TaskWorker:
        """Start a task on a template, as ``triggered_by`` would (checked like a request)."""
        if not isinstance(worker_id, str) or worker_id not in self.store.templates:
            raise Refusal(404, f"no worker {worker_id!r}")
        if not isinstance(text, str) or not text:
            raise Refusal(400, "input: a string of at least 1 character is required")
        if budget not in BUDGETS:
            raise Refusal(400, f"budget: must be one of {', '.join(BUDGETS)}")
        trigger = check_trigger(triggered_by)
        worker = self._task_for(base, text, task_id, worker_id, trigger)
        self._start(worker, text, budget, Fault())
        return worker

    async def cancel_task(self, request: web.Request) -> web.Response:
        """``POST /emulator/tasks/{id}/cancel``: its running turn stops, as ``aborted``."""
        self.cancel(self._task(request))
        return web.json_response({"cancelled": True})

    def cancel(self, worker: _TaskWorker) -> None:
        if all(turn.finished for turn in worker.record.turns):
            raise Refusal(409, f"task {worker.record.id!r} has no turn running or waiting")
        worker.stop_requested = True

    async def list_tasks(self, request: web.Request) -> web.Response:
        """``GET /emulator/workers/{id}/tasks``: a template's tasks, oldest first (archived too)."""
        template = self._template(request)
        tasks = [self.store.tasks[name].record for name in template.task_ids]
        return web.json_response(
            {
                "workerId": template.id,
                "tasks": [{**task.to_json(), "archived": task.archived} for task in tasks],
            }
        )

    def run_schedule(self, schedule: Schedule) -> None:
        """A schedule's run falls due: a task on its template, ``triggeredBy: "schedule"``."""
        template = self.store.templates.get(schedule.worker_id)
        if template is None:
            self.store.scheduler.cancel(schedule.id)
            return
        worker = self._new_task(template, None, schedule.input, "schedule")
        self._start(worker, schedule.input, schedule.budget, Fault())

    # -- schedules --------------------------------------------------------

    async def create_schedule(self, request: web.Request) -> web.Response:
        template = self._template(request)
        schedule = self.store.scheduler.add(template.id, await self._json(request))
        return web.json_response(schedule.to_json())

    async def list_schedules(self, request: web.Request) -> web.Response:
        template = self._template(request)
        schedules = [s.to_json() for s in self.store.scheduler.of(template.id)]
        return web.json_response({"workerId": template.id, "schedules": schedules})

    async def cancel_schedule(self, request: web.Request) -> web.Response:
        template = self._template(request)
        name = request.match_info["schedule"]
        schedule = self.store.scheduler.schedules.get(name)
        if schedule is None or schedule.worker_id != template.id:
            raise Refusal(404, f"no schedule {name!r} on worker {template.id!r}")
        self.store.scheduler.cancel(name)
        return web.json_response({"cancelled": True})

    # -- webhooks ---------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        return web.json_response(self._template(request).webhook.to_json())

    async def set_webhook(self, request: web.Request) -> web.Response:
        """``PUT``: a token is made the first time a URL is set; ``url: null`` removes it."""
        template = self._template(request)
        body = await self._json(request)
        if not isinstance(body, dict) or "url" not in body:
            raise Refusal(400, "url: required (a URL, or null to remove the webhook)")
        template.webhook.set_url(check_url(body["url"]))
        return web.json_response(template.webhook.to_json())

    async def delete_webhook(self, request: web.Request) -> web.Response:
        template = self._template(request)
        template.webhook.set_url(None)
        return web.json_response(template.webhook.to_json())

    async def regenerate_token(self, request: web.Request) -> web.Response:
        template = self._template(request)
        template.webhook.regenerate_token()
        return web.json_response(template.webhook.to_json())

    async def executions(self, request: web.Request) -> web.Response:
        template = self._template(request)
        return web.json_response(execution_page(template.executions, request.query.get("page")))

    # -- the app's life ---------------------------------------------------

    async def startup(self, app: web.Application) -> None:
        clock = self.store.clock
        if isinstance(clock, EmulatorClock):
            clock.bind(asyncio.get_running_loop())  # advance() from any thread fires here

    async def shutdown(self, app: web.Application) -> None:
        store = self.store
        store.scheduler.cancel_all()
        playing = list(store.turn_tasks)
        for job in playing:
            job.cancel()
        await asyncio.gather(*playing, return_exceptions=True)
        await store.deliveries.close()


def _title(text: str) -> str:
    """A task's title: its first input, on one line, cut to 80 characters."""
    line = " ".join(text.split())
    return line if len(line) <= 80 else line[:79].rstrip() + "…"


def _mixed_seed(seed: int, instructions: str, task_id: str) -> int:
    """The agent's seed for a task's turn: the emulator's, the template's instructions and the
    task, so that instructions shape the answer and each task has answers of its own."""
    digest = hashlib.sha256(f"{seed}\x00{instructions}\x00{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _file_response(worker: _Worker, path: str) -> web.StreamResponse:
    entry = worker.file_bytes.get(path)
    if entry is None:
        raise web.HTTPNotFound(reason=f"no file {path!r}")
    media_type, data = entry
    if isinstance(data, Path):
        # An upload, from disk (sendfile where it can): never whole in memory.
        return web.FileResponse(data, headers={"content-type": media_type})
    return web.Response(body=data, content_type=media_type.split(";")[0])


def _replayed(
    request: web.Request, fault: Fault, log: EventLog, start: int, end: int
) -> list[tuple[int, bytes]]:
    """The log's events ``start`` to ``end`` as a stream writes them: compacted when the
    request asks (``x-handinger-compact: 1``, an emulator extension: docs/emulator.md)."""
    events = log.events[start:end]
    # Without ids a resume skips by count, which compaction would shift: never then.
    if len(events) < 2 or fault.no_ids or request.headers.get(COMPACT_HEADER) != "1":
        return events
    merged = compact([(payload, str(seq)) for seq, payload in events])
    return [(int(str(seq)), payload) for payload, seq in merged]


def _end(log: EventLog, turn: Turn | None) -> int:
    """One past the last event a stream may write now (a turn's stream stops at its last)."""
    if turn is not None and turn.last_event is not None:
        return min(len(log.events), turn.last_event + 1)
    return len(log.events)


def _begin_turn(worker: _Worker, text: str, budget: str, plan: TurnPlan) -> int:
    """Make ``worker`` pending on a new turn, with its user message and the turn's first
    snapshot; return the sequence number of that snapshot."""
    worker.turns += 1
    worker.status, worker.running, worker.error = "pending", False, None
    worker.incomplete = None
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
    return first


class _Cut(Exception):
    """The turn reached its stop point: an injected ``error-after``, or the fleet plan's failure."""


class _Abort(Exception):
    """The turn is stopped: an injected ``abort-after``, or its task was cancelled."""


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
        self.deltas = 0  # text and reasoning tokens streamed
        self.tools_done = 0  # the plan's further tool calls that ran
        self.outcome = "completed"  # or "error", "aborted" (tasks.TURN_OUTCOMES)
        self.message: dict[str, Any] = {"id": plan.message_id, "role": "assistant", "parts": []}
        self.parts: list[dict[str, Any]] = self.message["parts"]
        self.metadata = worker.turn_metadata()
        # One stop point: the injected fault's, or the fleet plan's failure if earlier
        # (the injected fault wins a tie).
        self.stop_at, self.failure = fault.error_after, "injected fault: the agent failed"
        if plan.fail_after is not None and (self.stop_at is None or plan.fail_after < self.stop_at):
            self.stop_at, self.failure = plan.fail_after, plan.failure
        self.abort_at = fault.abort_after

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
            self.outcome = "error"
            worker.error = self.failure
            worker.append({"type": "error", "errorText": worker.error})
        except _Abort:  # an abort fault, or a cancelled task: the AI SDK's abort chunk says so
            self.outcome = "aborted"
            worker.incomplete = {"reason": "aborted"}  # what the abort chunk folds into
            worker.append({"type": "abort"})
        except asyncio.CancelledError:
            # The emulator is stopping mid-turn: the answer so far is not an answer. The
            # turn fails out loud (an error chunk, the Worker's error set), so that no
            # reader takes a cut-off text for a finished one; then up.
            self.outcome = "error"
            worker.error = STOPPED_MID_TURN
            worker.append({"type": "error", "errorText": worker.error})
            raise
        finally:
            worker.status, worker.running, worker.turn_active = "completed", False, False
            if self.parts or "metadata" in self.message:
                worker.messages.append(self.message)
            worker.end_turn(self)
            worker.append(worker.snapshot_chunk())

    async def emit(
        self,
        chunk: dict[str, Any],
        *,
        pace: bool = False,
        fold: Callable[[], None] | None = None,
    ) -> None:
        """Append one chunk (then wait a token's time, with ``pace``); :class:`_Cut` at the stop.

        ``fold``: what the chunk changes in the Worker, done as it is appended, before
        any wait, so that a turn stopped during the wait ends with its text whole.
        """
        if self.stop_at is not None and self.emitted >= self.stop_at:
            raise _Cut
        if (self.abort_at is not None and self.emitted >= self.abort_at) or (
            self.worker.stop_requested
        ):
            raise _Abort
        self.worker.append(chunk)
        self.emitted += 1
        if fold is not None:
            fold()
        if pace and self.delay:
            await asyncio.sleep(self.delay)
        elif self.emitted % 64 == 0:
            await asyncio.sleep(0)  # unpaced: let the readers in now and then

    def _add(self, part: dict[str, Any], token: str, content: dict[str, Any] | None = None) -> None:
        """A streamed token added to its part (and to the Worker's output, for text)."""
        self.deltas += 1
        part["text"] += token
        if content is not None:
            content["text"] += token

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
            await self.emit(
                {"type": "reasoning-delta", "id": rid, "delta": token},
                pace=True,
                fold=functools.partial(self._add, reasoning, token),
            )
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
            self.tools_done += 1

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
            await self.emit(
                {"type": "text-delta", "id": tid, "delta": token},
                pace=True,
                fold=functools.partial(self._add, text_part, token, content),
            )
        await self.emit({"type": "text-end", "id": tid})
        text_part["state"] = "done"

    async def _attach(self) -> None:
        """The file the plan writes, if any: kept in the workspace, and linked."""
        file, worker = self.plan.file, self.worker
        if file is None:
            return
        path, media_type = file["filename"], file["mediaType"]
        url = f"{self.base}{worker.files_path()}/{path}"
        worker.file_bytes[path] = (media_type, file["content"].encode())
        await self.emit({"type": "file", "url": url, "mediaType": media_type})
        self.parts.append({"type": "file", "mediaType": media_type, "url": url})
        worker.files.append({"filename": path, "mediaType": media_type, "url": url})

    async def _finish(self) -> None:
        worker = self.worker
        await self.emit({"type": "finish-step"})
        usage = _add_usage(worker.usage, self.plan.usage)
        costs = _add_costs(worker.costs, self.plan.costs)
        metadata = worker.finish_metadata(usage, costs)
        await self.emit({"type": "finish", "finishReason": "stop", "messageMetadata": metadata})
        worker.usage, worker.costs = usage, costs
        self.message["metadata"] = {**self.metadata, **metadata}


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

    Today's generation: ``clock`` is the time schedules fire on (``emu.clock``;
    a :class:`RealClock` by default, an :class:`EmulatorClock` to move by
    hand in tests); ``webhook_timeout`` bounds each delivery attempt (seconds)
    and ``webhook_retries`` counts the attempts after the first.

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
        clock: Clock | None = None,
        webhook_timeout: float = 10.0,
        webhook_retries: int = 3,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.clock: Clock = clock if clock is not None else RealClock()
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
            "clock": self.clock,
            "webhook_timeout": webhook_timeout,
            "webhook_retries": webhook_retries,
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

    # -- today's generation: what the API starts elsewhere, and waiting for it ---------

    def start_task(
        self,
        worker_id: str,
        input: str,
        *,
        triggered_by: str = "email",
        budget: str = "standard",
        task_id: str | None = None,
    ) -> str:
        """Start a task on a worker template as an e-mail (or ``"ui"``, the web UI) would;
        its id. A bad argument raises :class:`~handinger_stream.testing.refusals.Refusal`.

        Call it from the emulator's loop (``async with``) or from any thread
        when it runs in one of its own (``with``).

        >>> task_id = emu.start_task(template_id, "Reply to this e-mail")  # doctest: +SKIP
        """
        current = self._current()
        base = self.base_url
        return self._on_loop(
            lambda: (
                current.start(
                    worker_id,
                    input,
                    triggered_by=triggered_by,
                    budget=budget,
                    task_id=task_id,
                    base=base,
                ).record.id
            )
        )

    def cancel_task(self, task_id: str) -> None:
        """Stop the task's running turn (and any waiting one) at its next chunk: ``aborted``."""
        current = self._current()

        def cancel() -> None:
            worker = current.store.tasks.get(task_id)
            if worker is None:
                raise Refusal(404, f"no task {task_id!r}")
            current.cancel(worker)

        self._on_loop(cancel)

    async def idle(self, within: float = 10.0) -> None:
        """Wait until no task turn is playing or waiting and no webhook delivery is in flight
        (``TimeoutError`` after ``within`` seconds). Fired schedules start turns: advance
        the clock, then wait here for what it started."""
        store = self._store()
        if store is None:
            return

        async def settle() -> None:
            await asyncio.wait_for(store.idle(), within)

        if self._thread is not None:
            await anyio.to_thread.run_sync(self._thread.call, settle)
        else:
            await settle()

    def _current(self) -> _Current:
        runner = self._runner
        current = runner.app.get(_CURRENT_KEY) if runner is not None and runner.app else None
        if current is None:
            raise RuntimeError("the emulator is not running (or replays a cassette)")
        return current

    def _on_loop(self, call: Callable[[], T]) -> T:
        """``call()`` on the emulator's loop: through its thread when it has one."""
        thread = self._thread
        if thread is not None and not thread.in_loop_thread():

            async def run() -> T:
                return call()

            return thread.call(run)
        return call()

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
