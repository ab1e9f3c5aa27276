"""The generated record types (kadence_protocol/records.py) are what the schemas give."""

from __future__ import annotations

import dataclasses

import pytest

from kadence_protocol import avro, generate, records
from kadence_protocol.enums import CommandType

pytestmark = pytest.mark.timeout(30)


def test_records_py_is_what_the_generator_writes_from_the_schemas() -> None:
    assert generate.render() == generate.OUTPUT.read_text(encoding="utf-8"), \
        "schemas/ changed: run python -m kadence_protocol.generate"


def test_every_request_record_has_its_type() -> None:
    for name in ("StartWorkflowExecution", "SignalWorkflowExecution", "SignalWithStartWorkflowExecution",
                 "RequestCancelWorkflowExecution", "TerminateWorkflowExecution", "UpdateWorkflowExecution"):
        assert records.RECORDS[name].NAME == name


def test_a_record_goes_through_avro_and_back_unchanged() -> None:
    start = records.StartWorkflowExecution(namespace="ns", workflow_id="wf", workflow_type="T", task_queue="q",
                                           input="[1]", request_id="r", memo='{"a":1}')
    name, decoded = avro.decode(avro.encode(start.NAME, start.to_dict()))
    assert name == "StartWorkflowExecution" and records.StartWorkflowExecution.from_dict(decoded) == start


def test_nested_records_enums_and_defaults_convert_both_ways() -> None:
    done = records.RespondWorkflowTaskCompleted.from_dict({
        "namespace": "ns", "workflow_id": "wf", "run_id": "r", "scheduled_event_id": 2, "attempt": 1,
        "commands": [{"command_type": "StartTimer", "attributes": {"timer_id": "t", "start_to_fire_timeout_ms": 5,
                                                                "requested_time": 7}}]})
    assert done.commands[0].command_type is CommandType.START_TIMER
    assert done.identity == ""  # a defaulted field left out takes its Avro default
    _, decoded = avro.decode(avro.encode(done.NAME, done.to_dict()))
    assert records.RespondWorkflowTaskCompleted.from_dict(decoded) == done
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.attempt = 2  # type: ignore[misc]
