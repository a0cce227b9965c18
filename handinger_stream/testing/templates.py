"""Worker templates: today's reusable agents, their fields checked and shown as the API does.

A template holds instructions (written from ``prompt`` when they are not
given), an optional ``outputSchema``, a title (a made-up dog's name when not
given, as the service does), a summary and a visibility. Beside the API's
fields it keeps what the emulator runs it with: the event log its tasks
share, the lock that plays their turns one at a time, its tasks, its
webhook and the log of its deliveries.

>>> fields = template_fields({"prompt": "Summarise the news", "title": "Newsy"}, update=False)
>>> t = Template.made("wrk_1", fields, base="http://127.0.0.1:8787", now=0.0)
>>> (t.title, t.summary, t.instructions.startswith("You are a worker that summarise"))
('Newsy', 'Summarise the news', True)
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import excerpt
from .clock import iso
from .event_log import EventLog
from .refusals import Refusal
from .structured_output import check_schema
from .tasks import ORGANIZATION_ID, USER_ID
from .webhook_delivery import Execution, Webhook

__all__ = ["CREATE_FIELDS", "UPDATE_FIELDS", "Template", "template_fields"]

CREATE_FIELDS = ("instructions", "prompt", "outputSchema", "summary", "title", "visibility")
"""What a body that creates a template may hold (``POST /api/workers``)."""
UPDATE_FIELDS = ("instructions", "outputSchema", "summary", "title", "visibility")
"""What ``PATCH /api/workers/{id}`` may change."""
VISIBILITIES = ("public", "private")
_LIMITS = {"instructions": 20_000, "prompt": 20_000, "summary": 500, "title": 200}

_ADJECTIVES = ("Brave", "Curious", "Loyal", "Nimble", "Patient", "Sunny", "Steady", "Witty")
_BREEDS = ("Beagle", "Collie", "Corgi", "Dachshund", "Husky", "Poodle", "Retriever", "Whippet")


def dog_name(key: str) -> str:
    """The title of a template made without one: a dog's name, the same for the same key.

    >>> dog_name("wrk_1")
    'Loyal Husky'
    """
    digest = hashlib.sha256(key.encode()).digest()
    return f"{_ADJECTIVES[digest[0] % len(_ADJECTIVES)]} {_BREEDS[digest[1] % len(_BREEDS)]}"


def template_fields(body: Any, *, update: bool) -> dict[str, Any]:
    """The fields of a create (or, with ``update``, a PATCH) body, checked; a 400 or 422 naming
    the one that is wrong (a 501 when a schema is given and ``jsonschema`` is not installed)."""
    if not isinstance(body, dict):
        raise Refusal(400, "the body must be a JSON object")
    allowed = UPDATE_FIELDS if update else CREATE_FIELDS
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        hint = " (prompt is read only when a worker is created)" if unknown == ["prompt"] else ""
        raise Refusal(
            400,
            f"unknown field {excerpt(unknown[0], 60)!r}{hint} (fields: {', '.join(allowed)})",
        )
    fields: dict[str, Any] = {}
    for name, limit in _LIMITS.items():
        if name in body:
            value = body[name]
            if not isinstance(value, str) or len(value) > limit:
                raise Refusal(400, f"{name}: a string of at most {limit} characters")
            fields[name] = value
    if "visibility" in body:
        if body["visibility"] not in VISIBILITIES:
            raise Refusal(400, f"visibility: must be one of {', '.join(VISIBILITIES)}")
        fields["visibility"] = body["visibility"]
    if "outputSchema" in body:
        schema = body["outputSchema"]
        if schema is not None:
            check_schema(schema)
        fields["outputSchema"] = schema
    return fields


@dataclass
class Template:
    """A worker template: the API's fields, and what the emulator runs it with."""

    id: str
    title: str
    summary: str
    instructions: str
    output_schema: dict[str, Any] | None
    visibility: str
    url: str
    created_at: float
    updated_at: float
    # The base URL of the request that made it: the links of its tasks' files and pages.
    base: str = ""
    log: EventLog = field(default_factory=EventLog, repr=False)
    # Its turns play one at a time, in the order they came (see docs/emulator.md).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    task_ids: list[str] = field(default_factory=list)
    webhook: Webhook = field(default_factory=Webhook)
    executions: list[Execution] = field(default_factory=list, repr=False)

    @classmethod
    def made(cls, id: str, fields: dict[str, Any], *, base: str, now: float) -> Template:
        """A new template from checked ``fields``, the service's defaults filling the gaps."""
        prompt = fields.get("prompt", "")
        instructions = fields.get("instructions")
        if instructions is None:
            instructions = _instructions_from(prompt) if prompt else ""
        summary = fields.get("summary")
        if summary is None:
            summary = _first_sentence(prompt)
        return cls(
            id=id,
            title=fields.get("title") or dog_name(id),
            summary=summary,
            instructions=instructions,
            output_schema=fields.get("outputSchema"),
            visibility=fields.get("visibility", "public"),
            url=f"{base}/dashboard/workers/{id}",
            created_at=now,
            updated_at=now,
            base=base,
        )

    def update(self, fields: dict[str, Any], *, now: float) -> None:
        """Apply checked PATCH ``fields``: turns already running keep what they started with."""
        for name, attr in (
            ("instructions", "instructions"),
            ("summary", "summary"),
            ("title", "title"),
            ("visibility", "visibility"),
            ("outputSchema", "output_schema"),
        ):
            if name in fields:
                setattr(self, attr, fields[name])
        self.updated_at = now

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "summary": self.summary,
            "instructions": self.instructions,
            "outputSchema": self.output_schema,
            "visibility": self.visibility,
            "organizationId": ORGANIZATION_ID,
            "userId": USER_ID,
            "url": self.url,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        }


def _instructions_from(prompt: str) -> str:
    """Instructions written from a description (the service has a model write them)."""
    what = prompt.strip().rstrip(".")
    what = what[:1].lower() + what[1:]
    return (
        f"You are a worker that {what}. Research the question, cite your sources "
        "and answer concisely."
    )


def _first_sentence(text: str) -> str:
    sentence = text.strip().split(". ")[0].strip()
    return sentence if len(sentence) <= 120 else sentence[:119].rstrip() + "…"
