"""The list page's search: the typed visibility query with the status and type filters ANDed on."""

from __future__ import annotations

from services.frontend.ui.data import Search


def test_the_typed_query_runs_as_typed_without_filters() -> None:
    assert Search("WorkflowType = 'A' ORDER BY StartTime DESC").list_query() == \
        "WorkflowType = 'A' ORDER BY StartTime DESC"
    assert Search().list_query() == ""


def test_filters_are_anded_and_an_order_by_stays_last() -> None:
    search = Search("WorkflowType = 'A' OR WorkflowType = 'B' order by StartTime", "Failed", "O'Brien")
    assert search.list_query() == ("(WorkflowType = 'A' OR WorkflowType = 'B') AND ExecutionStatus = 'Failed'"
                                   " AND WorkflowType = 'O''Brien' order by StartTime")
    assert Search(status="Running").list_query() == "ExecutionStatus = 'Running'"


def test_the_counts_group_by_status_under_the_same_condition_but_the_status_filter() -> None:
    search = Search("WorkflowType = 'A' ORDER BY StartTime", "Failed", "")
    assert search.count_query() == "(WorkflowType = 'A') GROUP BY ExecutionStatus"
    assert Search().count_query() == "GROUP BY ExecutionStatus"


def test_the_status_filter_offers_every_status_a_run_can_have() -> None:
    # Canceled was missing: a canceled run could be found only by typing the query.
    from services.frontend.ui.web import STATUSES
    from services.visibility.projection import ExecutionStatus

    assert set(STATUSES) == {status.value for status in ExecutionStatus}
