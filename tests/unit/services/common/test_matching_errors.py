"""services/common/matching/errors.py: the messages callers read."""

from __future__ import annotations

from services.common.matching.errors import NoPollerError


def test_no_poller_names_the_time_in_tenths_of_a_second() -> None:
    assert str(NoPollerError("orders", 9.99999)) == \
        "no worker polled task queue 'orders' within 10 s to answer the query"
    assert "within 2.5 s" in str(NoPollerError("orders", 2.5))
