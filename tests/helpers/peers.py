"""Official SDKs that cannot share this suite's environment, each in a venv of its own.

``handinger==0.18.0`` (today's generation) conflicts with ``handinger==0.3.0``
(the seed's, installed in ``.venv`` by the ``bench`` extra): the first use of
:func:`peer_python` makes ``.venv/peers/handinger-0.18.0`` with the standard
library's ``venv`` and installs the requirement from the package index with
pip, as CI does. A stamp file written last says the venv is whole: later runs
(and other processes, behind a lock) use it as it is. A venv made for another
Python, or for another requirement, is made again.

It is made here rather than by ``scripts/test`` so that running pytest alone
works, and so that a run that leaves the conformance tests out (``-m "not
slow"``) never pays for it.

:func:`run_driver` runs ``tests/helpers/sdk_driver.py`` with a peer's Python.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / ".venv" / "peers"
DRIVER = Path(__file__).resolve().with_name("sdk_driver.py")
STAMP = "peer.stamp"

__all__ = ["PEERS", "PeerError", "peer_python", "run_driver"]


class PeerError(RuntimeError):
    """A peer venv could not be made, or its driver failed; the message has pip's or its output."""


def _stamp(requirement: str) -> str:
    version = ".".join(map(str, sys.version_info[:3]))
    return f"{requirement} on Python {version} ({sys.base_prefix})"


def peer_python(requirement: str, *, timeout: float = 600) -> Path:
    """The Python of a venv holding ``requirement`` (``"handinger==0.18.0"``), made once.

    Idempotent and safe across processes: the venv is used when its stamp
    matches; otherwise it is made again, under a lock, from scratch.
    """
    home = PEERS / requirement.replace("==", "-")
    python = home / "bin" / "python"
    stamp = home / STAMP
    wanted = _stamp(requirement)

    def ready() -> bool:
        return python.exists() and stamp.is_file() and stamp.read_text().startswith(wanted + "\n")

    if ready():
        return python
    PEERS.mkdir(parents=True, exist_ok=True)
    with open(PEERS / f"{home.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be making it right now
        if ready():
            return python
        shutil.rmtree(home, ignore_errors=True)
        started = time.monotonic()
        _run([sys.executable, "-m", "venv", str(home)], timeout)
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
            ],
            timeout,
        )
        frozen = _run([str(python), "-m", "pip", "freeze", "--disable-pip-version-check"], timeout)
        took = time.monotonic() - started
        stamp.write_text(f"{wanted}\nmade in {took:.1f} s\n{frozen}")
    return python


def _run(command: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"{' '.join(command)}: no end within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise PeerError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def run_driver(
    python: Path,
    base_url: str,
    api_key: str,
    steps: list[dict[str, Any]],
    saved: dict[str, Any] | None = None,
    *,
    timeout: float = 120,
) -> dict[str, Any]:
    """``sdk_driver.drive(...)`` in the peer's Python: its version, records and saved dumps."""
    given = json.dumps(
        {"base_url": base_url, "api_key": api_key, "steps": steps, "saved": saved or {}}
    )
    try:
        done = subprocess.run(
            [str(python), str(DRIVER)],
            input=given,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"the driver in {python} did not end within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise PeerError(f"the driver in {python} failed ({done.returncode}):\n{done.stderr}")
    out: dict[str, Any] = json.loads(done.stdout)
    return out
