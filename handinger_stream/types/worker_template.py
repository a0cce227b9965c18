"""Worker templates: the current generation's reusable agents (``api-current.md``).

A template holds persistent instructions, an optional JSON Schema for
structured output, a title and a visibility; tasks run against it.

>>> raw = b'{"id": "w1", "title": "Analyst", "summary": "", "instructions": "Be brief",'
>>> raw += b' "visibility": "private", "organizationId": "o", "userId": "u", "url": "u"}'
>>> msgspec.json.decode(raw, type=WorkerTemplate).instructions
'Be brief'
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["DeleteWorkerResponse", "Visibility", "WorkerTemplate"]

Visibility = Literal["public", "private"]


class WorkerTemplate(msgspec.Struct, kw_only=True, rename="camel"):
    """A reusable agent: instructions, an optional output schema, a title."""

    id: str
    title: str = ""
    summary: str = ""
    instructions: str = ""
    output_schema: dict[str, Any] | None = None
    visibility: Visibility = "public"
    organization_id: str = ""
    user_id: str = ""
    url: str = ""
    created_at: str | None = None
    updated_at: str | None = None


class DeleteWorkerResponse(msgspec.Struct, kw_only=True):
    """``workers.delete``: whether the template was deleted."""

    deleted: bool
