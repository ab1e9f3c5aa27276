"""A worker's activity answer with a workflow task run ahead is encoded with the union's branch
named (fastavro then skips trying the task against each branch), to the very bytes an
untold writer produces."""

from __future__ import annotations

import io

import fastavro

from kadence_protocol import avro


def test_the_run_ahead_task_is_named_and_encodes_the_same() -> None:
    record = {"namespace": "default", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 5, "attempt": 1,
              "identity": "i", "result": "[1]",
              "workflow_task": {"after_scheduled_event_id": 5, "after_started_time": 1, "started_time": 2,
                                "ahead_id": 1, "after_ahead_id": 0, "runs_timers_ahead": False,
                                "commands": [{"command_type": "CompleteWorkflowExecution",
                                              "attributes": {"result": "[1]"}}]}}
    tagged = avro.tag_unions("RespondActivityTaskCompleted", record)
    assert tagged["workflow_task"][0] == "kadence.RunAheadWorkflowTask"
    schemas = avro.schemas()
    untold = io.BytesIO()
    fastavro.schemaless_writer(untold, schemas.current["kadence.RespondActivityTaskCompleted"], record)
    encoded = avro.encode("RespondActivityTaskCompleted", record)
    assert encoded[len(schemas.header("RespondActivityTaskCompleted")):] == untold.getvalue()
    assert avro.decode(encoded) == ("RespondActivityTaskCompleted", record)
    plain = {**record, "workflow_task": None}
    assert avro.decode(avro.encode("RespondActivityTaskCompleted", plain)) == ("RespondActivityTaskCompleted", plain)
