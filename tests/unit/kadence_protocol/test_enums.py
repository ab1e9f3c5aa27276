"""The protocol's enums agree with the Avro schemas they mirror (kadence_protocol/enums.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kadence_protocol import avro, enums

pytestmark = pytest.mark.timeout(10)


def _avro_enums(node: Any, namespace: str = "kadence") -> Iterator[tuple[str, list[str]]]:
    """(full name, symbols) of every enum declared in a parsed .avsc."""
    if isinstance(node, dict):
        namespace = node.get("namespace", namespace)
        if node.get("type") == "enum":
            name = node["name"] if "." in node["name"] else f"{namespace}.{node['name']}"
            yield name, list(node["symbols"])
        for value in node.values():
            yield from _avro_enums(value, namespace)
    elif isinstance(node, list):
        for value in node:
            yield from _avro_enums(value, namespace)


def _declared() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(Path(avro.schemas_dir()).glob("*.avsc")):
        for name, symbols in _avro_enums(json.loads(path.read_text())):
            assert found.setdefault(name, symbols) == symbols, f"{name} declared twice, differently"
    return found


def test_every_avro_enum_has_its_python_enum() -> None:
    assert set(_declared()) == set(enums.AVRO_ENUMS)


@pytest.mark.parametrize("name", sorted(enums.AVRO_ENUMS))
def test_each_enum_has_exactly_the_symbols_of_its_avro_enum(name: str) -> None:
    assert [m.value for m in enums.AVRO_ENUMS[name]] == _declared()[name]


def test_members_are_the_strings_on_the_wire() -> None:
    assert enums.EventType.TIMER_FIRED == "TimerFired"
    assert {enums.RunStatus.RUNNING: 1}["Running"] == 1
    assert enums.CLOSE_STATUS[enums.EventType("WorkflowExecutionCanceled")] is enums.RunStatus.CANCELED
    assert set(enums.CLOSE_EVENT) == enums.CLOSED_STATUSES
