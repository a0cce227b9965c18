"""Regenerate the interop fixtures of one AI SDK major, or of both.

    .venv/bin/python -m tests.interop.regenerate              # both majors, every scenario
    .venv/bin/python -m tests.interop.regenerate ai7          # one major
    .venv/bin/python -m tests.interop.regenerate ai6 unicode  # only the scenarios named

The scripts are shared by the two projects, so they cannot run where they are
(``ai`` resolves from beside the importing file): each major's project is
copied, with its locked dependencies installed, into the cache as the tests
do (``tests/nodejs.py``), and ``generate.mjs`` runs there, under the Node its
``package.json`` asks for (Node 22 for ai 7), writing into ``<major>/fixtures``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.nodejs import node_for, npm_project

HERE = Path(__file__).parent
MAJORS = ("ai6", "ai7")


def regenerate(major: str, names: list[str]) -> None:
    source = HERE / major
    project = npm_project(source)
    subprocess.run(
        [node_for(source), "generate.mjs", str(source / "fixtures"), *names],
        cwd=project,
        check=True,
        timeout=600,
    )


def main(args: list[str]) -> int:
    majors = [args.pop(0)] if args and args[0] in MAJORS else list(MAJORS)
    for major in majors:
        print(f"-- {major}", flush=True)
        regenerate(major, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
