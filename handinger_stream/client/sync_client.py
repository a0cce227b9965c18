"""Handinger, the sync client: the async client, driven from a private thread.

One implementation: every call runs the :class:`~handinger_stream.AsyncHandinger`
code on an asyncio event loop in a daemon thread of this client's own. The
calling thread waits for the answer; it may be a plain script, a worker
thread, or a thread whose own event loop is running (a notebook): that loop
is blocked while it waits, the client's loop is not, so nothing deadlocks.
The thread starts on first use and ends with :meth:`Handinger.close` (or the
``with`` block, or when the client is garbage collected, or at exit),
closing every connection first.

>>> with Handinger(base_url="http://127.0.0.1:8787") as client:  # doctest: +SKIP
...     stream = client.workers.create(input="Hi", stream=True)
...     for text in stream.text_deltas():
...         print(text, end="", flush=True)
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from ..errors import InvalidRequestError
from ..protocol.sse import DEFAULT_MAX_EVENT_BYTES
from ..types.events import AISDKVersion
from .async_client import AsyncHandinger
from .resources.tasks import SyncTasks
from .resources.workers import SyncWorkers
from .stream import OnDecodeError
from .sync_base import SyncAPIClient, SyncFileDownload, SyncWorkerStream, _new_loop
from .transport import TransportName

if TYPE_CHECKING:
    from .telemetry import Telemetry

__all__ = ["Handinger", "SyncFileDownload", "SyncWorkerStream", "SyncWorkers"]


class Handinger(SyncAPIClient):
    """The Handinger Workers API client, for sync code.

    The options are :class:`AsyncHandinger`'s. ``http_client`` may be an
    ``httpx.AsyncClient`` (it is used on this client's own loop); an
    ``aiohttp.ClientSession`` belongs to another loop and is refused.

    >>> client = Handinger(api_key="sk-secret", base_url="http://127.0.0.1:8787")
    >>> "sk-secret" in repr(client)
    False
    >>> client.close()
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
        ai_sdk: AISDKVersion = 7,
    ) -> None:
        if isinstance(http_client, aiohttp.ClientSession):
            raise InvalidRequestError(
                "Handinger runs its own event loop, and an aiohttp.ClientSession belongs to "
                "the loop it was made on: pass an httpx.AsyncClient, or transport='aiohttp'"
            )
        self._async = AsyncHandinger(
            api_key,
            base_url,
            timeout,
            max_retries,
            http_client,
            transport=transport,
            on_decode_error=on_decode_error,
            max_event_bytes=max_event_bytes,
            max_reconnects=max_reconnects,
            first_event_timeout=first_event_timeout,
            idle_timeout=idle_timeout,
            total_timeout=total_timeout,
            telemetry=telemetry,
            ai_sdk=ai_sdk,
        )
        self._loop = _new_loop()
        self._parent: Handinger | None = None
        # Closed when collected, or at exit, if nobody did: connections, loop, thread.
        self._finalizer: Callable[[], object] = weakref.finalize(
            self, self._loop.close, self._async.aclose
        )

    @classmethod
    def _sharing(cls, parent: Handinger, client: AsyncHandinger) -> Handinger:
        copy = cls.__new__(cls)
        copy._async = client
        copy._loop = parent._loop
        copy._parent = parent  # keeps the shared thread alive while the copy is
        copy._finalizer = lambda: None
        return copy

    @cached_property
    def workers(self) -> SyncWorkers:
        """Workers: runs of the seed's generation, templates of today's (and watching many)."""
        return SyncWorkers(self, self._async.workers)

    @cached_property
    def tasks(self) -> SyncTasks:
        """Tasks: runs against worker templates, today's generation of the API."""
        return SyncTasks(self, self._async.tasks)

    @property
    def base_url(self) -> str:
        return self._async.base_url

    @property
    def ai_sdk(self) -> AISDKVersion:
        """The AI SDK major every stream's messages are folded as.

        >>> Handinger(api_key="k", ai_sdk=6).ai_sdk  # doctest: +SKIP
        6
        """
        return self._async.ai_sdk

    @property
    def async_client(self) -> AsyncHandinger:
        """The :class:`AsyncHandinger` underneath (use it only on this client's loop)."""
        return self._async

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncHandinger(", "Handinger(", 1)

    def with_options(self, **options: Any) -> Handinger:
        """A client with some options changed, sharing this one's thread and connections.

        >>> patient = Handinger(api_key="k").with_options(max_reconnects=20)  # doctest: +SKIP
        """
        return Handinger._sharing(self, self._async.with_options(**options))

    def close(self) -> None:
        """Close the connections, stop the loop and end its thread. Idempotent.

        A copy made by :meth:`with_options` leaves them to the client it came from.
        """
        self._finalizer()

    def __enter__(self) -> Handinger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
