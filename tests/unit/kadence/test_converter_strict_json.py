"""Payloads are strict JSON: NaN and infinities are refused with an error naming the place,
everywhere a payload is encoded (client calls, Kafka records, workflow code, activities)."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import timedelta

import pytest

from kadence import Client, workflow
from kadence._activity import ActivityContext
from kadence._converter import check_args, encode_args, encode_value
from kadence._worker.activity_tasks import _Heartbeater
from kadence.exceptions import PayloadError, WorkflowTaskError
from kadence.kafka import encode_signal, encode_start
from tests.unit._fake_history import Driver, FakeHistory

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused_naming_the_argument(bad: float) -> None:
    with pytest.raises(PayloadError, match=r"argument 2 of workflow Greet at \['x'\]\[1\]: .* is not JSON"):
        encode_args(["ok", {"x": [1.0, bad]}], what="workflow Greet")


def test_payload_error_is_a_value_error_and_values_name_their_place() -> None:
    with pytest.raises(ValueError, match="result of activity a: nan is not JSON"):
        encode_value(math.nan, what="result of activity a")
    # Sets are carried (as sorted arrays) since typed payloads; an arbitrary object is not.
    with pytest.raises(PayloadError, match=r"result of activity a: _Opaque .* is not JSON"):
        encode_value(_Opaque(), what="result of activity a")


class _Opaque:
    pass


def test_finite_values_pass_as_json_would_carry_them() -> None:
    assert check_args((1.5, (1e308,), {"a": None, 2: True}), what="x") == [1.5, [1e308], {"a": None, "2": True}]


class _Refusing:
    """A transport that must never be reached: the payload is refused before any call."""

    async def call(self, *args: object, **kwargs: object) -> dict[str, object]:
        raise AssertionError("nothing may be sent")

    async def close(self) -> None:
        pass


async def test_client_refuses_nan_before_sending() -> None:
    client = Client(_Refusing())
    with pytest.raises(PayloadError, match="argument 1 of workflow Greet: nan"):
        await client.start_workflow("Greet", math.nan, id="w", task_queue="q")
    handle = client.get_workflow_handle("w")
    with pytest.raises(PayloadError, match="argument 1 of signal poke: inf"):
        await handle.signal("poke", math.inf)
    with pytest.raises(PayloadError, match="argument 1 of query ask: -inf"):
        await handle.query("ask", -math.inf)


def test_kafka_records_refuse_nan() -> None:
    with pytest.raises(PayloadError, match="argument 1 of workflow Greet"):
        encode_start("default", "w", "Greet", "q", [math.nan])
    with pytest.raises(PayloadError, match="argument 1 of signal s"):
        encode_signal("default", "w", "s", [math.nan])


async def test_heartbeat_with_nan_raises_in_the_activity() -> None:
    beat = _Heartbeater(_Refusing(), "token", 1.0)
    context = ActivityContext(None, beat.record)  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match=r"argument 1 of activity\.heartbeat: nan"):
        context.heartbeat((math.nan,))
    beat.stop()


@workflow.defn
class NanResult:
    @workflow.run
    async def run(self) -> float:
        return math.nan


@workflow.defn
class NanActivity:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity("a", math.nan, start_to_close_timeout=timedelta(seconds=1))


def test_workflow_result_nan_fails_the_task_clearly() -> None:
    with pytest.raises(WorkflowTaskError, match="result of workflow NanResult: nan is not JSON"):
        Driver(NanResult, FakeHistory("NanResult")).step()


def test_activity_argument_nan_fails_the_task_clearly() -> None:
    with pytest.raises(WorkflowTaskError, match="argument 1 of activity a: nan is not JSON"):
        Driver(NanActivity, FakeHistory("NanActivity")).step()


def test_encode_cli_refuses_nan_input() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kadence.cli", "encode", "start", "--workflow-id", "w", "--workflow-type", "G",
         "--task-queue", "q", "--input", "[1, NaN]"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "argument 2 of --input: nan is not JSON" in done.stderr and "Traceback" not in done.stderr
