"""Node.js for the tests that ask a JavaScript implementation for the right answer.

npm packages go into a cache directory outside the repository, installed once
per pinned version; without ``node`` and ``npm`` the tests skip, saying how
to run them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "handinger-stream"


def require_node() -> None:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed: install Node.js 20 or newer to run this test")


def _npm(args: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(
        ["npm", *args, "--no-audit", "--no-fund", "--silent"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"npm could not install {what}: {result.stderr[-500:]}")


def npm_package(spec: str) -> Path:
    """A directory whose ``node_modules`` holds ``spec`` (e.g. ``"pkg@1.2.3"``)."""
    require_node()
    target = CACHE / spec.replace("/", "_")
    if not (target / "node_modules").exists():
        target.mkdir(parents=True, exist_ok=True)
        _npm(["install", "--prefix", str(target), spec], target, spec)
    return target


def npm_project(source: Path) -> Path:
    """A copy of the npm project at ``source`` with its locked dependencies installed.

    The copy lives in the cache, keyed by ``package-lock.json``; its scripts are
    refreshed on every call so that edits in the repository take effect.
    """
    require_node()
    lock = (source / "package-lock.json").read_bytes()
    target = CACHE / f"{source.name}-{hashlib.sha256(lock).hexdigest()[:12]}"
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix in (".json", ".mjs", ".js"):
            shutil.copyfile(path, target / path.name)
    if not (target / "node_modules" / ".package-lock.json").exists():
        _npm(["ci"], target, f"the locked dependencies of {source}")
    return target
