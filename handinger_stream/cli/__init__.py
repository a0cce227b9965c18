"""The ``handinger-stream`` command: every subcommand, on top of what it drives."""

from .main import entry, main

__all__ = ["entry", "main"]
