"""What the audit finds: a :class:`Divergence` about one run (:class:`RunKey`) and its kinds.

The audit (``services.history.audit``) reports and stores them; any service reads them back
(``verifications.py``) with these types.
"""

from __future__ import annotations

from dataclasses import dataclass

# Kinds of divergence, as reported.
GAP = "gap"
CONFLICTING_DUPLICATE = "conflicting-duplicate"
CHAIN_BREAK = "chain-break"
FOLD_ERROR = "fold-error"
EVENT_MISMATCH = "event-mismatch"
MISSING_IN_POSTGRES = "missing-in-postgres"
MISSING_ON_TOPIC = "missing-on-topic"
STATE_MISMATCH = "state-mismatch"
POSTGRES_CHAIN_BREAK = "postgres-chain-break"


@dataclass(frozen=True)
class RunKey:
    namespace: str
    workflow_id: str
    run_id: str


@dataclass(frozen=True)
class Divergence:
    """One thing that does not agree, about one run."""

    run: RunKey
    kind: str
    detail: str
    event_id: int | None = None

    def __str__(self) -> str:
        at = f" at event {self.event_id}" if self.event_id is not None else ""
        return (f"{self.run.namespace}/{self.run.workflow_id} run {self.run.run_id}: "
                f"{self.kind}{at}: {self.detail}")
