"""The workflow retry policy's rule (services/history/retry.py), its fold (a retried run's
backoff, the closing event naming the retry), result waits following it, and the same
validation of a start's retry policy over HTTP and Kafka."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kadence_protocol.enums import EventType, RunStatus
from kadence_protocol.markers import SEARCH_ATTRIBUTES_MARKER
from services.common import validation as v
from services.common.outcome import outcome
from services.frontend import InvalidArgument
from services.frontend import validation as fv
from services.history import engine, retry
from services.history.state import MutableState, apply, events_only, rebuild
from tests.unit import _answers as answers
from tests.unit.services.history.test_state import MemoryContext, _ref, _start

pytestmark = pytest.mark.timeout(10)

POLICY: dict[str, Any] = {"initial_interval_ms": 100, "backoff_coefficient": 2.0, "maximum_interval_ms": 300,
                          "maximum_attempts": 4, "non_retryable_error_types": ["Fatal"]}


def test_no_policy_never_retries() -> None:
    assert retry.backoff_ms(None, 1, "Flaky", False, 0, 0) is None


def test_the_backoff_grows_to_its_ceiling_until_the_attempts_are_spent() -> None:
    assert [retry.backoff_ms(POLICY, n, "Flaky", False, 0, 0) for n in (1, 2, 3, 4)] == [100, 200, 300, None]


def test_unlimited_attempts_and_the_default_ceiling() -> None:
    policy = {**POLICY, "maximum_attempts": 0, "maximum_interval_ms": 0}
    assert retry.backoff_ms(policy, 1000, "Flaky", False, 0, 0) == 100 * 100  # 100 x initial, no overflow


def test_non_retryable_errors_are_not_retried() -> None:
    assert retry.backoff_ms(POLICY, 1, "Fatal", False, 0, 0) is None  # by type
    assert retry.backoff_ms(POLICY, 1, "Flaky", True, 0, 0) is None  # flagged by the workflow
    assert retry.backoff_ms({**POLICY, "non_retryable_error_types": [retry.TIMEOUT_ERROR]}, 1,
                            retry.TIMEOUT_ERROR, False, 0, 0) is None


def test_no_retry_would_start_after_the_chains_expiration() -> None:
    assert retry.backoff_ms(POLICY, 1, "Flaky", False, 1000, 1100) is None
    assert retry.backoff_ms(POLICY, 1, "Flaky", False, 1000, 1101) == 100


def _event(event_id: int, kind: str, time: int, **attributes: Any) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": kind, "event_time": time, "attributes": attributes, "hash": ""}


def _started(backoff: int, attempt: int = 2) -> dict[str, Any]:
    return _event(1, EventType.WORKFLOW_EXECUTION_STARTED, 1000, workflow_type="T", task_queue="q", input=None,
                  execution_timeout_ms=0, workflow_task_timeout_ms=10000, request_id="r", identity="",
                  continued_execution_run_id="before", attempt=attempt, run_timeout_ms=500,
                  execution_expiration_time=0, memo=None, search_attributes=None, retry_policy=POLICY,
                  first_workflow_task_backoff_ms=backoff)


def test_a_retried_runs_first_task_waits_for_the_backoff_and_its_run_timeout_counts_after() -> None:
    s = MutableState(namespace="ns", workflow_id="w", run_id="r2")
    apply(s, _started(200), 0)
    assert s.attempt == 2 and s.retry_policy == POLICY and s.backoff_pending
    assert s.timeout_at() == 1000 + 200 + 500
    apply(s, _event(2, EventType.WORKFLOW_TASK_SCHEDULED, 1200, task_queue="q", start_to_close_timeout_ms=10000,
                    attempt=1, history_size_bytes=0, suggest_continue_as_new=False), 0)
    assert not s.backoff_pending and s.wt is not None


def test_a_first_run_has_no_backoff() -> None:
    s = MutableState(namespace="ns", workflow_id="w", run_id="r1")
    apply(s, _started(0, attempt=1), 0)
    assert s.attempt == 1 and not s.backoff_pending and s.timeout_at() == 1500


@pytest.mark.parametrize("kind", [EventType.WORKFLOW_EXECUTION_FAILED, EventType.WORKFLOW_EXECUTION_TIMED_OUT])
def test_a_retried_close_names_the_new_run_and_result_waits_follow_it(kind: EventType) -> None:
    s = MutableState(namespace="ns", workflow_id="w", run_id="r1")
    apply(s, _started(0, attempt=1), 0)
    failure = {"message": "no", "type": "Flaky", "stack_trace": "", "non_retryable": False, "details": None}
    attributes: dict[str, Any] = {"new_run_id": "r2"}
    if kind == EventType.WORKFLOW_EXECUTION_FAILED:
        attributes |= {"failure": failure, "workflow_task_completed_event_id": 0}
    apply(s, _event(2, kind, 2000, **attributes), 0)
    assert retry.retried(s) and s.new_run_id == "r2"
    assert outcome(s.status, s.run_id, {"new_run_id": s.new_run_id, "failure": s.failure})["new_run_id"] == "r2"


def test_a_close_not_retried_is_final() -> None:
    s = MutableState(namespace="ns", workflow_id="w", run_id="r1", status=RunStatus.FAILED)
    assert not retry.retried(s)
    assert "new_run_id" not in outcome(RunStatus.FAILED, "r1", {"new_run_id": None, "failure": None})


BAD = [({"backoff_coefficient": 0.5}, "retry_policy.backoff_coefficient"),
       ({"maximum_attempts": -1}, "retry_policy.maximum_attempts"),
       ({"initial_interval_ms": -5}, "retry_policy.initial_interval_ms"),
       ({"non_retryable_error_types": "Fatal"}, "retry_policy.non_retryable_error_types")]


@pytest.mark.parametrize(("bad", "field"), BAD)
def test_a_bad_retry_policy_is_refused_alike_over_http_and_kafka(bad: dict[str, Any], field: str) -> None:
    policy = {**POLICY, **bad}
    record = {"namespace": "default", "workflow_id": "w", "workflow_type": "T", "task_queue": "q", "input": "[]",
              "execution_timeout_ms": 0, "workflow_task_timeout_ms": 10000, "request_id": "r", "identity": "",
              "reply_to": None, "retry_policy": policy}
    with pytest.raises(v.Invalid) as kafka:
        v.check_command("StartWorkflowExecution", record)
    with pytest.raises(InvalidArgument) as http:
        fv.start_request("default", {"workflow_id": "w", "workflow_type": "T", "task_queue": "q",
                                     "retry_policy": policy})
    assert kafka.value.field == http.value.field == field


def test_an_http_retry_policy_takes_the_records_defaults_and_refuses_unknown_fields() -> None:
    req = fv.start_request("default", {"workflow_id": "w", "workflow_type": "T", "task_queue": "q",
                                       "retry_policy": {"maximum_attempts": 3, "backoff_coefficient": 1}})
    assert req.retry_policy == {"initial_interval_ms": 1000, "backoff_coefficient": 1.0, "maximum_interval_ms": 0,
                                "maximum_attempts": 3, "non_retryable_error_types": []}
    v.check_command("StartWorkflowExecution", {
        "namespace": "default", "workflow_id": "w", "workflow_type": "T", "task_queue": "q", "input": "[]",
        "execution_timeout_ms": 0, "workflow_task_timeout_ms": 10000, "request_id": "r", "identity": "",
        "reply_to": None, "retry_policy": req.retry_policy})
    with pytest.raises(InvalidArgument) as caught:
        fv.start_request("default", {"workflow_id": "w", "workflow_type": "T", "task_queue": "q",
                                     "retry_policy": {"attempts": 3}})
    assert caught.value.field == "retry_policy.attempts"
    assert fv.start_request("default", {"workflow_id": "w", "workflow_type": "T", "task_queue": "q"}).retry_policy \
        is None


@pytest.mark.parametrize(("policy", "attempt", "now", "expiration", "error", "non_retryable"), [
    (POLICY, 1, 0, 0, "E", False), (POLICY, 3, 0, 0, "E", False), (POLICY, 4, 0, 0, "E", False),
    (POLICY, 1, 0, 0, "Fatal", False), (POLICY, 1, 0, 0, "E", True), (POLICY, 2, 5_000, 5_150, "E", False),
    (POLICY, 2, 5_000, 5_250, "E", False), ({**POLICY, "maximum_attempts": 0, "maximum_interval_ms": 0}, 60, 0, 0,
                                            "E", False),
])
def test_the_workflow_rule_is_the_activities_with_the_chains_expiration_as_deadline(
        policy: dict[str, Any], attempt: int, now: int, expiration: int, error: str, non_retryable: bool) -> None:
    # The SDK's copy of the activity rule (kadence.testing stands in for history with it).
    from kadence._retry_rule import retry_backoff

    assert retry.backoff_ms(policy, attempt, error, non_retryable, now, expiration) == \
        retry_backoff(policy, attempt, now, 0, expiration, error, non_retryable)


async def test_a_retried_run_keeps_the_memo_and_the_search_attributes_upserts_included() -> None:
    """Temporal's rule: the new run starts with the search attributes the failed run had at
    its close (its start's, with workflow code's upserts), and its memo."""
    ctx = MemoryContext()
    policy = {**POLICY, "initial_interval_ms": 0}
    await engine.start_workflow(ctx, _start(memo='{"owner":"ann"}', search_attributes='{"Region":"eu","Tier":1}',
                                            retry_policy=policy))
    (first,) = ctx.runs.values()
    upsert = {"command_type": "RecordMarker", "attributes": {"marker_name": SEARCH_ATTRIBUTES_MARKER,
                                                             "details": '{"Tier":2,"Stage":"paid"}'}}
    fail = {"command_type": "FailWorkflowExecution", "attributes": {"failure": {
        "message": "no", "type": "Flaky", "stack_trace": "", "non_retryable": False, "details": None}}}
    await answers.workflow_task_completed(ctx, _ref(first, 2) | {"commands": [upsert, fail], "started_time": 0})
    assert first.status == RunStatus.FAILED and first.new_run_id
    second = ctx.runs[first.new_run_id]
    started = ctx.events(second.run_id)[0]["attributes"]
    assert json.loads(started["search_attributes"]) == {"Region": "eu", "Tier": 2, "Stage": "paid"}
    assert started["memo"] == '{"owner":"ann"}' and started["attempt"] == 2
    assert second.search_attributes == started["search_attributes"]
    # The fold of the first run's events gives the merged attributes the retry took.
    folded = rebuild("ns", "wf", first.run_id, ctx.events(first.run_id))
    assert events_only(json.loads(folded.dumps())) == events_only(json.loads(first.dumps()))
