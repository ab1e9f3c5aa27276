"""The matching client (services/common/matching/client.py) once closed."""

from __future__ import annotations

import pytest

from services.common.matching.client import MatchingClient, Owner
from services.common.matching.errors import MatchingUnavailableError

pytestmark = pytest.mark.timeout(10)


async def test_a_closed_client_refuses_calls_instead_of_opening_a_new_session() -> None:
    client = MatchingClient(pool=None, task_partitions=1)  # type: ignore[arg-type]  # no owner look-up here
    await client.close()
    with pytest.raises(MatchingUnavailableError, match="closed"):
        await client._call(Owner(0, "http://127.0.0.1:9", "gone"), "/internal/poll", {}, timeout=1)
    assert client._session is None
