"""The outcome of a run, as a result wait answers it.

One shape for both sides: the frontend builds it from a run's row, and history sends it
in the close notification (``NOTIFY kadence_closed``), so that a waiting frontend can
answer without reading the row back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from kadence_protocol.enums import RunStatus

RUNNING = RunStatus.RUNNING
CHANNEL = "kadence_closed"
# PostgreSQL refuses a notification payload of 8000 bytes or more; a larger outcome
# is announced by its run id alone and read from the row.
MAX_PAYLOAD = 7900


def outcome(status: str, run_id: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """The answer of a result wait for a run in ``status`` whose state is ``state``."""
    if status == RUNNING:
        return {"status": RUNNING}
    out: dict[str, Any] = {"status": status, "run_id": run_id}
    if status == RunStatus.COMPLETED:
        out["result"] = state.get("result")
    elif status == RunStatus.CONTINUED_AS_NEW or (
            status in (RunStatus.TERMINATED, RunStatus.FAILED, RunStatus.TIMED_OUT) and state.get("new_run_id")):
        # Terminated naming a new run: by a reset (services/history/reset.py); Failed or TimedOut
        # naming one: retried (services/history/retry.py). Followed as continue-as-new.
        out["new_run_id"] = state.get("new_run_id")
    elif status == RunStatus.CANCELED:
        out["details"] = state.get("cancel_details")
    if status == RunStatus.TERMINATED:
        out["reason"] = state.get("terminate_reason") or ""  # a row written before it kept none
    if state.get("failure") is not None:
        out["failure"] = state["failure"]
    return out


def close_payload(run_id: str, answer: Mapping[str, Any]) -> str:
    """``run_id``, then a space and the outcome as JSON when it fits a notification."""
    with_outcome = f"{run_id} {orjson.dumps(answer).decode()}"
    return with_outcome if len(with_outcome.encode()) <= MAX_PAYLOAD else run_id


def parse_close_payload(payload: str) -> tuple[str, dict[str, Any] | None]:
    """(run id, outcome or None) of a close notification; a bare run id has no outcome."""
    run_id, _, rest = payload.partition(" ")
    if not rest:
        return run_id, None
    try:
        answer = orjson.loads(rest)
    except orjson.JSONDecodeError:
        return run_id, None
    return run_id, answer if isinstance(answer, dict) else None
