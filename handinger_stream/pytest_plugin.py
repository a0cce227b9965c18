"""The documented import path ``handinger_stream.pytest_plugin``: the code lives in
``handinger_stream.testing.pytest_plugin``."""

from .testing.pytest_plugin import *  # noqa: F403
from .testing.pytest_plugin import __all__ as __all__
