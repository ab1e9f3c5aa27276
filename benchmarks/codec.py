"""The Avro codec's CPU per workflow in the server: compiled codec against fastavro alone.

    python -m benchmarks.codec --rounds 5

History seals the events of each run it changes (each encoded once, hashed onto the run's
chain) and decodes each command it takes. This times, for the events and commands of a
one-activity workflow (11 events, 3 commands), that work with the compiled codec
(kadence_protocol/avro_writer.py, avro_reader.py) and with fastavro alone
(``KADENCE_AVRO_CODEC=fastavro``), alternated round by round in one process, and prints the
CPU microseconds per workflow of each (best of the rounds) and their ratio. End to end the
machine's drift hides a change of a few per cent of the server; this isolates it.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from kadence_protocol import avro
from services.common import chain
from services.history.builder import event_attributes

_T = 1_765_000_000_000
_RUN = "0193c9aa-1111-2222-3333-444455556666"
_REQUEST = "f3a1c2d4-aaaa-bbbb-cccc-123456789012"

# A one-activity workflow's history as history writes it (attributes the bench's run gives).
_EVENTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("WorkflowExecutionStarted", {"workflow_type": "OneActivity", "task_queue": "bench", "input": "[1]",
                                  "request_id": _REQUEST}),
    ("WorkflowTaskScheduled", {"task_queue": "bench"}),
    ("WorkflowTaskStarted", {"scheduled_event_id": 2, "identity": "worker-1"}),
    ("WorkflowTaskCompleted", {"scheduled_event_id": 2, "started_event_id": 3, "identity": "worker-1"}),
    ("ActivityTaskScheduled", {"activity_id": "1", "activity_type": "echo", "task_queue": "bench", "input": "[1]",
                               "start_to_close_timeout_ms": 10_000, "workflow_task_completed_event_id": 4}),
    ("ActivityTaskStarted", {"scheduled_event_id": 5, "identity": "worker-1", "attempt": 1}),
    ("ActivityTaskCompleted", {"scheduled_event_id": 5, "started_event_id": 6, "result": "1",
                               "identity": "worker-1"}),
    ("WorkflowTaskScheduled", {"task_queue": "bench"}),
    ("WorkflowTaskStarted", {"scheduled_event_id": 8, "identity": "worker-1"}),
    ("WorkflowTaskCompleted", {"scheduled_event_id": 8, "started_event_id": 9, "identity": "worker-1"}),
    ("WorkflowExecutionCompleted", {"result": "1", "workflow_task_completed_event_id": 10}),
)
_COMMANDS = ("StartWorkflowExecution", "RespondWorkflowTaskCompleted", "RespondActivityTaskCompleted")
_VALUES: dict[str, Any] = {
    "namespace": "default", "workflow_id": "cmp-burst-0123456789abcdef", "run_id": _RUN,
    "workflow_type": "OneActivity", "task_queue": "bench", "input": "[1]", "request_id": _REQUEST,
    "scheduled_event_id": 5, "started_event_id": 6, "attempt": 1, "identity": "worker-1", "result": "1",
    "commands": [], "task_id": f"{_RUN}:wt:2:1",
}


_PLAIN: dict[str, Any] = {"long": 0, "int": 0, "string": "x", "boolean": False}


def _filled(record: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` for the fields of ``record`` that have them; a plain value for every other
    field without a default (the rest take their defaults)."""
    out: dict[str, Any] = {}
    for f in avro.schemas().current[record]["fields"]:
        name, kind = f["name"], f["type"]
        if name in values:
            out[name] = values[name]
        elif "default" not in f:
            out[name] = _PLAIN.get(kind) if isinstance(kind, str) else None
    return out


def workload() -> tuple[list[dict[str, Any]], list[bytes]]:
    """The events to seal and the commands (encoded) to decode of one workflow."""
    events = [{"event_id": i, "event_time": _T + i, "event_type": t,
               "attributes": event_attributes(t, _filled(avro.event_attributes_type(t), a))}
              for i, (t, a) in enumerate(_EVENTS, 1)]
    commands = [avro.encode(name, _filled(f"kadence.{name}", _VALUES)) for name in _COMMANDS]
    return events, commands


def one_workflow(events: list[dict[str, Any]], commands: list[bytes]) -> None:
    previous = ""
    for event in events:
        previous, _ = chain.seal(previous, event)
    for data in commands:
        avro.decode(data)


def cpu_us_per_workflow(compiled: bool, n: int) -> float:
    schemas = avro.schemas()
    schemas.compiled = compiled
    events, commands = workload()
    started = time.process_time()
    for _ in range(n):
        one_workflow(events, commands)
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=3000, help="workflows per round and side")
    args = parser.parse_args()
    before = avro.schemas().compiled
    try:
        plain, compiled = [], []
        for _ in range(args.rounds):
            plain.append(cpu_us_per_workflow(False, args.n))
            compiled.append(cpu_us_per_workflow(True, args.n))
    finally:
        avro.schemas().compiled = before
    print(f"fastavro: {min(plain):.1f} us per workflow; compiled codec: {min(compiled):.1f} us; "
          f"ratio {min(compiled) / min(plain):.3f} (best of {args.rounds} rounds of {args.n})")


if __name__ == "__main__":
    main()
