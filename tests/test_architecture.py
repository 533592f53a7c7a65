"""The house's rules, read from the code (docs/architecture.md, "Rooms"): the domain in events/
does no I/O, arrows between the rooms only point down, and no module imports itself back through
others. Everything is read from the modules' ASTs (every import counts: module level, inside a
function, under ``TYPE_CHECKING``), plus one real import of the domain with I/O libraries blocked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: libraries the pure domain must not import (top-level names)
IO_LIBRARIES = {"nats", "sqlite3", "pyroute2", "asyncio"}

#: room -> the rooms it may import (besides itself); the root ``netledger`` may import anything
ALLOWED = {
    "events": set(),
    "common": {"events"},
    "journal": {"events"},
    "service": {"events", "journal"},
    "projector": {"events", "journal", "common"},
    "executor": {"events", "journal", "common"},
    "replay": {"events", "journal", "projector", "common"},
    "ops": {"events", "journal", "common", "projector"},
}


@dataclass(frozen=True)
class Module:
    name: str  # netledger.events.codec
    room: str  # events (the package-dir folder's package, without "netledger.")
    path: Path
    is_package: bool

    def imports(self) -> Iterator[tuple[str, int]]:
        """(absolute module name, line) of every import, names imported from a module included
        (``from netledger.events import codec`` imports ``netledger.events.codec``)."""
        tree = ast.parse(self.path.read_text(), str(self.path))
        package = self.name if self.is_package else self.name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = parts[: len(parts) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                yield mod, node.lineno
                for alias in node.names:
                    yield f"{mod}.{alias.name}", node.lineno


def modules() -> dict[str, Module]:
    """Every module of the installed package, found through pyproject's package-dir mapping."""
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping: dict[str, str] = conf["tool"]["setuptools"]["package-dir"]
    out: dict[str, Module] = {}
    for package, folder in mapping.items():
        room = package.removeprefix("netledger.") if package != "netledger" else "netledger"
        for path in sorted((REPO / folder).glob("*.py")):
            init = path.stem == "__init__"
            name = package if init else f"{package}.{path.stem}"
            out[name] = Module(name, room, path, init)
    return out


def room_of(name: str, mods: dict[str, Module]) -> str | None:
    """The room of a module name of this package, or None (a library)."""
    while name:
        if name in mods:
            return mods[name].room
        name = name.rpartition(".")[0]
    return None


def test_every_room_has_rules() -> None:
    rooms = {m.room for m in modules().values()}
    assert rooms - {"netledger"} == set(ALLOWED), "a room without rules in ALLOWED (and the docs)"


def test_events_imports_no_io_library() -> None:
    """events/ is the pure domain: no nats, sqlite3, pyroute2 or asyncio."""
    bad = [
        f"{m.path.relative_to(REPO)}:{line}: {name}"
        for m in modules().values()
        if m.room == "events"
        for name, line in m.imports()
        if name.split(".")[0] in IO_LIBRARIES
    ]
    assert not bad, "I/O imported by the pure domain:\n" + "\n".join(sorted(set(bad)))


def test_events_imports_with_io_libraries_blocked() -> None:
    """The same, checked by importing every events module in a fresh interpreter where the I/O
    libraries cannot be imported (an import hidden from the AST walk would fail here)."""
    names = sorted(n for n, m in modules().items() if m.room == "events")
    blocked = sorted(IO_LIBRARIES)
    code = f"""
import importlib, importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} imported while the domain loads")
        return None
for b in BLOCKED:
    for loaded in [m for m in sys.modules if m.split(".")[0] == b]:
        del sys.modules[loaded]
sys.meta_path.insert(0, Block())
for name in {names!r}:
    importlib.import_module(name)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_arrows_point_down(room: str) -> None:
    """A room imports only the rooms below it; nothing but the root imports the root."""
    mods = modules()
    bad = []
    for m in mods.values():
        if m.room != room:
            continue
        for name, line in m.imports():
            target = room_of(name, mods)
            if target is not None and target != room and target not in ALLOWED[room]:
                bad.append(f"{m.path.relative_to(REPO)}:{line}: {name} ({room} -> {target})")
    assert not bad, "imports pointing up or sideways:\n" + "\n".join(sorted(set(bad)))


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for m in mods.values():
        graph[m.name] = {n for n, _ in m.imports() if n in mods and n != m.name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    """The check below can fail: a two-module and a three-module cycle are both found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c", "a"}, "f": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b"], ["c", "d", "e"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 100, "the package's modules were not found"
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)
