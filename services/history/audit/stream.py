"""The continuous audit: a faust-streaming app that folds ``kadence.history`` as it is
published and logs chain breaks, gaps, conflicting duplicates and fold errors at once.

``python -m services.history.audit.stream`` runs it (``KADENCE_KAFKA_BOOTSTRAP`` names the
broker). Each run is folded by the same :class:`RunAudit` the batch ``kadence audit``
uses, so both find the same things; the batch command also compares with PostgreSQL.

A run whose first event was published before this app's group began reading is joined
mid-history: its state is unknown here, so it is skipped (the batch audit with
``--from-time`` completes such runs from PostgreSQL). Memory is bounded: the least
recently active runs are forgotten past ``max_runs``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import faust

from kadence_protocol import avro
from services.common import faust_app, kafka
from services.common.kafka import faust_credentials

from .replay import RunAudit, RunKey

log = logging.getLogger(__name__)

APP_ID = "kadence-audit"


class StreamAuditor:
    """The app's state and logic, apart from faust so it can run and be tested without it."""

    def __init__(self, *, max_runs: int = 100_000) -> None:
        self.max_runs = max_runs
        self.runs: OrderedDict[str, RunAudit] = OrderedDict()
        self.joined_mid_history: OrderedDict[str, None] = OrderedDict()
        self.findings: list[str] = []  # every problem logged, newest last (bounded)

    def take(self, value: bytes | None, where: str) -> None:
        if value is None:
            self._report(f"{where}: a record with no value on {kafka.HISTORY}")
            return
        try:
            name, record = avro.decode(value)
        except avro.DecodeError as exc:
            self._report(f"{where}: unreadable record: {exc}")
            return
        if name != "HistoryRecord":
            self._report(f"{where}: a {name} on {kafka.HISTORY}, not a HistoryRecord")
            return
        key = RunKey(record["namespace"], record["workflow_id"], record["run_id"])
        event = record["event"]
        audit = self.runs.get(key.run_id)
        if audit is None:
            if event["event_id"] != 1:
                self._remember(self.joined_mid_history, key.run_id, None)
                return
            audit = RunAudit(key)
        self._remember(self.runs, key.run_id, audit)
        held = len(audit.pending)
        for divergence in audit.add(event, avro.history_event_encoding(value)):
            self._report(f"{where}: {divergence}")
        if len(audit.pending) > held:
            self._report(f"{where}: {key.namespace}/{key.workflow_id} run {key.run_id}: gap: event "
                         f"{event['event_id']} arrived while {audit.next_event_id} is missing (held until it comes)")

    def _remember(self, table: OrderedDict[str, Any], run_id: str, value: Any) -> None:
        table[run_id] = value
        table.move_to_end(run_id)
        while len(table) > self.max_runs:
            table.popitem(last=False)

    def _report(self, line: str) -> None:
        log.warning("audit: %s", line)
        self.findings.append(line)
        del self.findings[:-1000]


def create_app(bootstrap: str, *, session_timeout_s: float = 10.0, app_id: str = APP_ID,
               datadir: str | None = None, auditor: StreamAuditor | None = None) -> tuple[faust.App, StreamAuditor]:
    """The faust app and the auditor it feeds; ``datadir`` is faust's working directory
    (default: ``audit/`` under the Kadence state directory, never the current directory)."""
    auditor = auditor or StreamAuditor()
    if datadir is None:
        from services.common.paths import state_dir

        datadir = str(state_dir() / "audit")
    # faust makes only the last level; on a clean machine the state directory is missing too.
    Path(datadir).mkdir(parents=True, exist_ok=True)
    app = faust_app.App(  # reads past a record the Kafka client cannot unpack
        app_id,
        broker=f"kafka://{bootstrap}",
        broker_credentials=faust_credentials(),  # TLS/SASL from the environment, as every client
        datadir=datadir,
        # exactly_once needs Kafka transactions; the audit only reads, so a record seen
        # twice after a restart is just a harmless duplicate delivery to it.
        processing_guarantee="at_least_once",
        # faust's 60 s default makes the first group join take about 30 s.
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=min(3.0, session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,  # kadence.history belongs to the services; never create it here
        web_enabled=False,
        store="memory://",
    )
    history = app.topic(kafka.HISTORY, key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw")

    @app.agent(history)
    async def fold(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            auditor.take(event.value, f"{message.topic}[{message.partition}]@{message.offset}")

    return app, auditor


def main() -> None:
    bootstrap = os.environ.get("KADENCE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    session = float(os.environ.get("KADENCE_AUDIT_SESSION_TIMEOUT_S", "10"))
    # One line instead of a worker that logs connection errors for ever.
    problem = asyncio.run(kafka.history_topic_problem(bootstrap))
    if problem is not None:
        print(f"kadence audit stream: {problem}", file=sys.stderr)
        sys.exit(2)
    app, _ = create_app(bootstrap, session_timeout_s=session)
    print(f"kadence audit stream: auditing {kafka.HISTORY} on {bootstrap} as it is published (consumer group"
          f" {APP_ID}, state in {app.conf.datadir}): chain breaks, gaps, conflicting duplicates and fold errors"
          " are logged as warnings", file=sys.stderr, flush=True)
    if len(sys.argv) == 1:
        sys.argv += ["worker", "--loglevel=info"]
    app.main()


if __name__ == "__main__":
    main()
