"""Every Python example in README.md and docs/*.md runs, unchanged, in a fresh project.

The convention for ```python blocks:

- A block runs as a script (``python example.py``) in an empty temporary
  folder, with ``HANDINGER_BASE_URL`` pointing at a running emulator and
  ``HANDINGER_API_KEY`` set. It must exit 0.
- A block that defines test functions (``def test_...`` at top level) is a
  test file: it runs with ``pytest`` in an empty folder, so with no
  configuration but pytest's defaults (pytest-asyncio in strict mode), and
  with ResourceWarnings as errors. Its tests must pass.
- A block that cannot run alone has ``<!-- fragment -->`` on the line just
  before its opening fence. It is only compiled (top-level ``await`` allowed).

Any other block that does not run fails here, saying how to mark it.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from handinger_stream.emulator import Emulator
from tests.conftest import API_KEY

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FRAGMENT = "<!-- fragment -->"
PYTHON = {"python", "py", "python3"}
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass(frozen=True)
class Example:
    file: str
    line: int  # of the opening fence, 1-based
    code: str
    fragment: bool

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def is_test_file(self) -> bool:
        tree = ast.parse(self.code)
        return any(
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test")
            for node in tree.body
        )


def extract(path: Path) -> list[Example]:
    """The fenced Python blocks of one Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if language in PYTHON:
            found.append(
                Example(
                    file=str(path.relative_to(ROOT)),
                    line=i + 1,
                    code="\n".join(lines[i + 1 : end]) + "\n",
                    fragment=i > 0 and lines[i - 1].strip() == FRAGMENT,
                )
            )
        i = end + 1
    return found


EXAMPLES = [example for path in DOCS for example in extract(path)]
RUNNABLE = [e for e in EXAMPLES if not e.fragment]
FRAGMENTS = [e for e in EXAMPLES if e.fragment]


def _environment(emulator: Emulator) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HANDINGER_", "PYTEST_")) and k != "PYTHONPATH"
    }
    env["HANDINGER_BASE_URL"] = emulator.base_url
    env["HANDINGER_API_KEY"] = API_KEY
    return env


def test_the_docs_have_examples_and_markers_sit_on_python_blocks() -> None:
    assert len(RUNNABLE) >= 10 and FRAGMENTS
    assert any(e.file == "docs/testing.md" and e.is_test_file for e in RUNNABLE)
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if line.strip() == FRAGMENT:
                following = _FENCE.match(lines[n + 1]) if n + 1 < len(lines) else None
                where = f"{path.relative_to(ROOT)}:{n + 1}"
                assert following and following.group(2).lower() in PYTHON, (
                    f"{where}: {FRAGMENT} must be the line just before a ```python fence"
                )


@pytest.mark.parametrize("example", FRAGMENTS, ids=[e.id for e in FRAGMENTS])
def test_fragments_compile(example: Example) -> None:
    compile(example.code, example.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


SCRIPTS = [e for e in RUNNABLE if not e.is_test_file]
TEST_FILES: dict[str, list[Example]] = {}
for _example in RUNNABLE:
    if _example.is_test_file:
        TEST_FILES.setdefault(_example.file, []).append(_example)


def _failure(what: str, result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{what} does not run on its own (exit {result.returncode}). If a block is not "
        f"meant to, put {FRAGMENT} on the line before its fence.\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


@pytest.mark.parametrize("example", SCRIPTS, ids=[e.id for e in SCRIPTS])
def test_script_example_runs_in_a_fresh_folder(
    example: Example, emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "example.py").write_text(example.code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=_environment(emulator),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, _failure(f"the example at {example.id}", result)


@pytest.mark.parametrize("doc", list(TEST_FILES))
def test_test_file_examples_pass_in_a_fresh_project(
    doc: str, emulator: Emulator, tmp_path: Path
) -> None:
    # One pytest process per document (its start-up is most of the cost); each
    # example is its own test module, named after the line it starts on.
    stem = re.sub(r"\W+", "_", Path(doc).stem)
    names = []
    for example in TEST_FILES[doc]:
        name = f"test_{stem}_line{example.line}.py"
        (tmp_path / name).write_text(example.code, encoding="utf-8")
        names.append(name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:hypothesispytest",  # a user's project has none; ours takes a second to load
            "-W",
            "error::ResourceWarning",
            "-W",
            "error::pytest.PytestUnraisableExceptionWarning",
            "-rA",
            *names,
        ],
        cwd=tmp_path,
        env=_environment(emulator),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, _failure(f"a test-file example of {doc}", result)
    for name in names:
        assert f"PASSED {name}::" in result.stdout, f"no test of {name} passed:\n{result.stdout}"
    assert "SKIPPED" not in result.stdout, result.stdout
