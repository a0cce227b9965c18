"""The ``handinger-stream`` command's exit codes: one meaning each, whatever the subcommand.

$ handinger-stream run "..." | head -3; echo "${PIPESTATUS[0]}"
141
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

__all__ = [
    "EXIT_CLOSED_OUTPUT",
    "EXIT_CONNECTION",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROTOCOL",
    "EXIT_USAGE",
    "HELP",
    "Stopping",
]

EXIT_OK = 0  # completed: every worker it ran or watched did
EXIT_FAILED = 1  # a worker failed, or ended without completing (aborted, incomplete)
EXIT_USAGE = 2  # a usage error: options, a prompt, an id that does not exist
EXIT_CONNECTION = 3  # a connection or authentication problem (a missing API key too)
EXIT_PROTOCOL = 4  # the server's stream could not be decoded
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_CLOSED_OUTPUT = 141  # 128 + SIGPIPE: what a shell reports for `yes | head`

HELP = """\
exit codes: 0 completed (a server stopped by SIGTERM too), 1 the worker failed
or did not complete, 2 usage error, 3 connection or authentication problem,
4 the stream could not be decoded, 130 interrupted (Ctrl-C), 141 the output
was closed early (e.g. piped into head)"""


class Stopping:
    """How a server subcommand (``serve``, ``relay``, ``webhooks listen``) waits to be
    stopped: SIGINT (Ctrl-C) and SIGTERM both stop it cleanly, at once; :meth:`wait`
    answers the exit code, 130 for Ctrl-C as everywhere else, 0 for SIGTERM (a service
    manager's ordinary stop).

        stopping = Stopping()      # on the running loop, before saying it serves
        code = await stopping.wait()
    """

    def __init__(self) -> None:
        self._stopped = asyncio.Event()
        self.code = EXIT_OK
        loop = asyncio.get_running_loop()
        # Installed even where SIGINT was ignored (a shell's background job): a stop
        # asked for is a stop, and the server's clean-up (its uploads) must run.
        for signum, code in ((signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, EXIT_OK)):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._stop, code)

    def _stop(self, code: int) -> None:
        if not self._stopped.is_set():
            self.code = code
            self._stopped.set()

    async def wait(self) -> int:
        """Until SIGINT or SIGTERM; the exit code."""
        await self._stopped.wait()
        return self.code
