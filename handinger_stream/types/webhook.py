"""Webhooks: where a worker template announces finished tasks (``api-current.md``).

Handinger POSTs to the webhook's ``url`` when a task finishes, with ``token``
in the ``X-Handinger-Token`` header; each attempt is a ``WebhookExecution``.

>>> raw = b'{"logs": [], "page": 1, "pageCount": 0, "totalCount": 0}'
>>> msgspec.json.decode(raw, type=WebhookExecutionList).page_count
0
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

__all__ = ["TOKEN_HEADER", "Webhook", "WebhookExecution", "WebhookExecutionList"]

TOKEN_HEADER = "x-handinger-token"
"""The header carrying a webhook's shared secret on each delivery."""


class Webhook(msgspec.Struct, kw_only=True):
    """A template's webhook: ``url`` and its shared secret (both ``None`` when unset).

    The token is a secret: it is left out of ``repr``.
    """

    url: str | None = None
    token: str | None = None

    def __repr__(self) -> str:
        token = "None" if self.token is None else "'***'"
        return f"Webhook(url={self.url!r}, token={token})"


class WebhookExecution(msgspec.Struct, kw_only=True, rename="camel"):
    """One delivery attempt: where, when, how long, and how it went."""

    id: str
    worker_id: str
    url: str
    created_at: datetime
    duration_ms: int = 0
    request_status: Literal["success", "error"] = "success"
    response_status: int | None = None
    error_message: str | None = None
    task_id: str | None = None
    task_title: str | None = None


class WebhookExecutionList(msgspec.Struct, kw_only=True, rename="camel"):
    """One page (1-based) of a webhook's delivery attempts, newest first."""

    logs: list[WebhookExecution] = msgspec.field(default_factory=list)
    page: int = 1
    page_count: int = 0
    total_count: int = 0
