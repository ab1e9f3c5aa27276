"""Decorators check their targets when applied and fail with clear messages."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kadence import activity, workflow
from kadence._workflow.definition import WorkflowDefinition, query_name_of, signal_name_of, workflow_name_of
from kadence.common import RetryPolicy

pytestmark = pytest.mark.timeout(30)


def test_run_must_be_async() -> None:
    with pytest.raises(TypeError, match=r"@workflow.run method .*run must be declared `async def`"):

        class Bad:
            @workflow.run
            def run(self) -> None: ...


def test_two_run_methods_rejected() -> None:
    with pytest.raises(TypeError, match=r"more than one @workflow\.run method: one, two"):

        @workflow.defn
        class Bad:
            @workflow.run
            async def one(self) -> None: ...

            @workflow.run
            async def two(self) -> None: ...


def test_defn_without_run_rejected() -> None:
    with pytest.raises(TypeError, match=r"has no @workflow\.run method"):

        @workflow.defn
        class Bad:
            async def run(self) -> None: ...


def test_defn_on_function_rejected() -> None:
    with pytest.raises(TypeError, match="must decorate a class"):
        workflow.defn(lambda: None)  # type: ignore[call-overload]


def test_query_must_not_be_async() -> None:
    with pytest.raises(TypeError, match="must be a plain `def`"):

        class Bad:
            @workflow.query
            async def q(self) -> int:
                return 1


def test_duplicate_signal_names_rejected() -> None:
    with pytest.raises(TypeError, match="two signal handlers named 'go'"):

        @workflow.defn
        class Bad:
            @workflow.run
            async def run(self) -> None: ...

            @workflow.signal(name="go")
            def a(self) -> None: ...

            @workflow.signal(name="go")
            def b(self) -> None: ...


def test_workflow_needing_constructor_args_rejected() -> None:
    with pytest.raises(TypeError, match="constructible without arguments"):

        @workflow.defn
        class Bad:
            def __init__(self, x: int) -> None:
                self.x = x

            @workflow.run
            async def run(self) -> None: ...


def test_names_resolve_from_references() -> None:
    @workflow.defn(name="Custom")
    class Good:
        @workflow.run
        async def run(self) -> None: ...

        @workflow.signal(name="poke")
        def on_poke(self) -> None: ...

        @workflow.query
        def state(self) -> str:
            return ""

    definition = WorkflowDefinition.of(Good)
    assert definition.name == "Custom"
    assert set(definition.signals) == {"poke"} and set(definition.queries) == {"state"}
    assert workflow_name_of(Good.run) == workflow_name_of(Good) == "Custom"
    assert signal_name_of(Good.on_poke) == "poke"
    assert query_name_of(Good.state) == "state"
    with pytest.raises(TypeError, match="not a workflow"):
        workflow_name_of(len)


def test_activity_defn() -> None:
    @activity.defn
    async def fetch(x: int) -> int:
        return x

    @activity.defn(name="store-it")
    def store(x: int) -> None: ...

    from kadence._activity import ActivityDefinition, activity_name_of

    assert ActivityDefinition.of(fetch).is_async
    assert not ActivityDefinition.of(store).is_async
    assert activity_name_of(store) == "store-it"
    with pytest.raises(TypeError, match="must decorate a function"):
        activity.defn(int)
    with pytest.raises(TypeError, match="not an activity"):
        activity_name_of(len)


def test_activity_timeout_required() -> None:
    # The check runs before anything needs a workflow, so stepping the coroutine shows it.
    coro = workflow.execute_activity("x")
    with pytest.raises(ValueError, match="schedule_to_close_timeout or start_to_close_timeout"):
        coro.send(None)


def test_an_activity_call_outside_workflow_code_raises_where_it_is_awaited() -> None:
    # workflow.execute_activity hands back the instance's coroutine: its errors still come
    # out of the await, as from the coroutine function it was.
    coro = workflow.execute_activity("x", start_to_close_timeout=timedelta(seconds=1))
    with pytest.raises(RuntimeError, match="not in workflow code"):
        coro.send(None)


def test_workflow_api_outside_workflow_is_clear() -> None:
    with pytest.raises(RuntimeError, match="not in workflow code"):
        workflow.now()
    with pytest.raises(RuntimeError, match="not in an activity"):
        activity.info()


def test_retry_policy_to_avro() -> None:
    policy = RetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=3,
        non_retryable_error_types=["ValueError"],
    )
    assert policy.to_avro() == {
        "initial_interval_ms": 500,
        "backoff_coefficient": 2.0,
        "maximum_interval_ms": 10_000,
        "maximum_attempts": 3,
        "non_retryable_error_types": ["ValueError"],
    }
    assert RetryPolicy().to_avro()["maximum_interval_ms"] == 0
    with pytest.raises(ValueError, match="backoff_coefficient"):
        RetryPolicy(backoff_coefficient=0.5)
