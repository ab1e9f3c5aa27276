"""QueryScope (services/common/matching/query_scope.py): which answers a query takes, and its wire form."""

from __future__ import annotations

import pytest

from services.common.matching import QueryScope


def test_a_scope_admits_its_namespace_and_its_queues_only() -> None:
    scope = QueryScope("shop", frozenset({"orders"}))
    assert scope.admits("shop", "orders")
    assert not scope.admits("shop", "cards")
    assert not scope.admits("bank", "orders")
    assert QueryScope("shop").admits("shop", "any queue")
    assert not QueryScope("shop").admits("bank", "any queue")


def test_the_wire_form_round_trips_and_a_body_without_one_has_none() -> None:
    for scope in (QueryScope("shop"), QueryScope("shop", frozenset({"b", "a"})), QueryScope("shop", frozenset())):
        assert QueryScope.from_json({"query_id": "1:x", **scope.to_json()}) == scope
    assert QueryScope.from_json({"query_id": "1:x", "result": "1"}) is None  # an older frontend
    with pytest.raises(ValueError, match="task_queues"):
        QueryScope.from_json({"namespace": "shop", "task_queues": "orders"})
