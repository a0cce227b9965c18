"""``python -m handinger_stream``: the same as the ``handinger-stream`` command."""

from .cli import entry

entry()
