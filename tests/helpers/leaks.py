"""What the tests count to show that nothing was left behind: file descriptors, TCP
connections, and the sync client's loop threads, as the OS and the interpreter list them.

>>> connections_to(9) == 0  # nothing of ours talks to the discard port
True
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable

import anyio

from handinger_stream.client.sync_base import THREAD_NAME


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def connections_to(port: int) -> int:
    """This process's established TCP connections to ``port``, as the OS lists them.

    (The emulator runs in this process too: its own ends have ``port`` as
    their local port, not their remote one, so they are not counted.)
    """
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                established = fields[3] == "01"
                if remote_port == port and established and fields[9] in ours:
                    count += 1
    return count


async def settle(predicate: Callable[[], bool], ticks: int = 500) -> bool:
    """Let the loop run (and the server thread close its ends) until ``predicate`` holds."""
    for _ in range(ticks):
        if predicate():
            return True
        await anyio.sleep(0.01)
    return predicate()


def loop_threads() -> list[threading.Thread]:
    """The sync clients' loop threads alive now."""
    gc.collect()  # a client another test dropped ends its thread when collected
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]
