"""Which share of the pool (services/common/read_budgets.py) each API call's bounded reads
count against, by handler name.

History pages and a polled workflow task's events are what a replay reads, a flood of them
when a worker restarts with thousands of runs open; result waits come in floods of their own
(a client waiting on each of its runs); every other read-only call is a lookup. A command's
reads (the run a signal, a query or an activity's token names, a namespace not seen yet) are
never held back by reads: the command is what a caller is waiting on.
"""

from __future__ import annotations

from services.common.read_budgets import ReadKind

READ_KINDS: dict[str, ReadKind] = {
    **dict.fromkeys(("history", "poll_workflow_tasks"), ReadKind.HISTORY),
    **dict.fromkeys(("result", "result_batch"), ReadKind.RESULTS),
    **dict.fromkeys(("describe", "list_workflows", "count_workflows", "list_search_attributes",
                     "describe_task_queue", "list_namespaces", "describe_namespace", "list_schedules",
                     "describe_schedule"), ReadKind.LOOKUPS),
}


def read_kind(handler: str) -> ReadKind:
    """The share the reads of the call ``handler`` answers count against."""
    return READ_KINDS.get(handler, ReadKind.COMMANDS)
