"""services/history/routing.py: a command record must be keyed namespace/workflow_id and on
the partition that key hashes to."""

from __future__ import annotations

from services.common import kafka
from services.history.routing import misrouted


def test_a_keyed_record_on_its_partition_passes_and_others_are_named() -> None:
    key = kafka.workflow_key("default", "order-1")
    right = kafka.partition_for(key, 8)
    assert misrouted(key, right, "default", "order-1", 8) is None
    assert misrouted(key, 5, "default", "order-1", 0) is None  # partition count unknown: not checked
    wrong = misrouted(key, (right + 1) % 8, "default", "order-1", 8)
    assert wrong is not None and f"belongs on partition {right} of 8" in wrong
    assert "no key: its key must be" in (misrouted(None, right, "default", "order-1", 8) or "")
    assert "not namespace/workflow_id" in (misrouted(b"default/other", right, "default", "order-1", 8) or "")
