"""The shape of the code, checked by reading the source with `ast`.

Nothing here imports the modules it checks, so a module that fails to import (or
imports something lazily) cannot hide a violation.

Imports are followed as written: `from pylima.cidata import scripts` is an import of
`pylima.cidata.scripts`. Python also runs the parent packages' __init__.py (importing
`pylima.drivers.qemu.argv` runs drivers/__init__.py and drivers/qemu/__init__.py);
those are not counted, since loading a module's definitions does no I/O by itself.

- The pure core (everything under config/, cidata/render.py, drivers/qemu/argv.py,
  drivers/libvirt/domain.py,
  and every pylima module they import) decides and never acts: no files, processes,
  network, signals or environment. The outer layers (store/, hostinfo, api, cli,
  drivers, hostagent) probe the host and pass the facts in.
- pylima's first-level packages and modules import each other without cycles, so
  each layer can be read, loaded and tested on top of the ones below it.
- Modules inside pylima never import from the package root (it is the public face:
  lazy re-exports for `import pylima` users); constants live in leaf modules
  (`pylima.version`, `pylima.filenames`).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = "pylima"

# The roots of the pure core; everything they import from pylima is pure too.
PURE_PACKAGES = ["pylima.config"]
PURE_MODULES = ["pylima.cidata.render", "pylima.drivers.qemu.argv", "pylima.usernet_plan",
                "pylima.drivers.libvirt.domain"]

# Imports the pure core must not make, with the reason a newcomer reads on failure.
# A prefix matches its submodules too (`http` covers `http.client`).
IO_MODULES = {
    "subprocess": "runs processes",
    "socket": "opens network connections",
    "ssl": "opens network connections",
    "shutil": "copies and removes files",
    "tempfile": "creates files",
    "glob": "lists directories",
    "fcntl": "locks files",
    "select": "waits on file descriptors",
    "selectors": "waits on file descriptors",
    "signal": "handles signals",
    "asyncio": "runs the event loop (processes, sockets)",
    "threading": "starts threads",
    "multiprocessing": "starts processes",
    "urllib.request": "downloads URLs",
    "http": "speaks HTTP",
    "ftplib": "speaks FTP",
    "importlib": "imports by string (hides imports from this check)",
    "builtins": "reaches open() and friends by another name",
    "sys": "process-wide state (argv, stdio, exit)",
    "pylima.process": "runs processes",
    "pylima.hostinfo": "probes the host (pass HostFacts in instead)",
    "pylima.dirs": "reads the environment ($LIMA_HOME); use pylima.filenames for names",
    "pylima.store": "reads and writes the instance store; use pylima.filenames for names",
    "pylima.images": "downloads and writes images",
    "pylima.hostagent": "runs the host agent",
    "pylima.drivers": "drives VMs",
    "pylima.cli": "prints and exits",
    "pylima.api": "performs use cases (files, processes)",
    "pylima.machine": "performs use cases (files, processes)",
    "pylima.sshutil": "runs ssh",
    "pylima.containers": "runs container engines",
    "pylima.templates": "reads template files and URLs",
    "pylima.guestagent": "runs inside the guest",
    "pylima.pytest_plugin": "boots VMs",
    "pylima.log": "configures logging handlers (the CLI's job)",
}
# Pure modules that sit under an I/O prefix above.
IO_EXCEPTIONS = {"pylima.drivers.qemu.argv"}

# Modules outside pylima that the pure core may import, each with why it does no I/O.
# Anything not listed (and not in IO_MODULES) is reported, so that a new import is
# a decision: add it here with its reason when it is pure.
PURE_EXTERNAL = {
    "__future__": "compiler directives",
    "typing": "type annotations",
    "collections": "data structures",
    "dataclasses": "data structures",
    "enum": "data structures",
    "functools": "function helpers (caching, partial)",
    "itertools": "iteration helpers",
    "math": "arithmetic (Go's number formatting in gotemplate/gofmt)",
    "inspect": "signatures of template functions (Go-style arity errors); never reads source",
    "copy": "deep copies of the config tree",
    "re": "regular expressions",
    "string": "string constants",
    "shlex": "shell quoting of strings (never runs a shell)",
    "json": "JSON text <-> values (dumps/loads on strings only)",
    "marshal": "values -> bytes in memory (dumps only: pylima-init's copy of the seed's documents)",
    "hashlib": "digests of in-memory data (instance MAC addresses, cidata names)",
    "binascii": "base64 of in-memory bytes (yq load_base64 on what the caller read)",
    "ipaddress": "parsing IP addresses",
    "posixpath": "path arithmetic on strings (join, normpath); never touches the file system",
    "urllib.parse": "splitting URLs (never fetches them)",
    "xml.etree": "building and parsing XML text in memory (libvirt's domain XML)",
    "io": "in-memory text streams for the YAML emitter",
    "logging": "log records for warnings; where they go is configured by the CLI",
    "os": "path arithmetic only: uses are checked against ALLOWED_OS below",
    "pathlib": "pure paths only: imports are checked against ALLOWED_PATHLIB below",
    "yaml": "PyYAML: parses and emits YAML text (the model's file format)",
    "ruamel.yaml": "ruamel.yaml: round-trip YAML text, comments kept (`limactl edit`); "
                   "given bytes/str and a StringIO, never a path",
    "jq": "jq: evaluates `--set` expressions on in-memory JSON (Lima's yq flags)",
}

# `os` names that only compute on strings.
ALLOWED_OS = {"os.path.join", "os.path.basename", "os.path.dirname", "os.path.normpath",
              "os.path.isabs", "os.path.split", "os.path.splitext", "os.path.relpath",
              "os.sep"}
# Path classes that never touch the disk.
ALLOWED_PATHLIB = {"PurePath", "PurePosixPath"}
# Builtins that do I/O, or run code the check cannot see.
IO_BUILTINS = {"open", "print", "input", "breakpoint", "exec", "eval", "compile", "__import__"}


# --------------------------------------------------------------------------- source model


def module_file(name: str) -> Path | None:
    """The file of pylima module `name` (a package's __init__.py), None if there is none."""
    parts = name.split(".")
    if parts[0] != PKG:
        return None
    base = SRC.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def is_package(name: str) -> bool:
    f = module_file(name)
    return f is not None and f.name == "__init__.py"


def all_modules() -> list[str]:
    out = []
    for f in sorted((SRC / PKG).rglob("*.py")):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def rel(name: str) -> str:
    f = module_file(name)
    assert f is not None
    return str(f.relative_to(SRC.parent))


@dataclass(frozen=True)
class Import:
    target: str  # the module imported, or the module the names come from
    line: int
    names: tuple[str, ...] = ()  # for `from target import a, b`: the names that are not modules


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk_runtime(node: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run: skips the body of `if TYPE_CHECKING:` (not its else)."""
    yield node
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _walk_runtime(child)


@cache
def parse(name: str) -> ast.Module:
    f = module_file(name)
    assert f is not None, name
    return ast.parse(f.read_text(), str(f))


@cache
def imports(name: str) -> tuple[Import, ...]:
    """The imports module `name` makes at run time, at any level (functions included)."""
    return imports_in(parse(name), name)


def imports_in(tree: ast.Module, name: str) -> tuple[Import, ...]:
    out = []
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            out += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".")
                if not is_package(name):
                    anchor.pop()
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = []
            for alias in node.names:
                if module_file(f"{base}.{alias.name}") is not None:
                    out.append(Import(f"{base}.{alias.name}", node.lineno))
                else:
                    names.append(alias.name)
            if names:
                out.append(Import(base, node.lineno, tuple(names)))
    return tuple(out)


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# --------------------------------------------------------------------------- pure core


def pure_roots() -> list[str]:
    mods = [m for m in all_modules() if any(_matches(m, p) for p in PURE_PACKAGES)]
    return sorted(set(mods + PURE_MODULES))


def _import_problem(target: str, names: tuple[str, ...]) -> str | None:
    if target in IO_EXCEPTIONS:
        return None
    for prefix, why in IO_MODULES.items():
        if _matches(target, prefix):
            return why
    if target == PKG:
        return "the package root (import from the module that defines the name)"
    if _matches(target, PKG):
        return None  # followed (and checked) itself
    if target == "pathlib":
        bad = sorted(set(names or ("pathlib",)) - ALLOWED_PATHLIB)
        return (f"{', '.join(bad)} can touch the disk; only {', '.join(sorted(ALLOWED_PATHLIB))} "
                "are pure") if bad else None
    if target in ("os", "os.path") and names:
        # `from os import path` is checked at each use, like `os.path`
        bad = [n for n in names if f"{target}.{n}" not in ALLOWED_OS | {"os.path"}]
        return "only the os.path string functions in ALLOWED_OS and os.sep" if bad else None
    if any(_matches(target, ok) for ok in PURE_EXTERNAL):
        return None
    return "not known to be pure (add it to PURE_EXTERNAL with the reason, if it does no I/O)"


def _dotted_use(node: ast.Name, parents: dict[ast.AST, ast.AST], qual: str) -> str:
    """`os.path.join` for the `os` Name of `os.path.join(...)`."""
    dotted, cur = qual, parents.get(node)
    child: ast.AST = node
    while isinstance(cur, ast.Attribute) and cur.value is child:
        dotted += "." + cur.attr
        child, cur = cur, parents.get(cur)
    return dotted


def pure_problems(name: str, tree: ast.Module | None = None,
                  where: str | None = None) -> list[str]:
    """What module `name` does that the pure core must not, as `file: line N: ...`."""
    problems = []
    tree = tree or parse(name)
    where = where or rel(name)
    for imp in imports_in(tree, name):
        why = _import_problem(imp.target, imp.names)
        if why:
            what = (f"from {imp.target} import {', '.join(imp.names)}" if imp.names
                    else imp.target)
            problems.append(f"{where}: line {imp.line}: imports {what} ({why})")
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    os_aliases: dict[str, str] = {}
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ("os", "os.path"):
                    os_aliases[alias.asname or "os"] = alias.name if alias.asname else "os"
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name == "path":
                    os_aliases[alias.asname or "path"] = "os.path"
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Name) and node.id in os_aliases:
            used = _dotted_use(node, parents, os_aliases[node.id])
            if not any(used == ok or used.startswith(ok + ".") for ok in ALLOWED_OS):
                problems.append(f"{where}: line {node.lineno}: uses {used} (only the "
                                "os.path string functions in ALLOWED_OS and os.sep)")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in IO_BUILTINS):
            problems.append(f"{where}: line {node.lineno}: calls {node.func.id}() "
                            "(I/O, or code this check cannot see)")
    return problems


def pure_closure() -> list[str]:
    """The pure roots and every pylima module they import, transitively (forbidden
    modules are reported where they are imported, not followed)."""
    seen: list[str] = []
    todo = pure_roots()
    while todo:
        mod = todo.pop(0)
        if mod in seen:
            continue
        seen.append(mod)
        for imp in imports(mod):
            if (_matches(imp.target, PKG) and imp.target != PKG
                    and module_file(imp.target) is not None
                    and _import_problem(imp.target, imp.names) is None):
                todo.append(imp.target)
    return seen


def test_pure_core_roots_exist():
    for mod in PURE_MODULES + PURE_PACKAGES:
        assert module_file(mod) is not None, mod
    assert len(pure_roots()) > len(PURE_MODULES) + 3


def test_pure_core_does_no_io():
    problems = [p for mod in pure_closure() for p in pure_problems(mod)]
    assert not problems, (
        "the pure core (config/, cidata/render.py, drivers/qemu/argv.py and what they "
        "import) must take host facts as arguments, not probe them:\n  "
        + "\n  ".join(problems))


def test_pure_check_catches_io():
    """The checker itself: a module that does I/O in the ways it looks for is caught."""
    src = ("import os\nimport os.path as osp\nfrom os import path\nimport subprocess\n"
           "from pathlib import Path, PurePath\nfrom pylima.store import dirs\n"
           "from pylima import LIMA_COMPAT_VERSION\n"
           "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    import socket\n"
           "def f(p):\n    import shutil\n    os.path.join(p, 'x')\n    os.environ.get('X')\n"
           "    osp.exists(p)\n    path.isdir(p)\n    os.sep.join([])\n    return open(p)\n")
    problems = pure_problems("pylima.config.probe", ast.parse(src), "probe.py")
    text = "\n".join(problems)
    for expected in ("line 4: imports subprocess", "line 5: imports from pathlib import Path",
                     "line 6: imports pylima.store.dirs",
                     "line 7: imports from pylima import LIMA_COMPAT_VERSION",
                     "line 12: imports shutil", "line 14: uses os.environ.get",
                     "line 15: uses os.path.exists", "line 16: uses os.path.isdir",
                     "line 18: calls open()"):
        assert expected in text, (expected, problems)
    for unexpected in ("socket", "line 13:", "line 17:", "line 1:", "line 2:", "line 3:"):
        assert unexpected not in text, (unexpected, problems)


# --------------------------------------------------------------------------- package DAG


def node_of(module: str) -> str:
    """A module's node in the package graph: its first-level name under pylima."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def package_graph() -> dict[str, dict[str, list[str]]]:
    """node -> node -> the `file: line N` of each import making that edge."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for mod in all_modules():
        src_node = node_of(mod)
        graph[src_node]  # noqa: B018 - every node, even one without edges
        for imp in imports(mod):
            if not _matches(imp.target, PKG):
                continue
            dst = node_of(imp.target)
            if dst != src_node:
                graph[src_node][dst].append(f"{rel(mod)}: line {imp.line}")
    return graph


def find_cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """One shortest cycle through each node that lies on a cycle (deduplicated)."""
    cycles: list[list[str]] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    for start in sorted(graph):
        # breadth-first from start's successors back to start
        prev: dict[str, str] = {}
        frontier = [start]
        found = False
        while frontier and not found:
            nxt = []
            for node in frontier:
                for succ in sorted(graph.get(node, {})):
                    if succ == start:
                        path = [node]
                        while path[-1] != start:
                            path.append(prev[path[-1]])
                        cycle = [start, *reversed(path[:-1])]
                        edges = frozenset(zip(cycle, cycle[1:] + cycle[:1], strict=True))
                        if edges not in seen:
                            seen.add(edges)
                            cycles.append(cycle)
                        found = True
                        break
                    if succ not in prev:
                        prev[succ] = node
                        nxt.append(succ)
                if found:
                    break
            frontier = nxt
    return cycles


def describe_cycle(graph: dict[str, dict[str, list[str]]], cycle: list[str]) -> str:
    lines = [" -> ".join([*cycle, cycle[0]])]
    for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        lines.append(f"    {a} -> {b}:")
        lines += [f"      {site}" for site in graph[a][b]]
    return "\n".join(lines)


def test_package_graph_is_acyclic():
    graph = package_graph()
    cycles = find_cycles(graph)
    assert not cycles, ("pylima's first-level packages and modules import each other in "
                        "cycles (function-level imports count):\n"
                        + "\n".join(describe_cycle(graph, c) for c in cycles))
    assert {"(root)", "config", "store", "hostinfo", "version", "dirs", "filenames"} <= set(graph)


def test_cycle_finder():
    g: dict[str, dict[str, list[str]]] = {
        "a": {"b": ["a.py: line 1"]}, "b": {"c": ["b.py: line 2"]},
        "c": {"a": ["c.py: line 3"], "d": ["c.py: line 4"]}, "d": {}}
    assert find_cycles(g) == [["a", "b", "c"]]
    assert "c -> a:\n      c.py: line 3" in describe_cycle(g, ["a", "b", "c"])
    assert find_cycles({"a": {"b": []}, "b": {}}) == []


def test_import_resolution():
    src = ("from pylima import process, LIMA_COMPAT_VERSION\nfrom pylima.store import dirs\n"
           "from . import units\nfrom ..errors import ConfigError\nimport pylima.api\n"
           "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from pylima import machine\n"
           "else:\n    import json\n")
    got = imports_in(ast.parse(src), "pylima.config.defaults")
    assert got == (Import("pylima.process", 1), Import("pylima", 1, ("LIMA_COMPAT_VERSION",)),
                   Import("pylima.store.dirs", 2), Import("pylima.config.units", 3),
                   Import("pylima.errors", 4, ("ConfigError",)), Import("pylima.api", 5),
                   Import("json", 10))
    assert [node_of(i.target) for i in got[:-1]] == [
        "process", "(root)", "store", "config", "errors", "api"]


# --------------------------------------------------------------------------- the root


def test_nothing_imports_names_from_the_package_root():
    problems = [f"{rel(mod)}: line {imp.line}: from pylima import {', '.join(imp.names)}"
                for mod in all_modules() for imp in imports(mod)
                if imp.target == PKG and imp.names]
    assert not problems, ("modules inside pylima import constants from their leaf module "
                          "(pylima.version), not from the package root:\n  "
                          + "\n  ".join(problems))
