"""Node.js for the tests that ask a JavaScript implementation for the right answer.

npm packages go into a cache directory outside the repository, installed once
per pinned version; without ``node`` and ``npm`` the tests skip, saying how
to run them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

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


def _package_json(source: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((source / "package.json").read_text("utf-8"))
    return manifest


def shared_scripts(source: Path) -> Path | None:
    """The folder of scripts the npm project at ``source`` shares with others, if any.

    One set of scripts run against two pinned versions of a package is written
    once, beside the projects that pin them: each project's ``package.json``
    names the folder (relative to itself) as ``"sharedScripts"``.
    """
    shared = _package_json(source).get("sharedScripts")
    return (source / shared).resolve() if isinstance(shared, str) else None


def npm_project(source: Path) -> Path:
    """A copy of the npm project at ``source`` with its locked dependencies installed.

    The copy lives in the cache, keyed by ``package-lock.json``; its scripts are
    refreshed on every call so that edits in the repository take effect. The
    scripts of its :func:`shared_scripts` folder are copied first, then its own
    (which win on a clash), all side by side, so that each resolves its imports
    in the project's ``node_modules``.
    """
    require_node()
    lock = (source / "package-lock.json").read_bytes()
    target = CACHE / f"{source.name}-{hashlib.sha256(lock).hexdigest()[:12]}"
    target.mkdir(parents=True, exist_ok=True)
    shared = shared_scripts(source)
    for folder in (source,) if shared is None else (shared, source):
        for path in folder.iterdir():
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
        pytest.skip(
            f"no Node 22 package for {os.uname().sysname} {os.uname().machine}: install Node 22"
        )
    binary = (
        npm_package(f"node-{platform_}@{NODE22}")
        / "node_modules"
        / f"node-{platform_}"
        / "bin"
        / "node"
    )
    if not binary.exists():
        pytest.fail(f"node-{platform_}@{NODE22} has no bin/node")
    return str(binary)


def node_for(source: Path) -> str:
    """The Node.js binary to run the npm project at ``source`` with: its ``package.json``
    says the oldest Node it runs on (``"engines": {"node": ">=N"}``), and one that old
    or newer is chosen, never the machine's older Node with an engines warning."""
    wanted = str(_package_json(source).get("engines", {}).get("node", ""))
    if wanted.startswith(">=") and int(wanted[2:].split(".")[0]) >= 22:
        return node22()
    require_node()
    return "node"
