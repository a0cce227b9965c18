"""The player: answers requests from a cassette, each with its recorded response.

The emulator serves it (``Emulator(cassette=...)``, ``handinger-stream serve
--cassette``); it takes only the cassette file's public names.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from .cassette_format import (
    Cassette,
    FormReader,
    Interaction,
    RecordedForm,
    RecordedResponse,
    body_excerpt,
    describe_request,
    request_key,
)

__all__ = ["Player"]


class Player:
    """Answers requests from a cassette: a matching request gets its recorded response."""

    def __init__(self, cassette: Cassette, *, realtime: bool) -> None:
        self.cassette = cassette
        self.realtime = realtime
        self._by_key: dict[tuple[str, str, str], list[Interaction]] = {}
        for interaction in cassette.interactions:
            req = interaction.request
            self._by_key.setdefault(request_key(req.method, req.path, req.content), []).append(
                interaction
            )
        self._served: dict[tuple[str, str, str], int] = {}

    def next_for(self, method: str, path: str, body: bytes | RecordedForm) -> Interaction | None:
        """The next recorded answer to this request; the last one again once all were used."""
        key = request_key(method, path, body)
        candidates = self._by_key.get(key)
        if not candidates:
            return None
        served = self._served.get(key, 0)
        self._served[key] = served + 1
        return candidates[min(served, len(candidates) - 1)]

    def recorded(self) -> list[str]:
        seen: dict[str, None] = {}
        for interaction in self.cassette.interactions:
            seen.setdefault(interaction.request.describe(80), None)
        return list(seen)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer ``request`` as it was answered when recorded (a 404 saying what was recorded
        if nothing matches)."""
        started = time.monotonic()
        body = await _body(request)
        interaction = self.next_for(request.method, request.raw_path, body)
        if interaction is None:
            return self._unmatched(request, body)
        return await self._replay(request, interaction.response, started)

    async def _replay(
        self, request: web.Request, recorded: RecordedResponse, started: float
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=recorded.status, reason=recorded.reason)
        for name, value in recorded.headers:
            response.headers.add(name, value)
        try:
            if self.realtime:
                await _sleep_until(started + recorded.head_at)
            await response.prepare(request)
            for piece in recorded.pieces:
                if self.realtime:
                    await _sleep_until(started + piece.at)
                await response.write(piece.data)
            if not recorded.complete:
                # The recorded body ended early: end this one the same way.
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
        except ConnectionError:
            pass  # the client left
        return response

    def _unmatched(self, request: web.Request, body: bytes | RecordedForm) -> web.Response:
        asked = describe_request(request.method, request.raw_path, body, 200)
        recorded = self.recorded()
        listing = "; ".join(recorded[:10]) + ("; …" if len(recorded) > 10 else "")
        message = (
            f"no recorded interaction matches {asked} "
            f"(matched on method, path with query, and body); "
            f"the cassette holds {len(self.cassette.interactions)} recorded "
            f"request{'' if len(self.cassette.interactions) == 1 else 's'}: "
            f"{listing or 'none'}"
        )
        payload = {
            "error": {
                "message": message,
                "type": "not_found_error",
                "status": 404,
                "request": {
                    "method": request.method,
                    "path": request.raw_path,
                    "body": body_excerpt(body, 200),
                },
                "recorded": recorded[:100],
            }
        }
        return web.json_response(payload, status=404)


async def _body(request: web.Request) -> bytes | RecordedForm:
    """What a request is matched on: its bytes, or for an upload its form."""
    reader = FormReader.of(request.headers.get("content-type"))
    if reader is None:
        return await request.read()
    # An upload: read as it arrives, its files hashed, never whole in memory.
    async for piece in request.content.iter_any():
        reader.feed(piece)
    return reader.form()


async def _sleep_until(deadline: float) -> None:
    # Loop until the clock says so: a timer may fire a hair early, and a
    # replay "at the recorded pace" must never run ahead of the recording.
    while (remaining := deadline - time.monotonic()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(remaining)
