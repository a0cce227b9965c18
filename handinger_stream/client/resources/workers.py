"""``client.workers``: create, retrieve, continue and watch workers.

:class:`Workers` for :class:`~handinger_stream.AsyncHandinger`, and
:class:`SyncWorkers`, the same calls for :class:`~handinger_stream.Handinger`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, overload

import msgspec

from ...errors import APIResponseValidationError, InvalidRequestError, excerpt
from ...protocol.wire import decode_worker
from ...types.worker import Budget, EmailAddress, Worker
from ...types.worker_template import DeleteWorkerResponse, Visibility, WorkerTemplate
from ..base import AsyncAPIClient, Files, Headers, _replay_path
from ..download import FileDownload
from ..paths import file_path, path_segment
from ..stream import Checkpoint, WorkerStream
from ..sync_base import SyncAPIClient, SyncFileDownload, SyncWorkerStream, _Blocking, _HostedWatch
from ..watch import Watch, WatchEvent
from ._bodies import (
    NO_ROUTE,
    NOT_GIVEN,
    NotGiven,
    decode_body,
    given_fields,
    input_body,
    opened,
    today_only,
    with_hint,
)
from .schedules import Schedules, SyncSchedules
from .webhooks import SyncWebhooks, Webhooks

if TYPE_CHECKING:
    from ..telemetry import Telemetry

__all__ = ["SyncWorkers", "Workers"]


def _segment(worker_id: str) -> str:
    """A worker id as one path segment (see :func:`path_segment`)."""
    return path_segment(worker_id, "worker_id")


def _checked_last_event_id(last_event_id: str | None) -> str | None:
    """A ``Last-Event-ID`` the caller gave: a string of one line (it is sent as a header)."""
    if last_event_id is None:
        return None
    if not isinstance(last_event_id, str) or not (
        last_event_id.isascii() and last_event_id.isprintable()
    ):
        raise InvalidRequestError(
            f"last_event_id must be a string of printable ASCII; got {last_event_id!r}"
        )
    return last_event_id


class Workers:
    """``client.workers``: create, retrieve, continue and watch workers.

    Every call takes ``extra_headers`` (sent with it, and with any resume of its stream).
    """

    def __init__(self, client: AsyncAPIClient) -> None:
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

    @overload
    async def create(
        self,
        *,
        instructions: str | None = None,
        output_schema: dict[str, Any] | None = None,
        prompt: str | None = None,
        summary: str | None = None,
        title: str | None = None,
        visibility: Visibility | None = None,
        extra_headers: Headers = None,
    ) -> WorkerTemplate: ...

    async def create(
        self,
        *,
        input: str | None = None,
        budget: Budget | None = None,
        stream: bool = False,
        files: Files = None,
        instructions: str | None = None,
        output_schema: dict[str, Any] | None = None,
        prompt: str | None = None,
        summary: str | None = None,
        title: str | None = None,
        visibility: Visibility | None = None,
        extra_headers: Headers = None,
    ) -> Worker | WorkerStream | WorkerTemplate:
        """Start a run on ``input`` (the seed's generation), or make a worker template.

        With ``input``: a worker that runs at once; ``files`` (paths, or ``(name,
        bytes | file object[, media_type])``) are uploaded into its workspace
        first, streamed from disk as ``multipart/form-data``. Without it: a
        reusable template (today's generation) from ``instructions`` (or a
        ``prompt`` describing them), an optional ``output_schema`` (JSON Schema
        draft-07), ``summary``, ``title``, ``visibility``; run it with
        ``client.tasks.create(worker_id=...)``. Both at once is refused.

        >>> stream = await client.workers.create(input="Hi", stream=True)  # doctest: +SKIP
        >>> worker = await client.workers.create(input="Sum it", files=["q3.csv"])  # doctest: +SKIP
        >>> template = await client.workers.create(instructions="Speak Catalan")  # doctest: +SKIP
        """
        template = _template_fields(instructions, output_schema, prompt, summary, title, visibility)
        if input is None:
            _refuse_run_options(template, budget, stream, files)
            return await with_hint(
                self._create_template(template, extra_headers),
                frozenset({400, 422}),
                "a server of the seed's generation makes workers only from input=...; "
                "worker templates need today's API",
            )
        if template:
            raise InvalidRequestError(
                "workers.create takes input= (a run) or template fields (a worker template), "
                f"not both: got input= and {', '.join(f'{k}=' for k in template)}"
            )
        body = input_body(input, budget)
        # The create stream begins at the worker's first event, so it can resume by position.
        return await self._send("POST", "/api/workers", body, stream, files, extra_headers, True)

    async def _create_template(self, fields: dict[str, Any], headers: Headers) -> WorkerTemplate:
        body = given_fields(_TEMPLATE_WIRE, **fields)
        raw = await self._client._json("POST", "/api/workers", json=body, headers=headers)
        return decode_body(raw, WorkerTemplate)

    async def update(
        self,
        worker_id: str,
        *,
        instructions: str | NotGiven = NOT_GIVEN,
        output_schema: dict[str, Any] | NotGiven | None = NOT_GIVEN,
        summary: str | NotGiven = NOT_GIVEN,
        title: str | NotGiven = NOT_GIVEN,
        visibility: Visibility | NotGiven = NOT_GIVEN,
        extra_headers: Headers = None,
    ) -> WorkerTemplate:
        """Change a worker template (``output_schema=None`` clears its schema).

        Tasks already running keep the instructions they started with.

        >>> await client.workers.update("wrk_1", title="Analyst")  # doctest: +SKIP
        """
        body = given_fields(
            _TEMPLATE_WIRE,
            instructions=instructions,
            output_schema=output_schema,
            summary=summary,
            title=title,
            visibility=visibility,
        )
        _check_template(body)
        path = f"/api/workers/{_segment(worker_id)}"
        call = self._client._json("PATCH", path, json=body, headers=extra_headers)
        raw = await today_only(call, "worker templates to update")
        return decode_body(raw, WorkerTemplate)

    async def delete(
        self, worker_id: str, *, extra_headers: Headers = None
    ) -> DeleteWorkerResponse:
        """Delete a worker template."""
        path = f"/api/workers/{_segment(worker_id)}"
        raw = await today_only(
            self._client._json("DELETE", path, headers=extra_headers), "worker templates to delete"
        )
        return decode_body(raw, DeleteWorkerResponse)

    @cached_property
    def schedules(self) -> Schedules:
        """A template's schedules: tasks it runs later or again."""
        return Schedules(self._client)

    @cached_property
    def webhooks(self) -> Webhooks:
        """A template's webhook: where finished tasks are announced."""
        return Webhooks(self._client)

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
        body = input_body(input, budget)
        path = f"/api/workers/{_segment(worker_id)}"
        return await with_hint(
            self._send("POST", path, body, stream, files, extra_headers, False),
            NO_ROUTE,
            "if this server speaks today's API, which has no continue: add a turn with "
            "client.tasks.create(task_id=..., input=...)",
        )

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
            return await opened(
                client._open_stream(
                    method,
                    path,
                    json={**body, "stream": True},
                    files=files,
                    headers=headers,
                    from_start=from_start,
                )
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
            return await opened(
                client._open_stream(
                    "GET",
                    _replay_path(worker_id),
                    headers=extra_headers,
                    from_start=True,
                    worker_id=worker_id,
                )
            )
        path = f"/api/workers/{_segment(worker_id)}"
        return decode_worker(await client._json("GET", path, headers=extra_headers))

    async def subscribe(
        self, worker_id: str, *, last_event_id: str | None = None, extra_headers: Headers = None
    ) -> WorkerStream:
        """The worker's live updates (``GET /api/workers/{id}/stream``)."""
        return await with_hint(
            opened(
                self._client._open_stream(
                    "GET",
                    f"/api/workers/{_segment(worker_id)}/stream",
                    headers=extra_headers,
                    last_event_id=_checked_last_event_id(last_event_id),
                    worker_id=worker_id,
                )
            ),
            NO_ROUTE,
            "if this server speaks today's API, which has no subscribe: follow a worker "
            "with client.workers.retrieve(worker_id, stream=True)",
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

    async def retrieve_email(
        self, worker_id: str, *, extra_headers: Headers = None
    ) -> EmailAddress:
        """The worker's inbound email address (a ``str``; ``.email`` as in the official SDK)."""
        raw = await self._client._json(
            "GET",
            f"/api/workers/{_segment(worker_id)}/email",
            headers=extra_headers,
        )
        try:
            value = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return EmailAddress(raw.decode("utf-8", "replace").strip())
        if isinstance(value, dict):
            value = value.get("email", value.get("address"))
        if not isinstance(value, str):
            raise APIResponseValidationError(
                f"the response is not an email address: {excerpt(raw)!r}", status_code=200
            )
        return EmailAddress(value)

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
        where = f"/api/workers/{_segment(worker_id)}/files/{file_path(path)}"
        return FileDownload(self._client, where, extra_headers)

    def watch(
        self,
        workers: Iterable[str | WorkerStream] = (),
        *,
        tasks: Iterable[str] = (),
        follow: bool = False,
        max_concurrency: int | None = None,
        buffer: int = 64,
        telemetry: bool | Telemetry | None = None,
    ) -> Watch:
        """Many workers' events merged in arrival order (see ``docs/monitoring.md``).

        ``workers``: worker ids (the seed's runs or today's templates) and open
        streams; ``tasks``: task ids, each shown through its template's stream
        (an id in ``workers`` that is no worker is tried as a task too).
        ``follow``: a template's stream is opened again when it closes, so that
        each task started later shows up (until the watch is left).

        >>> async with client.workers.watch(ids, max_concurrency=50) as watch:  # doctest: +SKIP
        ...     async for item in watch:
        ...         print(item.worker_id, item.task_id, type(item.event).__name__)
        """
        from ...types.task import Task, TaskWithTurns  # today's API, only for watches

        # Telemetry is the streams' own (AsyncHandinger(telemetry=...)); a watch asking
        # for something else opens its streams through a client that records so.
        client = self._client
        if telemetry is not None:
            client = client.with_options(telemetry=telemetry)

        async def open_stream(worker_id: str, last_event_id: str | None = None) -> WorkerStream:
            # After last_event_id: a followed template's stream, opened again.
            return await opened(
                client._open_stream(
                    "GET",
                    _replay_path(worker_id),
                    last_event_id=last_event_id,
                    from_start=last_event_id is None,
                    worker_id=worker_id,
                )
            )

        async def find_task(task_id: str) -> Task:
            path = f"/api/tasks/{path_segment(task_id, 'task_id')}"
            return decode_body(await client._json("GET", path), TaskWithTurns).task

        return Watch(
            open_stream,
            workers,
            tasks=tasks,
            find_task=find_task,
            follow=follow,
            max_concurrency=max_concurrency,
            buffer=buffer,
        )


class SyncWorkers:
    """``client.workers`` for sync code: the same calls as :class:`Workers`, without ``await``."""

    def __init__(self, client: SyncAPIClient, workers: Workers) -> None:
        self._client = client
        self._workers = workers

    @overload
    def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[False] = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker: ...

    @overload
    def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[True],
        files: Files = None,
        extra_headers: Headers = None,
    ) -> SyncWorkerStream: ...

    @overload
    def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream: ...

    @overload
    def create(
        self,
        *,
        instructions: str | None = None,
        output_schema: dict[str, Any] | None = None,
        prompt: str | None = None,
        summary: str | None = None,
        title: str | None = None,
        visibility: Visibility | None = None,
        extra_headers: Headers = None,
    ) -> WorkerTemplate: ...

    def create(
        self,
        *,
        input: str | None = None,
        budget: Budget | None = None,
        stream: bool = False,
        files: Files = None,
        instructions: str | None = None,
        output_schema: dict[str, Any] | None = None,
        prompt: str | None = None,
        summary: str | None = None,
        title: str | None = None,
        visibility: Visibility | None = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream | WorkerTemplate:
        """Start a run on ``input``, or make a worker template (see :meth:`Workers.create`).

        >>> worker = client.workers.create(input="Hi")  # doctest: +SKIP
        """
        client = self._client
        made = client._call(
            self._workers.create,
            input=input,
            budget=budget,
            stream=stream,
            files=files,
            instructions=instructions,
            output_schema=output_schema,
            prompt=prompt,
            summary=summary,
            title=title,
            visibility=visibility,
            extra_headers=extra_headers,
        )
        return made if isinstance(made, WorkerTemplate) else client._stream(made)

    def update(
        self,
        worker_id: str,
        *,
        instructions: str | NotGiven = NOT_GIVEN,
        output_schema: dict[str, Any] | NotGiven | None = NOT_GIVEN,
        summary: str | NotGiven = NOT_GIVEN,
        title: str | NotGiven = NOT_GIVEN,
        visibility: Visibility | NotGiven = NOT_GIVEN,
        extra_headers: Headers = None,
    ) -> WorkerTemplate:
        """Change a worker template (``output_schema=None`` clears its schema)."""
        return self._client._call(
            self._workers.update,
            worker_id,
            instructions=instructions,
            output_schema=output_schema,
            summary=summary,
            title=title,
            visibility=visibility,
            extra_headers=extra_headers,
        )

    def delete(self, worker_id: str, *, extra_headers: Headers = None) -> DeleteWorkerResponse:
        """Delete a worker template."""
        return self._client._call(self._workers.delete, worker_id, extra_headers=extra_headers)

    @cached_property
    def schedules(self) -> SyncSchedules:
        """A template's schedules: tasks it runs later or again."""
        return SyncSchedules(self._client, self._workers.schedules)

    @cached_property
    def webhooks(self) -> SyncWebhooks:
        """A template's webhook: where finished tasks are announced."""
        return SyncWebhooks(self._client, self._workers.webhooks)

    @overload
    def continue_(
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
    def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[True],
        files: Files = None,
        extra_headers: Headers = None,
    ) -> SyncWorkerStream: ...

    @overload
    def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream: ...

    def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream:
        """Add a turn to a worker."""
        client = self._client
        return client._stream(
            client._call(
                self._workers.continue_,
                worker_id,
                input=input,
                budget=budget,
                stream=stream,
                files=files,
                extra_headers=extra_headers,
            )
        )

    @overload
    def retrieve(
        self, worker_id: str, *, stream: Literal[False] = False, extra_headers: Headers = None
    ) -> Worker: ...

    @overload
    def retrieve(
        self, worker_id: str, *, stream: Literal[True], extra_headers: Headers = None
    ) -> SyncWorkerStream: ...

    @overload
    def retrieve(
        self, worker_id: str, *, stream: bool, extra_headers: Headers = None
    ) -> Worker | SyncWorkerStream: ...

    def retrieve(
        self, worker_id: str, *, stream: bool = False, extra_headers: Headers = None
    ) -> Worker | SyncWorkerStream:
        """The worker's state; with ``stream=True`` every stored event, then live ones."""
        client = self._client
        return client._stream(
            client._call(
                self._workers.retrieve, worker_id, stream=stream, extra_headers=extra_headers
            )
        )

    def subscribe(
        self, worker_id: str, *, last_event_id: str | None = None, extra_headers: Headers = None
    ) -> SyncWorkerStream:
        """The worker's live updates (``GET /api/workers/{id}/stream``)."""
        client = self._client
        stream = client._call(
            self._workers.subscribe,
            worker_id,
            last_event_id=last_event_id,
            extra_headers=extra_headers,
        )
        return SyncWorkerStream(client, stream)

    def resume(self, checkpoint: Checkpoint, *, extra_headers: Headers = None) -> SyncWorkerStream:
        """Continue a stream from a :class:`Checkpoint`, in this process or another."""
        client = self._client
        stream = client._call(self._workers.resume, checkpoint, extra_headers=extra_headers)
        return SyncWorkerStream(client, stream)

    def retrieve_email(self, worker_id: str, *, extra_headers: Headers = None) -> EmailAddress:
        """The worker's inbound email address (a ``str``; ``.email`` as in the official SDK)."""
        return self._client._call(
            self._workers.retrieve_email, worker_id, extra_headers=extra_headers
        )

    def retrieve_file(
        self, worker_id: str, path: str, *, extra_headers: Headers = None
    ) -> SyncFileDownload:
        """A file in the worker's workspace: ``for chunk in ...`` or ``.read()``."""
        download = self._workers.retrieve_file(worker_id, path, extra_headers=extra_headers)
        return SyncFileDownload(self._client, download)

    def watch(
        self,
        workers: Iterable[str | SyncWorkerStream] = (),
        *,
        tasks: Iterable[str] = (),
        follow: bool = False,
        max_concurrency: int | None = None,
        buffer: int = 64,
        telemetry: bool | Telemetry | None = None,
    ) -> _Blocking[WatchEvent]:
        """Many workers' (and tasks') events merged in arrival order, as ``workers.watch``
        gives them.

        Leaving the ``for`` (or the ``with`` block) early closes every connection.

        >>> for item in client.workers.watch(ids, max_concurrency=10):  # doctest: +SKIP
        ...     print(item.worker_id, item.task_id, type(item.event).__name__, item.error)
        """
        given: Iterable[str | WorkerStream] = workers  # type: ignore[assignment]
        if not isinstance(workers, (str, bytes, SyncWorkerStream)):  # those, the watch refuses
            given = [w.async_stream if isinstance(w, SyncWorkerStream) else w for w in workers]
        watch = self._workers.watch(
            given,
            tasks=tasks,
            follow=follow,
            max_concurrency=max_concurrency,
            buffer=buffer,
            telemetry=telemetry,
        )
        client = self._client
        return client._iterate(lambda: _HostedWatch(client._loop, watch), enter=True)


_TEMPLATE_WIRE = {"output_schema": "outputSchema"}
_VISIBILITIES = ("public", "private")


def _template_fields(
    instructions: str | None,
    output_schema: dict[str, Any] | None,
    prompt: str | None,
    summary: str | None,
    title: str | None,
    visibility: str | None,
) -> dict[str, Any]:
    """The template fields given (not ``None``), checked."""
    fields = {
        k: v
        for k, v in (
            ("instructions", instructions),
            ("output_schema", output_schema),
            ("prompt", prompt),
            ("summary", summary),
            ("title", title),
            ("visibility", visibility),
        )
        if v is not None
    }
    _check_template(fields)
    return fields


def _check_template(fields: dict[str, Any]) -> None:
    for name in ("instructions", "prompt", "summary", "title"):
        if name in fields and not isinstance(fields[name], str):
            raise InvalidRequestError(f"{name} must be a string; got {fields[name]!r}")
    schema = fields.get("output_schema", fields.get("outputSchema"))
    if schema is not None and not isinstance(schema, dict):
        raise InvalidRequestError(f"output_schema must be a JSON Schema object; got {schema!r}")
    if "visibility" in fields and fields["visibility"] not in _VISIBILITIES:
        raise InvalidRequestError(
            f"visibility must be public or private; got {fields['visibility']!r}"
        )


def _refuse_run_options(
    template: dict[str, Any], budget: str | None, stream: bool, files: Files
) -> None:
    """A template is not a run: a run's options without ``input`` are a mistake."""
    given = [
        name
        for name, value in (("budget", budget), ("stream", stream), ("files", files))
        if value not in (None, False)
    ]
    if given:
        raise InvalidRequestError(
            f"{', '.join(f'{n}=' for n in given)} go with input= (a run); "
            + ("a worker template takes none of them" if template else "input= is missing")
        )
