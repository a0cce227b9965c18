"""The documented import path ``handinger_stream.otel``: the code lives in
``handinger_stream.client.telemetry``."""

from .client.telemetry import *  # noqa: F403
from .client.telemetry import __all__ as __all__
