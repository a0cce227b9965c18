"""A minimal fan-out, the floor the relay is measured against: what one writes in an hour.

One upstream read per turn (an aiohttp client), a queue per reader, nothing
stored: a reader who joins gets what follows, never what went before. The
upstream's events pass through as they came (no ids of our own).

- ``POST /api/chat`` (``{"id", "messages"}``) starts the chat's turn and streams it to the poster;
- ``GET /api/chat/{id}/stream`` joins the running turn (204 if there is none).

``python -m benchmarks.peers.fanout_minimal --upstream URL`` prints ``{"port": N}``, then serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-vercel-ai-ui-message-stream": "v1",
}
Queue = asyncio.Queue[bytes | None]  # whole events; None ends the turn


class Turn:
    """One running turn: the readers' queues, fed by one upstream read."""

    def __init__(self) -> None:
        self.queues: set[Queue] = set()


class FanOut:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.turns: dict[str, Turn] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # held, or the loop may drop them
        self.session: ClientSession | None = None

    async def post(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        chat_id = str(body["id"])
        if chat_id in self.turns:
            return web.Response(status=409, text="the chat has a turn running")
        text = "".join(
            part.get("text", "") for part in body["messages"][-1]["parts"] if part["type"] == "text"
        )
        turn = self.turns[chat_id] = Turn()
        queue: Queue = asyncio.Queue()
        turn.queues.add(queue)  # before the upstream is read: the poster gets all of it
        task = asyncio.create_task(self.produce(chat_id, turn, text))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return await self.stream(request, turn, queue)

    async def join(self, request: web.Request) -> web.StreamResponse:
        turn = self.turns.get(request.match_info["id"])
        if turn is None:
            return web.Response(status=204)
        queue: Queue = asyncio.Queue()
        turn.queues.add(queue)
        return await self.stream(request, turn, queue)

    async def produce(self, chat_id: str, turn: Turn, text: str) -> None:
        """Read the upstream once; hand each whole event to every reader's queue."""
        assert self.session is not None
        try:
            url = f"{self.upstream}/api/workers"
            async with self.session.post(url, json={"input": text, "stream": True}) as response:
                pending = b""
                async for chunk in response.content.iter_any():
                    # Whole events only, so a reader joining between two reads starts on one.
                    pending += chunk
                    cut = pending.rfind(b"\n\n") + 2
                    if cut > 1:
                        events, pending = pending[:cut], pending[cut:]
                        for queue in turn.queues:
                            queue.put_nowait(events)
        finally:
            del self.turns[chat_id]
            for queue in turn.queues:
                queue.put_nowait(None)

    async def stream(self, request: web.Request, turn: Turn, queue: Queue) -> web.StreamResponse:
        response = web.StreamResponse(headers=HEADERS)
        await response.prepare(request)
        try:
            ended = False
            while not ended:
                # What piled up while this reader was writing goes out in one write.
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                ended = batch[-1] is None  # nothing is queued after the end
                data = b"".join(events for events in batch if events is not None)
                if data:
                    await response.write(data)
        finally:
            turn.queues.discard(queue)
        return response


async def serve(upstream: str, port: int) -> None:
    fanout = FanOut(upstream)
    app = web.Application()
    app.router.add_post("/api/chat", fanout.post)
    app.router.add_get("/api/chat/{id}/stream", fanout.join)
    async with ClientSession(timeout=ClientTimeout(total=None)) as fanout.session:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
        await site.start()
        print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
        await asyncio.Event().wait()  # until the benchmark ends the process


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.fanout_minimal")
    parser.add_argument("--upstream", required=True, help="the benchmark server's base URL")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.upstream, args.port))
