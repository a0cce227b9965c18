"""What the relay raises: every error is a :class:`~handinger_stream.HandingerError`.

>>> issubclass(ChatBusyError, RelayError)
True
"""

from __future__ import annotations

from ..errors import HandingerError

__all__ = [
    "ChatBusyError",
    "EntriesGoneError",
    "LeaseLostError",
    "RelayError",
    "StoreFullError",
    "StoreUnavailableError",
]


class RelayError(HandingerError):
    """The root of the relay's own errors."""

    status = 500
    """The HTTP status the relay's HTTP surface answers with."""


class StoreUnavailableError(RelayError):
    """The store (Redis) could not be reached, or broke mid-call. Retry later."""

    status = 503


class StoreFullError(StoreUnavailableError):
    """The store refuses writes (Redis at ``maxmemory`` with ``noeviction``): the producer
    stops appending, and clients are answered ``503`` with ``Retry-After``."""


class LeaseLostError(RelayError):
    """This producer's lease was taken by another one: its appends are refused (fencing)."""

    status = 409


class ChatBusyError(RelayError):
    """The chat has a turn running: a new message must wait for it to end."""

    status = 409


class EntriesGoneError(RelayError):
    """The events asked for are no longer stored (trimmed, or expired)."""

    status = 410
