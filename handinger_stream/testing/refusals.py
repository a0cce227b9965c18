"""Why the emulator refuses a request of today's API: the status and a message naming the field.

The parts of the emulator that read today's bodies (templates, tasks,
schedules, webhooks, structured output) raise a :class:`Refusal`; the
emulator answers it in the API's error shape. :func:`require` imports an
optional library (the ``emulator`` extra) when it is first needed, and
refuses with the command that installs it when it is missing.

>>> Refusal(400, "when.type: must be one of scheduled, delayed, cron, interval").status
400
>>> require("json", "reading JSON").__name__
'json'
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["INSTALL_HINT", "MissingExtra", "Refusal", "require"]

INSTALL_HINT = "pip install 'handinger-stream[emulator]'"
"""The command that installs what a schema or a cron schedule needs."""


class Refusal(Exception):
    """A request refused with ``status`` and a one-line ``message`` (it names the bad field)."""

    def __init__(self, status: int, message: str) -> None:
        # One line: it becomes the error body's message, and may end up in a log line.
        self.status = status
        self.message = " ".join(message.split())
        super().__init__(self.message)


class MissingExtra(Refusal):
    """An optional library is not installed: 501, with the command that installs it."""

    def __init__(self, library: str, what: str) -> None:
        super().__init__(501, f"{what} needs the {library} library: {INSTALL_HINT}")


def require(library: str, what: str) -> ModuleType:
    """``library``, imported now; :class:`MissingExtra` saying how to install it if it is absent.

    Imported by name (not by an ``import`` statement): neither library ships
    type hints, and the emulator's other calls must work without them.

    >>> require("no_such_library_here", "a cron schedule")
    Traceback (most recent call last):
      ...
    handinger_stream.testing.refusals.MissingExtra: a cron schedule needs the \
no_such_library_here library: pip install 'handinger-stream[emulator]'
    """
    try:
        return importlib.import_module(library)
    except ImportError:
        raise MissingExtra(library, what) from None
