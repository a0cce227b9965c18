"""docs/architecture.md, checked against the code: the map must stay true.

The document drives every check. Its "Layers" table orders the parts
(folders, and modules at the top level) bottom to top, with a rule per part;
its "Modules" table has one row per module, bottom to top, with a rule per
module. A rule cell is ``nothing``, ``anything below``, or clauses joined by
``;``: ``only`` / ``hints`` / ``never`` / ``re-exports`` followed by
backticked items. An item is a folder (``types/``), a module
(``protocol/sse.py``) or, in ``never``, an outside package (``aiohttp``).
``hints`` items may be imported under ``if TYPE_CHECKING:`` only.

Imports are counted wherever they are written: at module level, inside a
function, and under ``if TYPE_CHECKING:``. An import of ``a/b.py`` is an
import of that module; for cycles it also runs ``a/__init__.py`` first,
when the importer is outside ``a/``.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "handinger_stream"
DOC = ROOT / "docs" / "architecture.md"
NAME = PACKAGE.name

MODULE_LEVEL = "at module level"
IN_FUNCTION = "inside a function"
TYPE_CHECKING_ONLY = "under TYPE_CHECKING"


# --- the code: modules and their imports -------------------------------------------


@dataclass(frozen=True)
class Import:
    """One module importing another (``outside``: a package other than ours)."""

    source: str
    target: str
    line: int
    kind: str
    outside: bool = False
    missing: bool = False

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target} ({self.kind})"


def part_of(module: str) -> str:
    """The folder a module lives in (``client/``), or the module itself at the top."""
    head, slash, _ = module.partition("/")
    return head + "/" if slash else module


def dotted(module: str) -> str:
    """``client/stream.py`` -> ``client.stream``; a folder's ``__init__.py`` is the folder."""
    name = module.removesuffix(".py").removesuffix("__init__").rstrip("/")
    return name.replace("/", ".")


@cache
def modules() -> tuple[str, ...]:
    """Every module of the package, as a path inside it."""
    return tuple(
        sorted(
            path.relative_to(PACKAGE).as_posix()
            for path in PACKAGE.rglob("*.py")
            if "__pycache__" not in path.parts
        )
    )


@cache
def by_dotted() -> Mapping[str, str]:
    return {dotted(module): module for module in modules()}


@cache
def tree_of(module: str) -> ast.Module:
    return ast.parse((PACKAGE / module).read_text(encoding="utf-8"), module)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement under ``node``, with where it is written."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, kind
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _import_nodes(child, kind if kind == TYPE_CHECKING_ONLY else IN_FUNCTION)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _import_nodes(ast.Module([stmt], []), TYPE_CHECKING_ONLY)
            for stmt in child.orelse:
                yield from _import_nodes(ast.Module([stmt], []), kind)
        else:
            yield from _import_nodes(child, kind)


def _join(*names: str) -> str:
    return ".".join(name for name in names if name)


def from_base(module: str, node: ast.ImportFrom) -> str | None:
    """The dotted module ``from X import ...`` names in ``module``; None for another package."""
    if node.level:
        own = dotted(module)
        package = own if module.endswith("__init__.py") else own.rpartition(".")[0]
        parts = package.split(".") if package else []
        if node.level - 1 > len(parts):
            raise AssertionError(f"{module}:{node.lineno}: a relative import above the package")
        return _join(*parts[: len(parts) - (node.level - 1)], node.module or "")
    if node.module == NAME or (node.module or "").startswith(NAME + "."):
        return (node.module or "")[len(NAME) :].lstrip(".")
    return None


def from_target(base: str, name: str, known: Mapping[str, str]) -> str:
    """What ``from base import name`` imports: the submodule ``name``, or ``base`` itself."""
    return _join(base, name) if _join(base, name) in known else base


def imports_in(module: str, tree: ast.Module, known: Mapping[str, str]) -> list[Import]:
    """The imports ``tree`` (the text of ``module``) makes; ``known``: dotted name -> module."""
    found: list[Import] = []

    def ours(name: str, node: ast.stmt, kind: str) -> None:
        if name in known:
            found.append(Import(module, known[name], node.lineno, kind))
        else:  # a module that does not exist (any more): kept apart, and reported
            found.append(Import(module, name or NAME, node.lineno, kind, missing=True))

    for node, kind in _import_nodes(tree, MODULE_LEVEL):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == NAME or alias.name.startswith(NAME + "."):
                    ours(alias.name[len(NAME) :].lstrip("."), node, kind)
                else:
                    found.append(Import(module, alias.name.split(".")[0], node.lineno, kind, True))
            continue
        base = from_base(module, node)
        if base is None:
            if node.module != "__future__":
                top = (node.module or "").split(".")[0]
                found.append(Import(module, top, node.lineno, kind, True))
            continue
        for target in sorted({from_target(base, alias.name, known) for alias in node.names}):
            ours(target, node, kind)
    return found


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    return tuple(imports_in(module, tree_of(module), by_dotted()))


def package_imports(module: str) -> list[Import]:
    return [imp for imp in imports_of(module) if not imp.outside and not imp.missing]


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that ends where it starts) per strongly connected group."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles: list[list[str]] = []
    for group in groups:
        start = min(group)
        # Breadth first from start, inside the group, back to start: a shortest cycle.
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            following: list[str] = []
            for node in frontier:
                for succ in sorted(graph.get(node, set()) & group):
                    if succ not in previous:
                        previous[succ] = node
                        following.append(succ)
            frontier = following
        path = [start]
        node = previous[start]
        while node != start:
            path.append(node)
            node = previous[node]
        path.append(start)
        cycles.append(path[::-1])
    return cycles


# --- the document: the two tables and their rules ---------------------------------


@dataclass(frozen=True)
class Rule:
    """What a module (or a part, outside itself) may import."""

    text: str
    only: frozenset[str] | None = None
    hints: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()
    reexports: str | None = None

    def broken_by(self, imp: Import, *, inside: str | None = None) -> str | None:
        """Why ``imp`` breaks this rule, or None; imports within ``inside`` are not judged."""
        if inside is not None and not imp.outside and part_of(imp.target) == inside:
            return None
        if any(covers(item, imp) for item in self.never):
            return "never"
        if self.only is None or imp.outside:
            return None
        if any(covers(item, imp) for item in self.only):
            return None
        if any(covers(item, imp) for item in self.hints):
            return None if imp.kind == TYPE_CHECKING_ONLY else "hints only (under TYPE_CHECKING)"
        return "not among what it may import"


ITEM = re.compile(r"`([^`]+)`")
KEYWORDS = ("only", "hints", "never", "re-exports")


def covers(item: str, imp: Import) -> bool:
    if item.endswith("/"):
        return not imp.outside and imp.target.startswith(item)
    if item.endswith(".py"):
        return not imp.outside and imp.target == item
    return imp.outside and imp.target == item


def parse_rule(text: str) -> Rule:
    """A rule cell, strictly: anything the grammar does not know is an error."""
    text = text.strip()
    if text == "anything below":
        return Rule(text)
    if text == "nothing":
        return Rule(text, only=frozenset())
    only: set[str] | None = None
    hints: set[str] = set()
    never: set[str] = set()
    reexports: str | None = None
    for clause in text.split(";"):
        keyword, _, rest = clause.strip().partition(" ")
        items = ITEM.findall(rest)
        leftover = ITEM.sub("", rest).replace(",", " ").split()
        if keyword not in KEYWORDS or not items or any(word != "and" for word in leftover):
            raise ValueError(f"cannot read the rule {text!r} (at {clause.strip()!r})")
        for item in items:
            if keyword != "never" and not item.endswith(("/", ".py")):
                raise ValueError(f"{item!r} in {text!r}: only 'never' names outside packages")
        if keyword == "re-exports":
            if len(items) != 1:
                raise ValueError(f"{text!r}: a module re-exports one module")
            reexports = items[0]
            only = (only or set()) | {items[0]}
        elif keyword == "only":
            only = (only or set()) | set(items)
        elif keyword == "hints":
            only = only or set()
            hints |= set(items)
        else:
            never |= set(items)
    return Rule(
        text,
        None if only is None else frozenset(only),
        frozenset(hints),
        frozenset(never),
        reexports,
    )


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/architecture.md has no section '## {title}'"
    return match.group(1)


def table(text: str) -> list[list[str]]:
    """The rows of the first table in ``text``, without its head."""
    rows = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    assert len(rows) > 2, "expected a table"
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


@dataclass(frozen=True)
class Layer:
    rank: int
    rule: Rule


@cache
def layers() -> Mapping[str, Layer]:
    """Part -> its layer, from the "Layers" table (columns: layer, parts, rule)."""
    found: dict[str, Layer] = {}
    for rank_cell, parts_cell, rule_cell in table(section(doc_text(), "Layers")):
        rule = parse_rule(rule_cell)
        for part in ITEM.findall(parts_cell):
            assert part not in found, f"the part {part} is in two layers"
            found[part] = Layer(int(rank_cell), rule)
    return found


@cache
def rows() -> tuple[tuple[str, Rule], ...]:
    """The "Modules" table, in order (columns: module, what it knows, rule)."""
    found: list[tuple[str, Rule]] = []
    for cells in table(section(doc_text(), "Modules")):
        names = ITEM.findall(cells[0])
        assert len(names) == 1 and len(cells) == 3, f"one module per row, three cells: {cells}"
        found.append((names[0], parse_rule(cells[2])))
    return tuple(found)


def row_rule(module: str) -> Rule | None:
    """The rule of the module's row; None when it has none (one test reports that)."""
    return dict(rows()).get(module)


# --- the checks --------------------------------------------------------------------


def test_every_import_of_the_package_names_a_module() -> None:
    missing = [str(imp) for module in modules() for imp in imports_of(module) if imp.missing]
    assert not missing, f"imports of modules that do not exist: {missing}"


def test_every_module_has_a_row_and_every_row_a_module() -> None:
    named = [module for module, _ in rows()]
    twice = sorted({module for module in named if named.count(module) > 1})
    unlisted = sorted(set(modules()) - set(named))
    stale = sorted(set(named) - set(modules()))
    assert not twice, f"rows given twice: {twice}"
    assert not unlisted, f"modules without a row: {unlisted}"
    assert not stale, f"rows without a module: {stale}"


def test_every_part_has_a_layer_and_every_layer_a_part() -> None:
    parts = {part_of(module) for module in modules()}
    unlisted = sorted(parts - set(layers()))
    stale = sorted(set(layers()) - parts)
    assert not unlisted, f"parts the Layers table lacks: {unlisted}"
    assert not stale, f"parts in the Layers table that do not exist: {stale}"


def test_the_table_reads_bottom_to_top() -> None:
    """Rows grouped by part, parts in the order of their layers."""
    seen: list[str] = []
    for module, _ in rows():
        part = part_of(module)
        if seen and seen[-1] != part:
            assert part not in seen, f"{module}: the rows of {part} are not together"
            previous, layer = layers().get(seen[-1]), layers().get(part)
            if previous is not None and layer is not None:  # else another test reports it
                assert layer.rank >= previous.rank, f"{module}: a lower layer after {seen[-1]}"
        if not seen or seen[-1] != part:
            seen.append(part)


@pytest.mark.parametrize("module", modules())
def test_a_module_imports_only_rows_above_it(module: str) -> None:
    """Inside a part too, each row may import only the rows before it."""
    if row_rule(module) is None:
        pytest.skip(f"{module} has no row (test_every_module_has_a_row_and_every_row_a_module)")
    order = [name for name, _ in rows()]
    position = order.index(module)
    late = [
        str(imp)
        for imp in package_imports(module)
        if imp.target in order and order.index(imp.target) >= position
    ]
    assert not late, (
        f"{late}: imports of modules listed at or after this row (move a row, or the import)"
    )


@pytest.mark.parametrize("module", modules())
def test_every_import_rule_holds(module: str) -> None:
    """The module's row, and its part's layer, each allow every import it makes."""
    rule = row_rule(module) or Rule("anything below")
    part = part_of(module)
    part_rule = layers()[part].rule if part in layers() else Rule("anything below")
    broken: list[str] = []
    for imp in imports_of(module):
        if imp.missing:
            continue
        if why := rule.broken_by(imp):
            broken.append(f"{imp}: {why}, by the row's rule '{rule.text}'")
        if why := part_rule.broken_by(imp, inside=part):
            broken.append(f"{imp}: {why}, by {part}'s rule '{part_rule.text}'")
    assert not broken, "\n".join(broken)


def test_no_import_goes_up_a_layer() -> None:
    """A part imports only lower layers; parts of one layer are independent."""
    broken: list[str] = []
    for module in modules():
        for imp in package_imports(module):
            source, target = part_of(module), part_of(imp.target)
            if source == target or source not in layers() or target not in layers():
                continue
            if layers()[target].rank == layers()[source].rank:
                broken.append(
                    f"{imp}: {source} and {target} share a layer, so neither imports the other"
                )
            elif layers()[target].rank > layers()[source].rank:
                broken.append(f"{imp}: {target} is above {source}")
    assert not broken, "\n".join(broken)


def with_folders(source: str, target: str) -> set[str]:
    """What importing ``target`` from ``source`` runs: the target, and first the
    ``__init__.py`` of each folder around it that ``source`` is not in (the
    package's own ``__init__`` aside: everything starts there)."""
    found = {target}
    folders = target.split("/")[:-1]
    for depth in range(1, len(folders) + 1):
        folder = "/".join(folders[:depth]) + "/"
        if not source.startswith(folder):
            found.add(folder + "__init__.py")
    return found


def test_no_import_cycle() -> None:
    graph = {
        module: {run for imp in package_imports(module) for run in with_folders(module, imp.target)}
        for module in modules()
    }
    graph = {module: targets - {module} for module, targets in graph.items()}
    cycles = [" -> ".join(cycle) for cycle in find_cycles(graph)]
    assert not cycles, "import cycles (every kind of import counts):\n" + "\n".join(cycles)


# What the document names in backticks: dotted names, and bare class-like names.
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?")
CLASS_LIKE = re.compile(r"_?[A-Z]\w*[a-z]\w*")
PRIVATE = re.compile(r"_[a-z]\w*")
FILE_ENDINGS = {"py", "md", "txt", "toml", "json", "png", "html", "js", "css", "lua"}


def named_in_doc(text: str) -> list[str]:
    """Backticked names a reader could look up in the code (code blocks aside)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    names: list[str] = []
    for span in re.findall(r"`([^`\n]+)`", prose):
        if DOTTED.fullmatch(span) and span.removesuffix("()").rsplit(".", 1)[1] not in FILE_ENDINGS:
            names.append(span)
        elif CLASS_LIKE.fullmatch(span) and not hasattr(builtins, span):
            names.append(span)
        elif PRIVATE.fullmatch(span) and not span.startswith("__"):
            names.append(span)
    return sorted(set(names))


@dataclass(frozen=True)
class Index:
    """Names defined at the top of each module, and every class by its name."""

    defined: Mapping[str, Mapping[str, ast.AST]]
    classes: Mapping[str, tuple[ast.ClassDef, ...]]


@cache
def index() -> Index:
    defined: dict[str, dict[str, ast.AST]] = {}
    classes: dict[str, list[ast.ClassDef]] = {}
    for module in modules():
        names: dict[str, ast.AST] = {}
        for node in tree_of(module).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                names[node.name] = node
                if isinstance(node, ast.ClassDef):
                    classes.setdefault(node.name, []).append(node)
            for target in _assigned(node):
                names[target] = node
        defined[module] = names
    return Index(defined, {name: tuple(found) for name, found in classes.items()})


def _imported(module: str, name: str) -> list[tuple[str, str]]:
    """Where ``module`` takes ``name`` from at run time: (module, name there), ``*`` included."""
    found: list[tuple[str, str]] = []
    for node, kind in _import_nodes(tree_of(module), MODULE_LEVEL):
        if kind != MODULE_LEVEL or not isinstance(node, ast.ImportFrom):
            continue
        base = from_base(module, node)
        if base is None:
            continue
        for alias in node.names:
            if alias.name == "*" or (alias.asname or alias.name) == name:
                target = from_target(base, alias.name, by_dotted())
                if target not in by_dotted():
                    continue
                if target != base:  # the name is a submodule: what follows is inside it
                    found.append((by_dotted()[target], ""))
                else:
                    found.append((by_dotted()[target], name if alias.name == "*" else alias.name))
    return found


def _assigned(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _members(cls: ast.ClassDef) -> dict[str, ast.AST]:
    """A class's own attributes: methods, class-level names, and ``self.x`` in its methods."""
    members: dict[str, ast.AST] = {}
    for node in cls.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            members[node.name] = node
        for name in _assigned(node):
            members[name] = node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Assign):
                    targets = sub.targets
                elif isinstance(sub, (ast.AnnAssign, ast.AugAssign)):
                    targets = [sub.target]
                else:
                    continue
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                    ):
                        members.setdefault(target.attr, sub)
    return members


def _in_class(cls: ast.ClassDef, rest: list[str], seen: frozenset[str] = frozenset()) -> bool:
    if not rest:
        return True
    member = _members(cls).get(rest[0])
    if member is not None:
        return len(rest) == 1 or (isinstance(member, ast.ClassDef) and _in_class(member, rest[1:]))
    for base in cls.bases:
        name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)
        if isinstance(name, str) and name not in seen:
            for parent in index().classes.get(name, ()):
                if _in_class(parent, rest, seen | {cls.name}):
                    return True
    return False


def _in_module(module: str, rest: list[str], depth: int = 0) -> bool:
    if not rest:
        return True
    node = index().defined[module].get(rest[0])
    if isinstance(node, ast.ClassDef):
        return _in_class(node, rest[1:])
    if node is not None:
        return len(rest) == 1
    if depth > 5:
        return False
    for source, there in _imported(module, rest[0]):
        if source != module and _in_module(
            source, [there, *rest[1:]] if there else rest[1:], depth + 1
        ):
            return True
    return False


def _module_named(name: str) -> str | None:
    """A module by its dotted path, or by a unique last part (``wire`` for ``protocol/wire.py``)."""
    if name in by_dotted():
        return by_dotted()[name]
    ending = [m for d, m in by_dotted().items() if d.endswith("." + name)]
    return ending[0] if len(ending) == 1 else None


def exists(name: str) -> bool:
    """Whether the code defines what ``name`` names (``Class.method``, ``module.function``...)."""
    parts = name.removesuffix("()").split(".")
    if parts[0] == NAME:
        parts = parts[1:]
        if not parts:
            return True
    for end in range(len(parts), 0, -1):
        module = _module_named(".".join(parts[:end]))
        if module is not None:
            return _in_module(module, parts[end:])
    if len(parts) == 1:
        return any(parts[0] in names for names in index().defined.values())
    return any(_in_class(cls, parts[1:]) for cls in index().classes.get(parts[0], ()))


def test_every_name_the_document_gives_exists() -> None:
    names = named_in_doc(doc_text())
    assert len(names) > 20, "the checker found too few names to be reading the document"
    unknown = [name for name in names if not exists(name)]
    assert not unknown, f"named in the document, not in the code: {unknown}"


def test_the_modules_at_the_top_only_re_export() -> None:
    """A documented import path at the top holds re-exports only; the code lives in its part."""
    public = [m for m in modules() if "/" not in m and not m.startswith("_") and m != "errors.py"]
    plain = [m for m in public if (rule := row_rule(m)) is None or rule.reexports is None]
    assert not plain, (
        f"{plain}: public modules at the top must be re-exports (rule: re-exports `x.py`)"
    )
    for module, rule in rows():
        if rule.reexports is None or module not in modules():
            continue
        target = rule.reexports
        for node in tree_of(module).body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
            reexport = (
                isinstance(node, ast.ImportFrom)
                and {imp.target for imp in imports_of(module) if imp.line == node.lineno}
                == {target}
                and all(alias.name == "*" or alias.asname == alias.name for alias in node.names)
            )
            assert docstring or future or reexport, (
                f"{module}:{node.lineno}: not a re-export of {target}"
            )
        if any(source == target for source, _ in _imported(module, "__all__")):
            assert "__all__" in index().defined[target], (
                f"{target}: a * re-export needs its __all__"
            )


# --- the checker, checked: each check fails on a violation ------------------------


def _imports(source: str, module: str = "client/x.py") -> list[str]:
    known = {"": "__init__.py", "client": "client/__init__.py", "client.x": module}
    known |= {
        "client.y": "client/y.py",
        "types": "types/__init__.py",
        "types.worker": "types/worker.py",
    }
    return [str(imp) for imp in imports_in(module, ast.parse(source), known)]


def test_the_finder_sees_every_kind_of_import() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .y import thing\n"
        "if TYPE_CHECKING:\n"
        "    from ..types.worker import Worker\n"
        "def f():\n"
        "    from .. import __version__\n"
        "    import aiohttp.web\n"
        "from . import y\n"
    )
    assert _imports(source) == [
        "client/x.py:1 imports typing (at module level)",
        "client/x.py:2 imports client/y.py (at module level)",
        "client/x.py:4 imports types/worker.py (under TYPE_CHECKING)",
        "client/x.py:6 imports __init__.py (inside a function)",
        "client/x.py:7 imports aiohttp (inside a function)",
        "client/x.py:8 imports client/y.py (at module level)",
    ]


def test_a_cycle_is_reported_with_its_path() -> None:
    graph = {"a.py": {"b.py"}, "b.py": {"c.py", "d.py"}, "c.py": {"a.py"}, "d.py": set()}
    assert find_cycles(graph) == [["a.py", "b.py", "c.py", "a.py"]]
    assert find_cycles({"a.py": {"b.py"}, "b.py": set()}) == []
    assert with_folders("cli/run.py", "relay/core.py") == {"relay/core.py", "relay/__init__.py"}
    assert with_folders("client/base.py", "client/resources/tasks.py") == {
        "client/resources/tasks.py",
        "client/resources/__init__.py",
    }


def test_rules_are_read_strictly_and_judge_imports() -> None:
    rule = parse_rule("only `types/`, `errors.py`; hints `client/`; never `aiohttp`")
    judge = [
        Import("protocol/x.py", "types/worker.py", 1, MODULE_LEVEL),
        Import("protocol/x.py", "client/base.py", 2, MODULE_LEVEL),
        Import("protocol/x.py", "client/base.py", 3, TYPE_CHECKING_ONLY),
        Import("protocol/x.py", "aiohttp", 4, IN_FUNCTION, outside=True),
        Import("protocol/x.py", "relay/core.py", 5, IN_FUNCTION),
        Import("protocol/x.py", "protocol/y.py", 6, MODULE_LEVEL),
    ]
    assert [rule.broken_by(imp) is not None for imp in judge] == [
        False,
        True,
        False,
        True,
        True,
        True,
    ]
    assert rule.broken_by(judge[-1], inside="protocol/") is None
    assert parse_rule("nothing").broken_by(judge[0]) is not None
    assert parse_rule("re-exports `client/telemetry.py`").reexports == "client/telemetry.py"
    for wrong in ("only types/", "mostly `types/`", "only `types/` and more", "only `aiohttp`"):
        with pytest.raises(ValueError):
            parse_rule(wrong)


def test_names_are_found_in_the_code() -> None:
    assert exists("RetryPolicy.call") and exists("handinger_stream.relay")
    assert not exists("RetryPolicy.no_such_method") and not exists("NoSuchClass")
    text = "`A.b` and `Thing`, not `x`, `docs/relay.md`, `errors.py` or\n```\n`C.d`\n```\n"
    assert named_in_doc(text) == ["A.b", "Thing"]
