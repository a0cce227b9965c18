"""``client.workers``: create, retrieve, continue and watch workers.

:class:`Workers` for :class:`~handinger_stream.AsyncHandinger`, and
:class:`SyncWorkers`, the same calls for :class:`~handinger_stream.Handinger`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote

import msgspec

from ...errors import APIStatusError, InvalidRequestError, excerpt
from ...protocol.wire import decode_worker
from ...types.worker import Budget, Worker
from ..base import AsyncAPIClient, Files, Headers, _path_id, _replay_path
from ..download import FileDownload
from ..stream import Checkpoint, WorkerStream
from ..sync_base import SyncAPIClient, SyncFileDownload, SyncWorkerStream, _Blocking, _HostedWatch
from ..watch import Watch, WatchEvent
from ._bodies import input_body

if TYPE_CHECKING:
    from ..telemetry import Telemetry

__all__ = ["SyncWorkers", "Workers"]


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
        body = input_body(input, budget)
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
        body = input_body(input, budget)
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
        # Telemetry is the streams' own (AsyncHandinger(telemetry=...)); a watch asking
        # for something else opens its streams through a client that records so.
        opener = self
        if telemetry is not None:
            opener = Workers(self._client.with_options(telemetry=telemetry))

        async def open_stream(worker_id: str) -> WorkerStream:
            return await opener.retrieve(worker_id, stream=True)

        return Watch(open_stream, workers, max_concurrency=max_concurrency, buffer=buffer)


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

    def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream:
        """Create a worker and start it on ``input`` (``files`` uploaded first).

        >>> worker = client.workers.create(input="Hi")  # doctest: +SKIP
        """
        client = self._client
        return client._stream(
            client._call(
                self._workers.create,
                input=input,
                budget=budget,
                stream=stream,
                files=files,
                extra_headers=extra_headers,
            )
        )

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

    def retrieve_email(self, worker_id: str, *, extra_headers: Headers = None) -> str:
        """The worker's inbound email address."""
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
        self, workers: Iterable[str | SyncWorkerStream], *, max_concurrency: int | None = None
    ) -> _Blocking[WatchEvent]:
        """Many workers' events merged in arrival order, as ``workers.watch`` gives them.

        Leaving the ``for`` (or the ``with`` block) early closes every connection.

        >>> for item in client.workers.watch(ids, max_concurrency=10):  # doctest: +SKIP
        ...     print(item.worker_id, type(item.event).__name__, item.error)
        """
        given: Iterable[str | WorkerStream] = workers  # type: ignore[assignment]
        if not isinstance(workers, (str, bytes, SyncWorkerStream)):  # those, the watch refuses
            given = [w.async_stream if isinstance(w, SyncWorkerStream) else w for w in workers]
        watch = self._workers.watch(given, max_concurrency=max_concurrency)
        client = self._client
        return client._iterate(lambda: _HostedWatch(client._loop, watch), enter=True)
