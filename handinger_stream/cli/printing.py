"""What every subcommand prints the same way: a line to the person (stderr), a count,
and nothing more once the reader of its output left.

>>> count(1, "step"), count(0, "source")
('1 step', '0 sources')
"""

from __future__ import annotations

import os
import sys

__all__ = ["count", "discard_stdout", "say"]


def say(message: str) -> None:
    """A line for the person at the terminal, on stderr: stdout is for the answer or JSON."""
    print(message, file=sys.stderr, flush=True)


def count(n: int, noun: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def discard_stdout() -> None:
    """Point stdout (and stderr, when it is the closed pipe too: ``2>&1 | head``) at
    /dev/null, so that the interpreter's last flush cannot fail again: the reader left."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        try:
            sys.stderr.flush()
        except BrokenPipeError:
            os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
