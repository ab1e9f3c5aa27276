"""The wording of the frontend handlers' own messages."""

from __future__ import annotations

from services.frontend.handlers import _a


def test_a_kind_of_task_takes_its_article() -> None:
    assert _a("workflow") == "a workflow"
    assert _a("activity") == "an activity"
