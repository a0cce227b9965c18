"""The documented import path ``handinger_stream.cassette``: the code lives in
``handinger_stream.testing.cassette``."""

from .testing.cassette import *  # noqa: F403
from .testing.cassette import __all__ as __all__
