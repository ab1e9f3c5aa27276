"""FrontendService.stop (services/frontend/app.py): every step runs whatever an earlier one raised."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.config import Settings
from services.frontend.app import FrontendService
from tests.unit.services._stop_parts import Failed, Part

pytestmark = pytest.mark.timeout(10)


async def test_a_failed_step_still_stops_every_later_part() -> None:
    stopped: list[str] = []
    frontend = FrontendService(Settings(database_url="postgresql://nowhere/none"))
    parts: Any = frontend
    parts._runner = Part("server", stopped)
    parts.quotas = Part("quotas", stopped, fails=True)
    parts.reply_notices, parts._engine = Part("reply notices", stopped), Part("engine", stopped)
    parts._closes, parts._replies = Part("closes", stopped), Part("replies", stopped)
    parts._producer, parts._matching = Part("producer", stopped, fails=True), Part("matching", stopped)
    parts._pool = Part("pool", stopped)
    with pytest.raises(Failed):
        await frontend.stop()
    assert stopped == ["server", "quotas", "reply notices", "engine", "closes", "replies", "producer",
                       "matching", "pool"]
