"""One definition of each closed set of names: the protocol's enums (kadence_protocol/enums.py),
which the SDK and the services import or re-export, and run statuses that load back as enums."""

from __future__ import annotations

import enum
import importlib
import pkgutil
from collections.abc import Iterator

import pytest

from kadence_protocol import enums
from kadence_protocol.enums import (
    HISTORY_CAUSES,
    RETRYABLE_TIMEOUTS,
    ParentClosePolicy,
    RunStatus,
    TimeoutType,
    WorkflowTaskFailedCause,
)
from services.history.state import MutableState, apply

pytestmark = pytest.mark.timeout(60)

PACKAGES = ("kadence_protocol", "kadence", "services")


def _modules() -> Iterator[str]:
    for name in PACKAGES:
        package = importlib.import_module(name)
        yield name
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if not info.name.endswith("__main__"):
                yield info.name


def _str_enums() -> dict[str, type[enum.StrEnum]]:
    found: dict[str, type[enum.StrEnum]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, enum.StrEnum) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_no_two_enums_of_the_code_name_the_same_set() -> None:
    # ExecutionStatus (visibility) was RunStatus again, policies.ParentClosePolicy was enums' again.
    by_values: dict[frozenset[str], list[str]] = {}
    for name, cls in _str_enums().items():
        by_values.setdefault(frozenset(m.value for m in cls), []).append(name)
    assert [names for names in by_values.values() if len(names) > 1] == []


def test_the_sdk_and_the_protocol_share_their_enums() -> None:
    import kadence.common
    import kadence.workflow
    from kadence_protocol import policies
    from kadence_protocol.reset import RESET_CAUSE
    from services.history import unseen
    from services.visibility import projection

    assert kadence.common.ParentClosePolicy is ParentClosePolicy is policies.ParentClosePolicy
    assert kadence.workflow.ParentClosePolicy is ParentClosePolicy
    assert RESET_CAUSE is WorkflowTaskFailedCause.RESET_WORKFLOW
    assert not hasattr(unseen, "HistoryCause") and not hasattr(projection, "ExecutionStatus")
    assert set(projection.CLOSING_EVENTS.values()) == enums.CLOSED_STATUSES


def test_history_causes_are_the_ones_a_worker_cannot_give() -> None:
    from services.history import unseen

    assert {unseen.worker_cause(c) for c in HISTORY_CAUSES} == {"WorkerUnhandledCommand", "WorkerResetWorkflow"}
    assert unseen.worker_cause(WorkflowTaskFailedCause.NON_DETERMINISM) == "NonDeterminism"


async def test_the_sdk_retries_after_the_timeouts_history_retries_after() -> None:
    import asyncio

    from kadence._workflow.instance import _PendingActivity
    from kadence.common import RetryState
    from kadence.exceptions import ActivityTimeoutError

    assert {t for t in TimeoutType if t.retryable} == RETRYABLE_TIMEOUTS
    act = _PendingActivity(asyncio.get_running_loop(), "1", "a", {"maximum_attempts": 3}, result_type=None,
                           waiting={})
    for t in TimeoutType:
        expected = RetryState.MAXIMUM_ATTEMPTS_REACHED if t.retryable else RetryState.TIMEOUT
        assert act.retry_state(ActivityTimeoutError(t.value)) is expected


def _started() -> MutableState:
    s = MutableState(namespace="ns", workflow_id="w", run_id="r")
    apply(s, {"event_id": 1, "event_time": 1000, "event_type": "WorkflowExecutionStarted", "attributes": {
        "workflow_type": "W", "task_queue": "q", "input": None, "execution_timeout_ms": 0, "run_timeout_ms": 0,
        "execution_expiration_time": 0, "workflow_task_timeout_ms": 10000, "request_id": "", "identity": "",
        "continued_execution_run_id": None, "memo": None, "search_attributes": None}})
    return s


def test_a_run_status_loads_back_as_the_enum() -> None:
    assert MutableState().status is None  # not started
    s = _started()
    loaded = MutableState.loads(s.dumps())
    assert type(loaded.status) is RunStatus and loaded.status is RunStatus.RUNNING
    assert loaded.dumps() == s.dumps()
