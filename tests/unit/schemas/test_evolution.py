"""Schema evolution: records written with old schema versions stay readable, both ways."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kadence_protocol import avro
from services.common import chain

pytestmark = pytest.mark.timeout(10)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _fixture_records(name: str) -> dict[str, bytes]:
    """A fixture's records by their schema version ("kadence.HistoryEvent v3")."""
    return {json.loads(line)["schema"]: bytes.fromhex(json.loads(line)["hex"]) for line in (FIXTURES / name).read_text().splitlines()}


def _v1_records() -> list[bytes]:
    return [bytes.fromhex(json.loads(line)["hex"]) for line in (FIXTURES / "history_event_v1.jsonl").read_text().splitlines()]


def test_version_1_history_events_are_read_with_the_new_field_defaulted() -> None:
    name, event = avro.decode(_v1_records()[0])
    assert name == "HistoryEvent"
    assert event["hash"] == ""  # the v2 field takes its default
    assert event["attributes"]["input"] == '["old"]' and event["attributes"]["identity"] == "v1"
    assert avro.decode(_v1_records()[1])[1]["event_type"] == "WorkflowTaskScheduled"


def test_records_from_before_started_times_read_with_started_time_0() -> None:
    records = _fixture_records("before_started_time.jsonl")
    assert set(records) == {"kadence.HistoryEvent v2", "kadence.HistoryRecord v1",
                            "kadence.RecordWorkflowTaskStarted v1", "kadence.RespondWorkflowTaskCompleted v1"}
    _, event = avro.decode(records["kadence.HistoryEvent v2"])
    assert event["attributes"] == {"scheduled_event_id": 2, "identity": "v2-worker", "started_time": 0,
                                   "ran_ahead_id": 0}
    assert event["hash"] == "ab" * 32
    _, record = avro.decode(records["kadence.HistoryRecord v1"])
    assert record["event"] == event
    name, started = avro.decode(records["kadence.RecordWorkflowTaskStarted v1"])
    assert name == "RecordWorkflowTaskStarted" and started["started_time"] == 0 and started["identity"] == "v1-worker"
    name, answer = avro.decode(records["kadence.RespondWorkflowTaskCompleted v1"])
    assert name == "RespondWorkflowTaskCompleted" and answer["started_time"] == 0
    assert answer["commands"][0]["attributes"] == {"result": '"done"'}


def test_an_old_reader_skips_what_it_does_not_know(tmp_path: Path) -> None:
    # A reader that only knows version 1 (as current) and was told of version 2.
    here = avro.schemas_dir()
    for path in here.glob("kadence.*.avsc"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "versions").mkdir()
    shutil.copy(here / "kadence.HistoryEvent.avsc", tmp_path / "versions" / "kadence.HistoryEvent.v2.avsc")
    shutil.copy(here / "versions" / "kadence.HistoryEvent.v1.avsc", tmp_path / "kadence.HistoryEvent.avsc")
    old_reader = avro.Schemas(tmp_path)
    event = {"event_id": 3, "event_time": 5, "event_type": "MarkerRecorded", "hash": "ab" * 32,
             "attributes": {"marker_name": "m", "details": None, "workflow_task_completed_event_id": 2}}
    name, seen = old_reader.decode(avro.encode("HistoryEvent", event))
    assert name == "HistoryEvent" and "hash" not in seen
    assert seen["attributes"]["marker_name"] == "m"


def test_hash_chain_detects_a_changed_event() -> None:
    events = []
    previous = ""
    for i, kind in enumerate(["MarkerRecorded", "MarkerRecorded", "MarkerRecorded"], start=1):
        event = {"event_id": i, "event_time": i, "event_type": kind,
                 "attributes": {"marker_name": f"m{i}", "details": None, "workflow_task_completed_event_id": 0}}
        event["hash"] = chain.event_hash(previous, event)
        previous = event["hash"]
        events.append(event)
    assert chain.first_break(events) is None
    events[1]["attributes"]["marker_name"] = "tampered"
    assert chain.first_break(events) == 2


def test_seal_gives_the_plain_encoding_with_the_hash() -> None:
    event = {"event_id": 1, "event_time": 7, "event_type": "MarkerRecorded",
             "attributes": {"marker_name": "m", "details": "é", "workflow_task_completed_event_id": 0}}
    digest, encoded = chain.seal("", event)
    assert digest == chain.event_hash("", event)
    assert encoded == avro.encode("HistoryEvent", {**event, "hash": digest})
    record = avro.encode("HistoryRecord", {"namespace": "ns", "workflow_id": "wf-é", "run_id": "r",
                                           "event": {**event, "hash": digest}})
    prefix = avro.header("HistoryRecord") + avro.string("ns") + avro.string("wf-é") + avro.string("r")
    assert record == prefix + encoded[10:]


def test_records_from_before_activity_started_times_read_with_started_time_0() -> None:
    records = _fixture_records("before_activity_started_time.jsonl")
    assert set(records) == {"kadence.HistoryEvent v3", "kadence.HistoryRecord v2",
                            "kadence.RecordActivityTaskStarted v1"}
    _, event = avro.decode(records["kadence.HistoryEvent v3"])
    assert event["attributes"] == {"scheduled_event_id": 5, "attempt": 1, "identity": "v3-worker", "started_time": 0,
                                   "last_failure": None}
    _, record = avro.decode(records["kadence.HistoryRecord v2"])
    assert record["event"] == event
    name, started = avro.decode(records["kadence.RecordActivityTaskStarted v1"])
    assert name == "RecordActivityTaskStarted" and started["started_time"] == 0


def test_replies_from_before_created_read_as_not_created() -> None:
    record = bytes.fromhex(json.loads((FIXTURES / "reply_v1.jsonl").read_text())["hex"])
    name, reply = avro.decode(record)
    assert name == "Reply" and reply["ok"] and reply["run_id"] == "run-1" and reply["created"] is False


def test_records_from_before_run_ahead_read_as_handed_out_and_without_a_task() -> None:
    records = _fixture_records("before_run_ahead.jsonl")
    assert set(records) == {"kadence.HistoryEvent v4", "kadence.HistoryRecord v3",
                            "kadence.RespondActivityTaskCompleted v1"}
    _, event = avro.decode(records["kadence.HistoryEvent v4"])
    assert event["event_type"] == "WorkflowTaskStarted" and event["attributes"]["ran_ahead_id"] == 0
    _, record = avro.decode(records["kadence.HistoryRecord v3"])
    assert record["event"] == event
    name, answer = avro.decode(records["kadence.RespondActivityTaskCompleted v1"])
    assert name == "RespondActivityTaskCompleted" and answer["result"] == "42" and answer["workflow_task"] is None


def test_records_from_before_search_attributes_read_without_them() -> None:
    records = _fixture_records("before_search_attributes.jsonl")
    assert set(records) == {"kadence.HistoryEvent v5", "kadence.HistoryRecord v4",
                            "kadence.StartWorkflowExecution v1"}
    _, event = avro.decode(records["kadence.HistoryEvent v5"])
    assert event["event_type"] == "WorkflowExecutionStarted" and event["attributes"]["search_attributes"] is None
    assert event["attributes"]["identity"] == "v5-client"
    _, record = avro.decode(records["kadence.HistoryRecord v4"])
    assert record["event"] == event
    name, start = avro.decode(records["kadence.StartWorkflowExecution v1"])
    assert name == "StartWorkflowExecution" and start["search_attributes"] is None and start["identity"] == "v1-client"


def test_task_answers_from_before_cancellation_read_with_their_commands() -> None:
    records = _fixture_records("before_cancellation.jsonl")
    assert set(records) == {"kadence.RespondWorkflowTaskCompleted v2", "kadence.RespondActivityTaskCompleted v2"}
    complete = [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"done"'}}]
    name, answer = avro.decode(records["kadence.RespondWorkflowTaskCompleted v2"])
    assert name == "RespondWorkflowTaskCompleted" and answer["commands"] == complete
    name, answer = avro.decode(records["kadence.RespondActivityTaskCompleted v2"])
    assert name == "RespondActivityTaskCompleted" and answer["workflow_task"]["commands"] == complete


def test_records_from_before_child_workflows_read_with_their_cancellation_commands_and_events() -> None:
    # Written with main's schemas of the cancellation work (HistoryEvent v7, HistoryRecord v6,
    # task answers v3) before child workflows took the next versions.
    records = _fixture_records("before_children.jsonl")
    cancel = [{"command_type": "RequestCancelActivityTask", "attributes": {"scheduled_event_id": 5}},
              {"command_type": "CancelWorkflowExecution", "attributes": {"details": '"bye"'}}]
    name, answer = avro.decode(records["kadence.RespondWorkflowTaskCompleted v3"])
    assert name == "RespondWorkflowTaskCompleted" and answer["commands"] == cancel
    name, answer = avro.decode(records["kadence.RespondActivityTaskCompleted v3"])
    assert name == "RespondActivityTaskCompleted" and answer["workflow_task"]["commands"] == cancel
    name, event = avro.decode(records["kadence.HistoryEvent v7"])
    assert name == "HistoryEvent" and event["event_type"] == "WorkflowExecutionCanceled"
    assert avro.history_event_encoding(records["kadence.HistoryEvent v7"]) == records["kadence.HistoryEvent v7"]
    name, record = avro.decode(records["kadence.HistoryRecord v6"])
    assert name == "HistoryRecord" and record["event"] == event
    # The event a v6 record carries is the v7 event's encoding, byte for byte (its hash's input).
    assert avro.history_event_encoding(records["kadence.HistoryRecord v6"]) == records["kadence.HistoryEvent v7"]
def test_task_answers_and_replies_from_before_updates_still_read() -> None:
    records = _fixture_records("before_updates.jsonl")
    assert set(records) == {"kadence.RespondWorkflowTaskCompleted v3", "kadence.Reply v2"}
    name, answer = avro.decode(records["kadence.RespondWorkflowTaskCompleted v3"])
    assert name == "RespondWorkflowTaskCompleted"
    assert answer["commands"] == [{"command_type": "CancelWorkflowExecution", "attributes": {"details": None}}]
    name, reply = avro.decode(records["kadence.Reply v2"])
    assert name == "Reply" and reply["created"] and reply["update_outcome"] is None  # the v3 field, defaulted


def test_records_from_before_updates_read_with_their_child_commands_and_events() -> None:
    # Written with main's schemas of the child-workflow work (HistoryEvent v8, HistoryRecord v7,
    # task answers v4) before updates took the next versions.
    records = _fixture_records("before_updates_after_children.jsonl")
    child = [{"command_type": "StartChildWorkflowExecution",
              "attributes": {"workflow_id": "c", "workflow_type": "Child", "task_queue": "", "input": "[1]",
                             "execution_timeout_ms": 0, "run_timeout_ms": 0, "workflow_task_timeout_ms": 0,
                             "parent_close_policy": "Abandon", "retry_policy": None}},  # Command v7, defaulted
             {"command_type": "SignalExternalWorkflowExecution",
              "attributes": {"workflow_id": "c", "run_id": None, "signal_name": "go", "input": "[]",
                             "child_workflow_only": True}}]
    name, answer = avro.decode(records["kadence.RespondWorkflowTaskCompleted v4"])
    assert name == "RespondWorkflowTaskCompleted" and answer["commands"] == child
    name, answer = avro.decode(records["kadence.RespondActivityTaskCompleted v4"])
    assert name == "RespondActivityTaskCompleted" and answer["workflow_task"]["commands"] == child
    name, event = avro.decode(records["kadence.HistoryEvent v8"])
    assert name == "HistoryEvent" and event["event_type"] == "ChildWorkflowExecutionCompleted"
    assert event["attributes"]["result"] == '"done"'
    assert avro.history_event_encoding(records["kadence.HistoryEvent v8"]) == records["kadence.HistoryEvent v8"]
    name, record = avro.decode(records["kadence.HistoryRecord v7"])
    assert name == "HistoryRecord" and record["event"] == event
    # The event a v7 record carries is the v8 event's encoding, byte for byte (its hash's input).
    assert avro.history_event_encoding(records["kadence.HistoryRecord v7"]) == records["kadence.HistoryEvent v8"]


# The fingerprints main's records were written with before updates took the next versions
# (child workflows' schemas, then start policies'): a saved version that changed would leave
# them unreadable.
SAVED_BEFORE_UPDATES = {
    "kadence.HistoryEvent.v8.avsc": 0xB01A5A13E28A920A, "kadence.HistoryRecord.v7.avsc": 0xCE14AE897CBD2788,
    "kadence.RespondWorkflowTaskCompleted.v4.avsc": 0xA412A37F9960B48D,
    "kadence.RespondActivityTaskCompleted.v4.avsc": 0xCEAD19CB2425F147,
    "kadence.HistoryEvent.v9.avsc": 0xF7D67CB291F5EA8C, "kadence.HistoryRecord.v8.avsc": 0xA212B0CD15A4F100,
    "kadence.RespondWorkflowTaskCompleted.v5.avsc": 0x7AC7F43962F2780E,
    "kadence.RespondActivityTaskCompleted.v5.avsc": 0xBBCED035BEE503F2,
    "kadence.Reply.v2.avsc": 0x16B82A625F739345,
}


@pytest.mark.parametrize("file", sorted(SAVED_BEFORE_UPDATES))
def test_versions_saved_for_updates_keep_the_fingerprints_records_were_written_with(file: str) -> None:
    here = avro.schemas_dir()
    saved = avro.Schemas._load_version(here / "versions" / file, here)
    assert avro.fingerprint_of(saved) == SAVED_BEFORE_UPDATES[file]
    assert avro.fingerprint_of(saved) != avro.schemas().fingerprint(file.split(".")[1])


def test_a_version_3_start_reads_with_its_policies_and_memo_and_no_search_attributes() -> None:
    # Version 3 (start policies and memo) came before version 4 added search_attributes.
    from tests.unit.schemas.test_policy_versions import START, _old_request

    record = {**START, "id_reuse_policy": "RejectDuplicate", "id_conflict_policy": "UseExisting", "memo": '{"a":1}'}
    name, start = avro.decode(_old_request("kadence.StartWorkflowExecution.v3.avsc", "StartWorkflowExecution", record))
    assert name == "StartWorkflowExecution"
    assert start == {**record, "search_attributes": None, "cron_schedule": None, "retry_policy": None}


# The fingerprints main's history was written with before reset took HistoryEvent v12 /
# HistoryRecord v11 (search attributes' versions): the saved copies must keep them.
SAVED_BEFORE_RESET = {
    "kadence.HistoryEvent.v11.avsc": 0x1B99D3BD03812744, "kadence.HistoryRecord.v10.avsc": 0x1C570ACACBB6C48F,
}


@pytest.mark.parametrize("file", sorted(SAVED_BEFORE_RESET))
def test_versions_saved_for_reset_keep_the_fingerprints_records_were_written_with(file: str) -> None:
    here = avro.schemas_dir()
    saved = avro.Schemas._load_version(here / "versions" / file, here)
    assert avro.fingerprint_of(saved) == SAVED_BEFORE_RESET[file]
    assert avro.fingerprint_of(saved) != avro.schemas().fingerprint(file.split(".")[1])
