"""Must fail ``mypy --strict`` (tests/unit/kadence/test_typed_results.py): a result used as the wrong type."""

from __future__ import annotations

from datetime import timedelta

from kadence import workflow

from .typed_results import Child, charge


@workflow.defn
class Wrong:
    @workflow.run
    async def run(self) -> str:
        cents: str = await workflow.execute_activity(charge, "o", start_to_close_timeout=timedelta(seconds=1))
        names: int = await workflow.execute_child_workflow(Child.run, 1)
        return cents + str(names)
