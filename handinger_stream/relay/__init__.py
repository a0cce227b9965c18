"""The relay: a worker's stream to any number of browsers, resumable, over one process or many.

``Relay(client, store)`` reads each turn's upstream once and appends every
event to a store (:class:`MemoryStore` in one process, :class:`RedisStore`
across many); readers get the turn from the store, history first, then
live, from its start or after any id. The HTTP surface speaks the AI SDK's
chat transport (:class:`RelayASGI` for FastAPI/Starlette,
:func:`make_aiohttp_app` for aiohttp), over SSE and over a WebSocket
(ai 7's ``WebSocketChatTransport``: :class:`RelayWS`), and serves a chat page at ``/``.
:class:`FleetWatch` follows every turn the relays on a store produce.
``handinger-stream relay`` runs it. See ``docs/relay.md``.

>>> from handinger_stream.relay import MemoryStore, Relay, RelayASGI, RedisStore
"""

from __future__ import annotations

from .aiohttp_app import make_aiohttp_app
from .asgi import RelayASGI
from .core import Reader, Relay, Turn, task_id_for
from .errors import (
    ChatBusyError,
    EntriesGoneError,
    LeaseLostError,
    RelayError,
    StoreUnavailableError,
)
from .fleet import FleetWatch
from .http import RelayHTTP
from .memory import MemoryStore
from .redis_store import RedisStore
from .store import ChatInfo, Entry, Lease, NewEntry, Store
from .ws import RelayWS, WSLimits

Chunk = NewEntry  # the previous name of NewEntry (an AI SDK chunk is an event on the wire)

__all__ = [
    "ChatBusyError",
    "ChatInfo",
    "Chunk",
    "EntriesGoneError",
    "Entry",
    "FleetWatch",
    "Lease",
    "LeaseLostError",
    "MemoryStore",
    "NewEntry",
    "Reader",
    "RedisStore",
    "Relay",
    "RelayASGI",
    "RelayError",
    "RelayHTTP",
    "RelayWS",
    "Store",
    "StoreUnavailableError",
    "Turn",
    "WSLimits",
    "make_aiohttp_app",
    "task_id_for",
]
