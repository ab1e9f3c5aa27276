"""SignalExternalWorkflowExecution v2 adds child_workflow_only (an external handle's signal
or cancel reaches any workflow of the namespace); a v1 record, written by a build that only
signalled children, reads as child_workflow_only true."""

from __future__ import annotations

import pytest

from kadence_protocol import avro
from tests.unit.schemas.test_policy_versions import _old_request

pytestmark = pytest.mark.timeout(10)

RECORD = {"namespace": "default", "workflow_id": "c", "run_id": None, "signal_name": "go", "input": "[1]",
          "request_id": "signal:run-p:7", "sender_namespace": "default", "sender_workflow_id": "p",
          "sender_run_id": "run-p", "sender_initiated_event_id": 7}


def test_a_version_1_signal_request_reads_as_child_only() -> None:
    name, record = avro.decode(_old_request("kadence.SignalExternalWorkflowExecution.v1.avsc",
                                            "SignalExternalWorkflowExecution", RECORD))
    assert name == "SignalExternalWorkflowExecution" and record == {**RECORD, "child_workflow_only": True}


def test_an_external_signal_request_round_trips() -> None:
    current = {**RECORD, "child_workflow_only": False}
    assert avro.decode(avro.encode("SignalExternalWorkflowExecution", current)) == (
        "SignalExternalWorkflowExecution", current)
    saved = avro.Schemas._load_version(avro.schemas_dir() / "versions" / "kadence.SignalExternalWorkflowExecution.v1.avsc",
                                       avro.schemas_dir())
    assert avro.fingerprint_of(saved) != avro.schemas().fingerprint("SignalExternalWorkflowExecution")
