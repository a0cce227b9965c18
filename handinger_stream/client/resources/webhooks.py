"""``client.workers.webhooks``: where a template announces its finished tasks.

The webhook's token is the shared secret Handinger sends with each delivery
(``X-Handinger-Token``); a :class:`~handinger_stream.types.webhook.Webhook`
keeps it out of its ``repr``.

>>> async def main(client):  # doctest: +SKIP
...     hook = await client.workers.webhooks.update("wrk_1", url="https://example.com/hook")
...     page = await client.workers.webhooks.list_executions("wrk_1", page=1)
"""

from __future__ import annotations

from typing import Any

from ...errors import InvalidRequestError
from ...types.webhook import Webhook, WebhookExecutionList
from ..base import AsyncAPIClient, Headers
from ..paths import path_segment
from ..sync_base import SyncAPIClient
from ._bodies import decode_body, today_only

__all__ = ["SyncWebhooks", "Webhooks"]


class Webhooks:
    """``client.workers.webhooks``: a template's webhook and its delivery log."""

    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def _webhook(
        self, method: str, worker_id: str, headers: Headers, suffix: str = "", json: Any = None
    ) -> Webhook:
        call = self._client._json(method, _path(worker_id) + suffix, json=json, headers=headers)
        return decode_body(await today_only(call, "webhooks"), Webhook)

    async def retrieve(self, worker_id: str, *, extra_headers: Headers = None) -> Webhook:
        """The webhook (``url`` and ``token`` are ``None`` when none is set)."""
        return await self._webhook("GET", worker_id, extra_headers)

    async def update(
        self, worker_id: str, *, url: str | None, extra_headers: Headers = None
    ) -> Webhook:
        """Set the URL (a token is made the first time); ``None`` removes the webhook."""
        if url is not None and (not isinstance(url, str) or not url):
            raise InvalidRequestError(f"url must be a non-empty string or None; got {url!r}")
        return await self._webhook("PUT", worker_id, extra_headers, json={"url": url})

    async def delete(self, worker_id: str, *, extra_headers: Headers = None) -> Webhook:
        """Remove the webhook and its token."""
        return await self._webhook("DELETE", worker_id, extra_headers)

    async def regenerate_token(self, worker_id: str, *, extra_headers: Headers = None) -> Webhook:
        """A new token for the webhook; the old one stops working."""
        return await self._webhook("POST", worker_id, extra_headers, "/regenerate-token")

    async def list_executions(
        self, worker_id: str, *, page: int | None = None, extra_headers: Headers = None
    ) -> WebhookExecutionList:
        """One page (1-based) of the delivery attempts."""
        suffix = "/executions"
        if page is not None:
            if not isinstance(page, int) or isinstance(page, bool) or page < 1:
                raise InvalidRequestError(f"page must be a positive int; got {page!r}")
            suffix += f"?page={page}"
        call = self._client._json("GET", _path(worker_id) + suffix, headers=extra_headers)
        raw = await today_only(call, "webhooks")
        return decode_body(raw, WebhookExecutionList)


class SyncWebhooks:
    """``client.workers.webhooks`` for sync code: :class:`Webhooks`' calls, without ``await``."""

    def __init__(self, client: SyncAPIClient, webhooks: Webhooks) -> None:
        self._client = client
        self._webhooks = webhooks

    def retrieve(self, worker_id: str, *, extra_headers: Headers = None) -> Webhook:
        """The webhook."""
        return self._client._call(self._webhooks.retrieve, worker_id, extra_headers=extra_headers)

    def update(self, worker_id: str, *, url: str | None, extra_headers: Headers = None) -> Webhook:
        """Set or remove the URL."""
        return self._client._call(
            self._webhooks.update, worker_id, url=url, extra_headers=extra_headers
        )

    def delete(self, worker_id: str, *, extra_headers: Headers = None) -> Webhook:
        """Remove the webhook and its token."""
        return self._client._call(self._webhooks.delete, worker_id, extra_headers=extra_headers)

    def regenerate_token(self, worker_id: str, *, extra_headers: Headers = None) -> Webhook:
        """A new token for the webhook."""
        return self._client._call(
            self._webhooks.regenerate_token, worker_id, extra_headers=extra_headers
        )

    def list_executions(
        self, worker_id: str, *, page: int | None = None, extra_headers: Headers = None
    ) -> WebhookExecutionList:
        """One page of the delivery attempts."""
        return self._client._call(
            self._webhooks.list_executions, worker_id, page=page, extra_headers=extra_headers
        )


def _path(worker_id: str) -> str:
    return f"/api/workers/{path_segment(worker_id, 'worker_id')}/webhook"
