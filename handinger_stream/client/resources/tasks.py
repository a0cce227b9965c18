"""``client.tasks``: runs against worker templates, the current generation of the API.

A task is started with ``tasks.create``; a follow-up turn is the same call
with the task's id. With ``stream=True`` the answer is the same
:class:`~handinger_stream.WorkerStream` as a seed-generation run's: typed
events, snapshots, resume (through the worker's replay stream) and stall
limits. :class:`Tasks` for the async client, :class:`SyncTasks` for the sync one.

>>> async def main(client):  # doctest: +SKIP
...     stream = await client.tasks.create(input="Plan a trip", worker_id="wrk_1", stream=True)
...     async for text in stream.text_deltas():
...         print(text, end="")
...     again = await client.tasks.create(input="Cheaper?", task_id="tsk_1", worker_id="wrk_1")
"""

from __future__ import annotations

from typing import Any, Literal, overload

from ...protocol.wire import decode_worker
from ...types.task import DeleteTaskResponse, TaskWithTurns
from ...types.worker import Budget, Worker
from ..base import AsyncAPIClient, Files, Headers
from ..paths import checked_id, path_segment
from ..stream import WorkerStream
from ..sync_base import SyncAPIClient, SyncWorkerStream
from ._bodies import NO_ROUTE, decode_body, input_body, opened, today_only, with_hint

__all__ = ["SyncTasks", "Tasks"]

_WIRE = {"task_id": "taskId", "worker_id": "workerId"}


class Tasks:
    """``client.tasks``: create (and continue), retrieve and delete tasks.

    Every call takes ``extra_headers`` (sent with it, and with any resume of its stream).
    """

    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        input: str,
        worker_id: str | None = None,
        task_id: str | None = None,
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
        worker_id: str | None = None,
        task_id: str | None = None,
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
        worker_id: str | None = None,
        task_id: str | None = None,
        budget: Budget | None = None,
        stream: bool,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | WorkerStream: ...

    async def create(
        self,
        *,
        input: str,
        worker_id: str | None = None,
        task_id: str | None = None,
        budget: Budget | None = None,
        stream: bool = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | WorkerStream:
        """Start a task on ``input`` (``POST /api/tasks``), or add a turn to ``task_id``.

        ``worker_id``: the template to run (omitted: the service makes one with
        ``input`` as its instructions). ``files`` as for ``workers.create``.

        >>> worker = await client.tasks.create(input="Hi", worker_id="wrk_1")  # doctest: +SKIP
        """
        body = input_body(input, budget)
        if task_id is not None:
            body[_WIRE["task_id"]] = checked_id(task_id, "task_id")
        if worker_id is not None:
            body[_WIRE["worker_id"]] = checked_id(worker_id, "worker_id")
        return await with_hint(
            self._start(body, stream, files, extra_headers, worker_id is None and task_id is None),
            NO_ROUTE,
            "if this server speaks the seed's generation, which has no /api/tasks: "
            "start a run with client.workers.create(input=...)",
        )

    async def _start(
        self, body: dict[str, Any], stream: bool, files: Files, headers: Headers, new: bool
    ) -> Worker | WorkerStream:
        client = self._client
        if not stream:
            raw = await client._json("POST", "/api/tasks", json=body, files=files, headers=headers)
            return decode_worker(raw)
        # A new worker's replay starts with this task, so it can be resumed by position;
        # a template's replay holds its earlier tasks too, so only by event id.
        return await opened(
            client._open_stream(
                "POST",
                "/api/tasks",
                json={**body, "stream": True},
                files=files,
                headers=headers,
                from_start=new,
            )
        )

    async def retrieve(self, task_id: str, *, extra_headers: Headers = None) -> TaskWithTurns:
        """The task and its turns (``GET /api/tasks/{task_id}``).

        >>> found = await client.tasks.retrieve("tsk_1")  # doctest: +SKIP
        >>> [turn.output_text for turn in found.turns]  # doctest: +SKIP
        """
        path = f"/api/tasks/{path_segment(task_id, 'task_id')}"
        return decode_body(
            await today_only(self._client._json("GET", path, headers=extra_headers), "tasks"),
            TaskWithTurns,
        )

    async def delete(self, task_id: str, *, extra_headers: Headers = None) -> DeleteTaskResponse:
        """Archive the task: gone from the task list, its turns and files kept."""
        path = f"/api/tasks/{path_segment(task_id, 'task_id')}"
        return decode_body(
            await today_only(self._client._json("DELETE", path, headers=extra_headers), "tasks"),
            DeleteTaskResponse,
        )


class SyncTasks:
    """``client.tasks`` for sync code: the same calls as :class:`Tasks`, without ``await``."""

    def __init__(self, client: SyncAPIClient, tasks: Tasks) -> None:
        self._client = client
        self._tasks = tasks

    @overload
    def create(
        self,
        *,
        input: str,
        worker_id: str | None = None,
        task_id: str | None = None,
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
        worker_id: str | None = None,
        task_id: str | None = None,
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
        worker_id: str | None = None,
        task_id: str | None = None,
        budget: Budget | None = None,
        stream: bool,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream: ...

    def create(
        self,
        *,
        input: str,
        worker_id: str | None = None,
        task_id: str | None = None,
        budget: Budget | None = None,
        stream: bool = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream:
        """Start a task, or add a turn to ``task_id`` (see :meth:`Tasks.create`)."""
        client = self._client
        return client._stream(
            client._call(
                self._tasks.create,
                input=input,
                worker_id=worker_id,
                task_id=task_id,
                budget=budget,
                stream=stream,
                files=files,
                extra_headers=extra_headers,
            )
        )

    def retrieve(self, task_id: str, *, extra_headers: Headers = None) -> TaskWithTurns:
        """The task and its turns."""
        return self._client._call(self._tasks.retrieve, task_id, extra_headers=extra_headers)

    def delete(self, task_id: str, *, extra_headers: Headers = None) -> DeleteTaskResponse:
        """Archive the task."""
        return self._client._call(self._tasks.delete, task_id, extra_headers=extra_headers)
