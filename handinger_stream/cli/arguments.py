"""The command line's argument types, shared by every subcommand.

Each subcommand's module adds its own options; they take their numbers through
these so that ``--port 99999`` or ``--tokens-per-second nan`` is refused the same
way everywhere (argparse's usage error, exit 2)::

    parser.add_argument("--port", type=port, default=8787)
"""

from __future__ import annotations

import argparse
import math

__all__ = ["EMULATOR_PACE", "pace", "port", "positive", "positive_int"]

EMULATOR_PACE = 25.0  # tokens per second: about a real model's pace


def pace(value: str) -> float:
    """A ``--tokens-per-second``: a finite number, 0 or more (0: as fast as possible)."""
    number = _number(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (0: as fast as possible); got {value}")
    return number


def positive(value: str) -> float:
    """A finite number above 0, such as a lease in seconds."""
    number = _number(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0; got {value}")
    return number


def port(value: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535; got {value}")
    return number


def positive_int(value: str) -> int:
    """A whole number, 1 or more, such as a count of streams."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more; got {value}")
    return number


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {value}")
    return number
