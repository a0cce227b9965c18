"""The documented import path ``handinger_stream.emulator``: the code lives in
``handinger_stream.testing.emulator``."""

from .testing.emulator import *  # noqa: F403
from .testing.emulator import __all__ as __all__
