"""Reply waiters of the frontend: one answer per caller, also for callers sharing a request id."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.common.config import Settings
from services.common.health import HealthReport, health_answer
from services.frontend import replies
from services.frontend.replies import ReplyRouter, Target

pytestmark = pytest.mark.timeout(10)


def _reply(request_id: str, run_id: str = "run-1") -> dict[str, Any]:
    return {"request_id": request_id, "reply_to": "fe-1", "ok": True, "run_id": run_id}


async def test_callers_waiting_on_one_request_id_each_get_the_reply() -> None:
    router = ReplyRouter("127.0.0.1:1", "fe-1")  # never started: no broker needed
    first, second = router.expect("r"), router.expect("r")
    router.deliver([_reply("r")])
    assert (await first)["run_id"] == (await second)["run_id"] == "run-1"
    router.forget("r", first)
    router.forget("r", second)
    await router.stop()  # closes the (never started) consumer


async def test_one_callers_clean_up_leaves_a_later_callers_waiter() -> None:
    """A retry registered after the first call's answer came: the first call's clean-up
    must not take the retry's waiter away (it hung 30 s and failed with 504)."""
    router = ReplyRouter("127.0.0.1:1", "fe-1")
    first = router.expect("r")
    router.deliver([_reply("r")])
    assert first.done()
    retry = router.expect("r")
    router.forget("r", first)
    router.deliver([_reply("r")])  # history's answer to the retry
    assert (await asyncio.wait_for(retry, 1))["run_id"] == "run-1"
    router.forget("r", retry)
    await router.stop()


async def test_a_forgotten_waiter_is_not_answered_and_others_are() -> None:
    router = ReplyRouter("127.0.0.1:1", "fe-1")
    gone, staying = router.expect("r"), router.expect("r")
    router.forget("r", gone)
    router.deliver([_reply("r"), _reply("other")])
    assert not gone.done() and staying.done()
    router.forget("r", staying)
    router.forget("r", staying)  # twice is harmless
    await router.stop()


async def test_a_reply_answers_only_the_callers_of_its_workflow() -> None:
    """Request ids are per workflow: two workflows' starts may carry the same one at once,
    and each must get its own workflow's reply (the first reply answered both)."""
    router = ReplyRouter("127.0.0.1:1", "fe-1")
    a = router.expect("r", Target("default", "wf-a"))
    b = router.expect("r", Target("default", "wf-b"))
    router.deliver([{**_reply("r", "run-a"), "namespace": "default", "workflow_id": "wf-a"}])
    assert (await a)["run_id"] == "run-a" and not b.done()
    router.deliver([{**_reply("r", "run-b"), "namespace": "default", "workflow_id": "wf-b"}])
    assert (await b)["run_id"] == "run-b"
    router.forget("r", a)
    router.forget("r", b)
    # A reply that names no workflow (an older writer) answers every caller of its request id.
    c = router.expect("r", Target("default", "wf-c"))
    router.deliver([_reply("r", "run-c")])
    assert (await c)["run_id"] == "run-c"
    await router.stop()


async def test_health_is_degraded_only_while_a_command_waits_long_with_no_reply_at_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("services.frontend.replies.time.monotonic", lambda: clock[0])
    router = ReplyRouter("127.0.0.1:1", "fe-1")
    after = replies.UNANSWERED_AFTER_S
    assert router.health().details["status"] == "ok"  # idle: no evidence either way
    clock[0] += after * 5
    assert not router.health().degraded  # idle for long: still no evidence
    waiting = router.expect("r")
    clock[0] += after / 2
    assert not router.health().degraded  # waiting, but not long yet
    clock[0] += after
    report = router.health()
    assert report.healthy and report.degraded and report.details["status"] == "degraded"
    assert report.details["waiting"] == 1 and report.details["last_reply_ms_ago"] is None
    router.deliver([{**_reply("other"), "reply_to": "fe-2"}])  # history answers someone
    assert not router.health().degraded  # a reply just came: history is at work
    clock[0] += after
    assert router.health().degraded  # quiet again, and "r" still waits
    router.deliver([_reply("r")])
    router.forget("r", waiting)
    assert not router.health().degraded and router.health().details["waiting"] == 0
    await router.stop()


async def test_the_unanswered_threshold_is_the_frontends_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """KADENCE_HEALTH_UNANSWERED_MS sets how long a command may wait unanswered before
    /health says degraded (it was a fixed 10 s)."""
    monkeypatch.setenv("KADENCE_HEALTH_UNANSWERED_MS", "250")
    assert Settings.from_env().health_unanswered_ms == 250
    monkeypatch.delenv("KADENCE_HEALTH_UNANSWERED_MS")
    assert Settings.from_env().health_unanswered_ms == 10_000
    clock = [1000.0]
    monkeypatch.setattr("services.frontend.replies.time.monotonic", lambda: clock[0])
    router = ReplyRouter("127.0.0.1:1", "fe-1", unanswered_after_s=0.25)
    router.expect("r")
    clock[0] += 0.2
    assert not router.health().degraded
    clock[0] += 0.1
    assert router.health().degraded and router.health().details["oldest_waiting_ms"] == 300
    await router.stop()
    with pytest.raises(ValueError, match="must be positive"):
        ReplyRouter("127.0.0.1:1", "fe-1", unanswered_after_s=0)


def test_a_degraded_report_makes_the_answer_degraded_not_stalled() -> None:
    def ok() -> HealthReport:
        return HealthReport(True, {"status": "ok"})

    def impaired() -> HealthReport:
        return HealthReport(True, {"status": "degraded"}, degraded=True)

    def stalled() -> HealthReport:
        return HealthReport(False, {})

    assert health_answer({"a": ok})[0:2] == (200, {"status": "ok", "a": {"status": "ok"}})
    assert health_answer({"a": ok, "b": impaired}) == (200, {"status": "degraded", "a": {"status": "ok"},
                                                             "b": {"status": "degraded"}})
    assert health_answer({"b": impaired, "c": stalled})[0] == 503
