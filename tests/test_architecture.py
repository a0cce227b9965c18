"""The import rules of docs/architecture.md, checked against the code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "handinger_stream"

# module -> every package module it may import
ALLOWED: dict[str, set[str]] = {
    "sse": set(),
    "stall": set(),
    "models": set(),
    "partial_json": set(),
    "agent": set(),
    "events": {"models"},
    "errors": {"models"},
    "wire": {"errors", "events", "models", "sse"},
    "reducer": {"events", "models", "partial_json"},
    "cursor": {"sse", "wire"},
    "retry": {"errors"},
    "transport": {"errors", "_background"},
    "upload": {"errors"},
    "_background": set(),
    "arguments": set(),
}
# module -> package modules it must not import (the rest is allowed)
FORBIDDEN: dict[str, set[str]] = {
    "stream": {"client", "cli", "emulator", "sync"},
    "client": {"cli", "emulator", "sync", "dashboard"},
    "sync": {"cli", "emulator"},
    "emulator": {"client", "stream", "wire", "reducer", "sse", "transport"},
    # A recording is of bytes: the client's decoding has no part in it.
    "cassette": {"client", "stream", "sync", "transport", "sse", "wire", "reducer"},
    "pytest_plugin": {"cli", "sync"},
    "watch": {"cli", "dashboard", "emulator", "transport", "sse", "wire"},
    "otel": {"client", "stream", "watch", "cli", "dashboard", "emulator"},
    "dashboard": {"cli", "stream", "transport", "sse", "wire", "reducer"},
}
# What sits on top of the client (watch, and the telemetry and dashboard built on it):
# nothing below imports it, and the client names it only lazily (one method, and types).
ON_TOP = {"watch", "otel", "dashboard"}
ABOVE_THE_CLIENT = {"watch", "otel", "dashboard", "cli", "__init__", "client", "sync"}


def package_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("handinger_stream."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("handinger_stream."):
                    found.add(alias.name.split(".")[1])
    return found - {"__init__"}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_sans_io_parts_import_only_what_the_table_allows(module: str) -> None:
    assert package_imports(module) <= ALLOWED[module]


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_no_part_imports_what_sits_on_top_of_it(module: str) -> None:
    assert not package_imports(module) & FORBIDDEN[module]


def module_level_imports(module: str) -> set[str]:
    """Package modules imported when ``module`` is imported (not in functions or TYPE_CHECKING)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    "module",
    sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ABOVE_THE_CLIENT),
)
def test_nothing_below_the_client_imports_what_sits_on_it(module: str) -> None:
    assert not package_imports(module) & ON_TOP


def test_the_client_names_the_watch_only_lazily() -> None:
    assert "watch" in package_imports("client")  # the one method, and its types
    assert not module_level_imports("client") & ON_TOP


def test_the_checker_sees_imports() -> None:
    assert {"cursor", "reducer", "sse", "stall", "wire"} <= package_imports("stream")


def test_the_relay_sits_on_top_of_the_client() -> None:
    # Only the command line (and its watch command, for --redis) reaches up into the
    # relay, and the dashboard only when asked to; the client never does.
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem not in ("cli", "dashboard"):
            assert "relay" not in package_imports(path.stem), path.name
    assert "relay" in package_imports("cli")
    assert "relay" not in module_level_imports("dashboard")
    http = (PACKAGE / "relay" / "http.py").read_text(encoding="utf-8")
    assert "import aiohttp" not in http and "from aiohttp" not in http
