"""The ``handinger-stream`` command's exit codes: one meaning each, whatever the subcommand.

$ handinger-stream run "..." | head -3; echo "${PIPESTATUS[0]}"
141
"""

from __future__ import annotations

__all__ = [
    "EXIT_CLOSED_OUTPUT",
    "EXIT_CONNECTION",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROTOCOL",
    "EXIT_USAGE",
    "HELP",
]

EXIT_OK = 0  # completed: every worker it ran or watched did
EXIT_FAILED = 1  # a worker failed
EXIT_USAGE = 2  # a usage error: options, a prompt, an id that does not exist
EXIT_CONNECTION = 3  # a connection or authentication problem (a missing API key too)
EXIT_PROTOCOL = 4  # the server's stream could not be decoded
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_CLOSED_OUTPUT = 141  # 128 + SIGPIPE: what a shell reports for `yes | head`

HELP = """\
exit codes: 0 completed, 1 the worker failed, 2 usage error, 3 connection or
authentication problem, 4 the stream could not be decoded, 130 interrupted,
141 the output was closed early (e.g. piped into head)"""
