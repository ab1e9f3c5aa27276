"""kadence.kafka: the records it encodes are the protocol's, and its public names are pinned."""

from __future__ import annotations

import json

import pytest

from kadence import kafka
from kadence_protocol import avro
from services.common import kafka as service_kafka

pytestmark = pytest.mark.timeout(10)


def test_public_names() -> None:
    assert sorted(kafka.__all__) == [
        "DLQ", "HISTORY", "IngressSigner", "KafkaIngress", "KafkaIngressError", "REPLIES", "REQUESTS", "Reply",
        "decode_reply", "encode_cancel", "encode_reset",
        "encode_signal", "encode_signal_with_start", "encode_start", "encode_update", "workflow_key"]


def test_keys_and_topics_agree_with_the_services() -> None:
    assert kafka.workflow_key("ns", "wf/1") == service_kafka.workflow_key("ns", "wf/1") == b"ns/wf/1"
    assert (kafka.REQUESTS, kafka.REPLIES, kafka.HISTORY, kafka.DLQ) == (
        service_kafka.REQUESTS, service_kafka.REPLIES, service_kafka.HISTORY, service_kafka.DLQ)


def test_encoded_commands_decode_as_the_history_service_reads_them() -> None:
    name, start = avro.decode(kafka.encode_start("default", "wf-1", "Greet", "q", ["world", 2], reply_to="me"))
    assert name == "StartWorkflowExecution"
    assert json.loads(start["input"]) == ["world", 2] and start["reply_to"] == "me" and len(start["request_id"]) == 32
    name, signal = avro.decode(kafka.encode_signal("default", "wf-1", "approve", ["ada"], request_id="r"))
    assert (name, signal["signal_name"], signal["input"], signal["request_id"]) == (
        "SignalWorkflowExecution", "approve", '["ada"]', "r")
    name, sws = avro.decode(kafka.encode_signal_with_start("default", "wf-1", "Greet", "q", "approve", ["x"]))
    assert name == "SignalWithStartWorkflowExecution" and sws["signal_input"] == '["x"]' and sws["input"] == "[]"


def test_a_reply_decodes_and_anything_else_is_refused() -> None:
    data = avro.encode("Reply", {"reply_to": "me", "request_id": "r", "ok": False, "run_id": None,
                                 "error_type": "WorkflowAlreadyStarted", "error_message": "busy",
                                 "namespace": "default", "workflow_id": "wf-1"})
    assert kafka.decode_reply(data) == kafka.Reply("me", "r", False, None, "WorkflowAlreadyStarted", "busy",
                                                   "default", "wf-1")
    with pytest.raises(kafka.KafkaIngressError):
        kafka.decode_reply(kafka.encode_signal("default", "wf-1", "approve"))
