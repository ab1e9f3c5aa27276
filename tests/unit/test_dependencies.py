"""Every library the code imports is declared where that code is installed (pyproject.toml):
the SDK and the protocol by the base install, the server by the base install and the `server`
extra, the benchmark by those and the `bench` extra. An import that only works because some
other package happens to bring its library (psutil came with pgserver, prometheus_client with
an exporter) fails here."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWN = {"kadence", "kadence_protocol", "services", "benchmarks", "tests"}
# The Restate peer's service runs in a scratch venv of its own (benchmarks/peers/restate).
ELSEWHERE = {"restate"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement (PEP 503)."""
    bare = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", bare).lower()


@cache
def _declared() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = {"base": {_name(r) for r in project["dependencies"]}}
    groups.update({extra: {_name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()})
    return groups


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return {m for m in found if m.split(".")[0] not in OWN | ELSEWHERE and m.split(".")[0] not in sys.stdlib_module_names}


def _owners(module: str) -> set[str]:
    """The distributions that install ``module`` (for a namespace package such as
    opentelemetry, the one holding the module's own files)."""
    parts = module.split(".")
    candidates = packages_distributions().get(parts[0], [])
    if len(candidates) > 1:
        for depth in range(len(parts), 1, -1):
            stem = "/".join(parts[:depth])
            wanted = {f"{stem}/__init__.py", f"{stem}.py"}
            owning = [d for d in candidates if any(str(f) in wanted for f in distribution(d).files or ())]
            if owning:
                candidates = owning
                break
    # Not installed here (the bench extra's matplotlib): its import name stands for the distribution.
    return {_name(d) for d in candidates} or {_name(parts[0])}


def _undeclared(package: str, groups: tuple[str, ...]) -> dict[str, set[str]]:
    declared = set().union(*(_declared()[g] for g in groups))
    return {m: _owners(m) for m in sorted(_imports(package)) if not _owners(m) & declared}


def test_the_sdk_and_the_protocol_import_only_the_base_install() -> None:
    assert _undeclared("kadence", ("base",)) == {}
    assert _undeclared("kadence_protocol", ("base",)) == {}


def test_the_server_imports_only_the_base_install_and_the_server_extra() -> None:
    assert _undeclared("services", ("base", "server")) == {}


def test_the_benchmark_imports_only_what_its_extra_adds() -> None:
    assert _undeclared("benchmarks", ("base", "server", "bench")) == {}


def test_an_undeclared_import_is_found() -> None:
    assert "opentelemetry-sdk" in _owners("opentelemetry.sdk.trace")
    assert _owners("opentelemetry.trace") == {"opentelemetry-api"}
    assert _owners("psutil") == {"psutil"}
