"""The stack trace section of ``kadence workflow describe``: the built-in ``__stack_trace``
query (kadence/_workflow/stack.py) asked with a short timeout, and what to say when no
worker answers it."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

from kadence._cli.common import visible
from kadence._client import Client
from kadence._http import path_segment
from kadence.exceptions import RPCError
from kadence_protocol.queries import STACK_TRACE_QUERY

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class StackTrace:
    text: str | None  # None: no answer
    problem: str = ""  # why there is no answer

    def to_json(self) -> dict[str, str | None]:
        return {"stack_trace": self.text, **({"stack_trace_error": self.problem} if self.problem else {})}


async def ask(client: Client, workflow_id: str, run_id: str | None, task_queue: str,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> StackTrace:
    """Ask the run's worker where its coroutines wait (``handle.query("__stack_trace")``
    with a timeout of its own, so a run nobody serves answers within ``timeout_s``)."""
    path = f"/api/v1/namespaces/{path_segment(client.namespace)}/workflows/{path_segment(workflow_id)}/query"
    body: dict[str, object] = {"query_type": STACK_TRACE_QUERY, "args": [], "run_id": run_id,
                               "timeout_ms": int(timeout_s * 1000)}
    try:
        answer = await client.transport.call("POST", path, body=body)
    except RPCError as exc:
        if exc.status == 504:
            return StackTrace(None, f"no worker answered within {timeout_s:g} s: is a worker polling task queue"
                                    f" {task_queue!r} with this workflow registered? ({exc.message})")
        if exc.status in (0, 503):
            raise
        return StackTrace(None, f"{exc.error_type}: {exc.message}")
    value = await client._decode_value(answer.get("result"), str, f"result of query {STACK_TRACE_QUERY}")
    return StackTrace(str(value))


def print_section(console: Console, trace: StackTrace) -> None:
    console.print(Text("Stack trace", style="bold"))
    if trace.text is None:
        console.print(trace.problem, style="yellow")
    else:
        console.print(Text(visible(trace.text)))
