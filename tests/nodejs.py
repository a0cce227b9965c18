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


# `ai` 7 declares Node >= 22; the machines carry Node 20. The npm registry ships
# Node itself as a per-platform package (what the `node` package's installer
# would fetch), so a pinned Node 22 comes from there, like every other pin here.
NODE22 = "22.23.3"
_NODE_PLATFORMS = {("Linux", "x86_64"): "linux-x64", ("Linux", "aarch64"): "linux-arm64"}


def node22() -> str:
    """The path of a Node.js 22 binary: the machine's own if it is 22 or newer,
    else the npm registry's ``node-<platform>@NODE22``, installed once in the cache."""
    require_node()
    own = shutil.which("node")
    assert own is not None
    version = subprocess.run([own, "--version"], capture_output=True, text=True, timeout=30)
    if version.stdout.startswith("v") and int(version.stdout[1:].split(".")[0]) >= 22:
        return own
    platform_ = _NODE_PLATFORMS.get((os.uname().sysname, os.uname().machine))
    if platform_ is None:
        pytest.skip(f"no Node 22 package for {os.uname().sysname} {os.uname().machine}: install Node 22")
    binary = npm_package(f"node-{platform_}@{NODE22}") / "node_modules" / f"node-{platform_}" / "bin" / "node"
    if not binary.exists():
        pytest.fail(f"node-{platform_}@{NODE22} has no bin/node")
    return str(binary)
