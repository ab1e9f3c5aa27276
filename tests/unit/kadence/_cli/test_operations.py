"""kadence/_cli/operations.py: the exit code of a cancel of a closed run, whichever frontend answers."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from kadence._cli.common import ExitCode, Failed
from kadence._cli.operations import _cancel
from kadence._client import WorkflowHandle
from kadence.exceptions import WorkflowAlreadyClosedError

pytestmark = pytest.mark.timeout(10)


class OlderFrontend:
    """A handle whose frontend still answers a closed run's cancel 409 WorkflowAlreadyClosed."""

    async def cancel(self, reason: str = "") -> Any:
        raise WorkflowAlreadyClosedError(409, "WorkflowAlreadyClosed", "run r1 is already closed (Completed)")


def test_an_older_frontends_409_for_a_closed_run_exits_3_as_the_404_does() -> None:
    with pytest.raises(Failed) as ended:
        asyncio.run(_cancel(cast(WorkflowHandle, OlderFrontend()), "done"))
    assert ended.value.code == ExitCode.NOT_FOUND and "already closed (Completed)" in ended.value.message
