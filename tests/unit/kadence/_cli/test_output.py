"""Every ``kadence workflow`` command takes ``--output``/``-o`` after its name as before it
(README: "These options go before or after the subcommand"), and an operation on one run
prints JSON with ``-o json``, as its batch form does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from kadence._cli import batch
from kadence._cli import workflow as workflow_cli
from kadence._cli.workflow import workflow

COMMANDS = ["list", "count", "describe", "show", "start", "execute", "signal", "query", "update", "cancel",
            "terminate", "reset", "result"]


def test_every_command_names_the_output_option_after_it() -> None:
    assert sorted(COMMANDS) == sorted(workflow.commands)
    for name in COMMANDS:
        result = CliRunner().invoke(workflow, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "--output" in result.output, name


@pytest.mark.parametrize("command", ["result", "query", "update"])
def test_json_printing_commands_take_o_json_after_their_name(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflow_cli, "_run", lambda address, namespace, work: {"ok": 1})
    monkeypatch.setattr(batch, "single", lambda address, namespace, wid, rid, operation: {"ok": 1})
    args = [command, "-w", "order-42", "-o", "json", *(["--name", "status"] if command != "result" else [])]
    result = CliRunner().invoke(workflow, args, env={"KADENCE_OUTPUT": ""})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"ok": 1}


@pytest.mark.parametrize(("command", "extra"), [("signal", ["--name", "approve"]), ("terminate", []),
                                                ("cancel", [])])
def test_an_operation_on_one_run_prints_json_with_o_json(command: str, extra: list[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(workflow_cli, "_run", lambda address, namespace, work: calls.append(command))
    monkeypatch.setattr(batch, "single", lambda address, namespace, wid, rid, operation: calls.append(command))
    result = CliRunner().invoke(workflow, [command, "-w", "order-42", *extra, "-o", "json"],
                                env={"KADENCE_OUTPUT": ""})
    assert result.exit_code == 0, result.output
    assert calls == [command]
    assert json.loads(result.output) == {"operation": command, "workflow_id": "order-42", "run_id": None}
    table = CliRunner().invoke(workflow, [command, "-w", "order-42", *extra], env={"KADENCE_OUTPUT": ""})
    assert table.exit_code == 0 and "order-42" in table.output and not table.output.startswith("{")
