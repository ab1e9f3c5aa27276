"""The list page's search: the typed visibility query with the status and type filters ANDed on."""

from __future__ import annotations

from typing import cast

import pytest

from services.common.visibility import query as q
from services.frontend.auth import Authenticator, api_key_entry
from services.frontend.errors import PermissionDenied
from services.frontend.handlers import Handlers
from services.frontend.ui.data import Search, UiData


def test_the_typed_query_runs_as_typed_without_filters() -> None:
    assert Search("WorkflowType = 'A' ORDER BY StartTime DESC").list_query() == \
        "WorkflowType = 'A' ORDER BY StartTime DESC"
    assert Search().list_query() == ""


def test_filters_are_anded_and_an_order_by_stays_last() -> None:
    search = Search("WorkflowType = 'A' OR WorkflowType = 'B' order by StartTime", "Failed", "O'Brien")
    assert search.list_query() == ("(WorkflowType = 'A' OR WorkflowType = 'B') AND ExecutionStatus = 'Failed'"
                                   " AND WorkflowType = 'O''Brien' order by StartTime")
    assert Search(status="Running").list_query() == "ExecutionStatus = 'Running'"


def test_a_type_filter_holding_a_backslash_finds_that_type() -> None:
    # The language reads a backslash as an escape: quoted as it was, 'Back\slash' filtered for
    # the type Backslash (another type's runs) and 'x\' left its string open.
    query = Search(workflow_type="Back\\slash").list_query()
    assert query == "WorkflowType = 'Back\\\\slash'"
    tokens = q.tokenize(query)
    assert [t.value for t in tokens if t.kind is q.Kind.STRING] == ["Back\\slash"]
    assert [t.value for t in q.tokenize(Search(workflow_type="x\\").list_query()) if t.kind is q.Kind.STRING] == ["x\\"]


def test_the_counts_group_by_status_under_the_same_condition_but_the_status_filter() -> None:
    search = Search("WorkflowType = 'A' ORDER BY StartTime", "Failed", "")
    assert search.count_query() == "(WorkflowType = 'A') GROUP BY ExecutionStatus"
    assert Search().count_query() == "GROUP BY ExecutionStatus"


def test_the_status_filter_offers_every_status_a_run_can_have() -> None:
    # Canceled was missing: a canceled run could be found only by typing the query.
    from kadence_protocol.enums import RunStatus
    from services.frontend.ui.web import STATUSES

    assert set(STATUSES) == {status.value for status in RunStatus}


async def test_the_audit_and_the_dead_letters_each_say_what_needs_admin_everywhere() -> None:
    auth = Authenticator.from_mapping({"api_keys": [api_key_entry("viewer", "viewer-key-0123456789", [
        {"namespace": "shop", "permissions": ["read"]}])]})
    data = UiData(handlers=cast(Handlers, object()), auth=auth)
    with pytest.raises(PermissionDenied, match=r"every namespace .* that the audit needs"):
        await data.audit_status("Bearer viewer-key-0123456789")
    with pytest.raises(PermissionDenied, match=r"every namespace .* that dead letters need"):
        await data.dead_letters("Bearer viewer-key-0123456789")
