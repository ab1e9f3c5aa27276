"""The benchmark's figures (wall-clock timer lateness, the sustained run's windows) and its clean-up."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time

import pytest

from benchmarks.bench import Bench, same_second_lateness, wall_lateness
from benchmarks.sustained import _window, cpu_drift


def test_wall_lateness_is_after_minus_before_minus_the_sleep() -> None:
    samples = [[100.0, 101.010], [100.0, 101.020], [100.0, 100.999]]
    figures = wall_lateness(samples, 1.0)
    assert figures["min_ms"] == pytest.approx(-1.0, abs=1e-6)
    assert figures["max_ms"] == pytest.approx(20.0, abs=1e-6)
    assert figures["early"] == 1
    assert figures["replayed"] == 0


def test_a_sample_read_during_a_replay_is_left_out_and_counted() -> None:
    # `before` re-read after the wake-up: the span is far below the sleep.
    figures = wall_lateness([[100.0, 101.005], [101.004, 101.005]], 1.0)
    assert figures["replayed"] == 1
    assert figures["p99_ms"] == pytest.approx(5.0, abs=1e-6)


def test_same_second_lateness_tells_replays_and_late_first_tasks_from_timers() -> None:
    due = 1000.0
    samples = [
        [970.0, 1000.010, 969.995],  # slept 30 s from its call: 10 ms late, its own sleep 5 ms late
        [1000.5, 1000.501, 969.990],  # read in a replay: a span far below the 30 s asked for
        [1000.2, 1000.300, 1000.1],  # its first task came after the moment: no sleep at all
    ]
    figures = same_second_lateness(samples, due)
    assert figures["replayed"] == 1 and figures["late_calls"] == 1 and figures["early"] == 0
    assert figures["min_ms"] == pytest.approx(10.0, abs=1e-6)
    assert figures["sleep_p99_ms"] == pytest.approx(100.0, abs=1e-6)
    # A workflow of an older checkout returns no now: nothing tells a replay apart.
    older = same_second_lateness([s[:2] for s in samples], due)
    assert older["replayed"] == 0 and older["late_calls"] == 2 and "sleep_p99_ms" not in older


def test_windows_cover_the_first_and_last_bursts_holding_the_window() -> None:
    bursts = [{"n": 10, "seconds": 1.0}, {"n": 10, "seconds": 2.0}, {"n": 10, "seconds": 4.0}]
    assert _window(bursts, 10, first=True) == 10.0
    assert _window(bursts, 10, first=False) == 2.5
    assert _window(bursts, 20, first=True) == pytest.approx(20 / 3)


def test_cpu_drift_is_the_last_window_over_the_first_weighted_by_workflows() -> None:
    bursts = [{"n": 10, "cpu_ms_per_wf": {"server": 1.0, "worker": 0.2}},
              {"n": 30, "cpu_ms_per_wf": {"server": 2.0, "worker": 0.2}},
              {"n": 10, "cpu_ms_per_wf": {"server": 3.0, "worker": 0.4}},
              {"n": 10, "cpu_ms_per_wf": {"server": 1.5, "worker": 0.0}}]
    out = cpu_drift(bursts, 20)
    assert out["cpu_ms_per_wf_first"] == {"server": pytest.approx(1.75), "worker": pytest.approx(0.2)}
    assert out["cpu_ms_per_wf_last"] == {"server": pytest.approx(2.25), "worker": pytest.approx(0.2)}
    assert out["cpu_drift"] == {"server": pytest.approx(2.25 / 1.75), "worker": pytest.approx(1.0)}
    # A role with no CPU in the first window has no ratio rather than a division by zero.
    assert "worker" not in cpu_drift([{"n": 1, "cpu_ms_per_wf": {"server": 1.0, "worker": 0.0}}], 1)["cpu_drift"]


def test_the_visibility_lag_figures_are_one_json_object() -> None:
    from benchmarks.visibility import figures

    row = figures(4, 2.0, [30.0, 10.0, 20.0], 0.05)
    assert row == {"benchmark": "visibility_lag", "workflows": 4, "listed": 3, "never_listed": 1,
                   "workflows_per_second": 2.0, "p50_ms": 20.0, "p95_ms": 30.0, "p99_ms": 30.0, "max_ms": 30.0,
                   "poll_interval_ms": 50}
    assert figures(2, 1.0, [], 0.1)["p99_ms"] is None


async def test_a_start_that_fails_stops_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service that does not come up must not leave the ones started before it running."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    bench = Bench(argparse.Namespace(target=None, topology="services"))

    async def fails() -> None:
        bench.children.append(child)
        raise RuntimeError("the frontend exited early")

    monkeypatch.setattr(bench, "_start", fails)
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            await bench.start()
        assert child.poll() is not None, "the service started first is still running"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_codec_benchmark_workload_is_a_one_activity_workflow_both_ways() -> None:
    from benchmarks import codec
    from kadence_protocol import avro

    events, commands = codec.workload()
    assert len(events) == 11 and [avro.decode(c)[0] for c in commands] == list(codec._COMMANDS)
    before = avro.schemas().compiled
    try:
        assert codec.cpu_us_per_workflow(False, 2) > 0 and codec.cpu_us_per_workflow(True, 2) > 0
    finally:
        avro.schemas().compiled = before


async def test_a_phase_of_zero_workflows_is_skipped_not_a_crash() -> None:
    """``--latency-n 0`` / ``--timer-n 0``: no phase and no row (the percentiles of nothing raised)."""
    bench = Bench(argparse.Namespace(target=None, topology="dev"))
    await bench.latency(0, 0)
    await bench.timers(0, 0)
    assert bench.results == []


def test_same_second_lateness_of_timers_due_at_the_moment_itself() -> None:
    # SleepUntil now counts its delay from the call: each timer is due at the moment itself.
    due = 1000.0
    samples = [
        [970.0, 1000.010, 969.900, 0.0],  # called 100 ms after its task's now: 10 ms late all the same
        [1000.5, 1000.501, 969.990, 1.0],  # its first read came in a replay
        [1000.2, 1000.300, 1000.1, 0.0],  # its first task came after the moment: 0 delay asked
    ]
    figures = same_second_lateness(samples, due)
    assert figures["replayed"] == 1 and figures["late_calls"] == 1 and figures["early"] == 0
    assert figures["min_ms"] == pytest.approx(10.0, abs=1e-6)
    assert figures["sleep_p99_ms"] == pytest.approx(100.0, abs=1e-6)  # past the later of due and the call
    assert figures["call_p99_ms"] == pytest.approx(100.0, abs=1e-6)


async def test_sleep_until_asks_for_the_delay_from_the_wall_clock_at_its_call() -> None:
    from benchmarks.workflows import SleepUntil
    from kadence.testing import WorkflowEnvironment

    due = time.time() + 5
    async with WorkflowEnvironment(workflows=[SleepUntil]) as env:
        handle = await env.start_workflow(SleepUntil.run, due, id="due", task_queue="q")
        before, _, now, replaying = await handle.result()
        started = next(e for e in env._run(handle.run_id).events if e["event_type"] == "TimerStarted")
    assert replaying == 0.0 and before >= now
    # Due at the moment itself (rounded up to the ms), not at `due` plus the wait before the call.
    assert started["attributes"]["start_to_fire_timeout_ms"] == math.ceil((due - before) * 1000)


async def test_sleep_until_replayed_after_the_moment_still_starts_its_timer() -> None:
    # A run replayed after the moment reads a clock past it: its code must start the timer
    # its history holds all the same, or the replay fails as non-deterministic.
    from benchmarks.workflows import SleepUntil
    from kadence.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[SleepUntil]) as env:
        handle = await env.start_workflow(SleepUntil.run, time.time() - 1, id="past", task_queue="q")
        await handle.result()
        kinds = [e["event_type"] for e in env._run(handle.run_id).events]
    assert "TimerStarted" in kinds
