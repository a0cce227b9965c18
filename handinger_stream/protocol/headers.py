"""The HTTP headers the protocol names, defined once for the client and both servers.

>>> SSE_HEADERS["content-type"]
'text/event-stream'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["SSE_HEADERS", "WORKER_ID_HEADER"]

WORKER_ID_HEADER = "x-handinger-worker-id"
"""The id of the worker a stream belongs to, sent with the response before any event."""

SSE_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        # The AI SDK's UI message stream, version 1: what its chat transports expect.
        "x-vercel-ai-ui-message-stream": "v1",
        # Proxies such as nginx would otherwise buffer the stream and hold tokens back.
        "x-accel-buffering": "no",
    }
)
"""The response headers of an event stream (the emulator's and the relay's)."""
