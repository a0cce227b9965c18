"""AsyncHandinger, the client: the core and its resources.

>>> async def main():  # doctest: +SKIP
...     async with AsyncHandinger() as client:
...         stream = await client.workers.create(input="Summarise today's news", stream=True)
...         async for text in stream.text_deltas():
...             print(text, end="", flush=True)
"""

from __future__ import annotations

from functools import cached_property

from .base import DEFAULT_BASE_URL, AsyncAPIClient, check_base_url
from .download import FileDownload
from .resources.tasks import Tasks
from .resources.workers import Workers

__all__ = ["DEFAULT_BASE_URL", "AsyncHandinger", "FileDownload", "Workers", "check_base_url"]


class AsyncHandinger(AsyncAPIClient):
    """The Handinger Workers API client.

    ``api_key`` defaults to ``HANDINGER_API_KEY``, ``base_url`` to
    ``HANDINGER_BASE_URL`` or the public service. ``http_client`` may be your
    own ``aiohttp.ClientSession`` or ``httpx.AsyncClient`` (never closed by us).
    ``max_retries`` covers requests before their first byte; streams resume by
    themselves up to ``max_reconnects`` times in a row, and the ``*_timeout``
    limits (seconds, ``None`` for none) say when a silent stream counts as
    stalled (see ``docs/resilience.md``). ``ai_sdk`` (7, or 6) is the AI SDK
    major whose ``readUIMessageStream`` every stream's ``Worker.messages``
    follow: the one your front end runs (see ``docs/protocol.md``).

    >>> client = AsyncHandinger(api_key="sk-secret", base_url="http://127.0.0.1:8787")
    >>> "sk-secret" in repr(client)
    False
    >>> client.with_options(ai_sdk=6).ai_sdk  # a front end still on ai 6
    6
    """

    @cached_property
    def workers(self) -> Workers:
        """Workers: runs of the seed's generation, templates of today's (and watching many)."""
        return Workers(self)

    @cached_property
    def tasks(self) -> Tasks:
        """Tasks: runs against worker templates, today's generation of the API."""
        return Tasks(self)
