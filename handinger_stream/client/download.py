"""A file's bytes as they arrive: what ``workers.retrieve_file`` returns."""

from __future__ import annotations

from types import TracebackType

import anyio

from .base import AsyncAPIClient, Headers
from .transport import Response, close_soon

__all__ = ["FileDownload"]


class FileDownload:
    """A file's bytes, chunk by chunk: an async iterator that closes its response
    when it ends, fails, is closed or is dropped.
    """

    def __init__(self, client: AsyncAPIClient, path: str, headers: Headers) -> None:
        self._client = client
        self._path = path
        self._headers = headers
        self._response: Response | None = None
        self._done = False

    def __aiter__(self) -> FileDownload:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        try:
            if self._response is None:
                self._response = await self._client.request(
                    "GET", self._path, headers=self._headers
                )
            chunk = await self._response.read_chunk()
        except BaseException:
            await self.aclose()
            raise
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def read(self) -> bytes:
        """The whole file."""
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        self._done = True
        response, self._response = self._response, None
        if response is not None:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def __aenter__(self) -> FileDownload:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        response = self._response
        if response is not None and not response.abort():
            close_soon(self.aclose)
