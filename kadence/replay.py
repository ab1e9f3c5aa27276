"""Replaying recorded histories against workflow code, to catch non-deterministic changes.

Typical use is a test that loads a history saved from a real run (``handle.history()``
written as JSON) and replays it against the current code::

    Replayer(workflows=[Greet]).replay(json.load(open("greet.json")))

A mismatch raises :class:`kadence.exceptions.NonDeterminismError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kadence._worker.payloads import decode_events
from kadence._workflow.definition import WorkflowDefinition
from kadence._workflow.runner import WorkflowRunner
from kadence.converter import DataConverter
from kadence.interceptor import Interceptor

__all__ = ["Replayer", "decode_history"]


async def decode_history(events: Sequence[Mapping[str, Any]],
                         data_converter: DataConverter) -> list[Mapping[str, Any]]:
    """A history as the worker reads it: the payload codec of ``data_converter`` undone on
    the payloads workflow code reads (``handle.history()`` shows them encoded)."""
    return await decode_events(data_converter.payload_codec, events)


class Replayer:
    """Replays histories of the given workflow classes."""

    def __init__(self, *, workflows: Iterable[type], namespace: str = "default",
                 data_converter: DataConverter | None = None, interceptors: Sequence[Interceptor] = ()) -> None:
        """``data_converter``: the one the workers use, when it is not the default. A history
        written with a payload codec is replayed after ``await decode_history(events, converter)``.
        ``interceptors``: the workflow interceptors the workers run (kadence.interceptor)."""
        self._definitions = {d.name: d for d in map(WorkflowDefinition.of, workflows)}
        self._namespace = namespace
        self._converter = data_converter
        self._interceptors = list(interceptors)

    def replay(
        self,
        history: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *,
        workflow_id: str | None = None,
        run_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Replay one run's events (a list, or a mapping with ``events`` and optionally
        ``workflow_id``/``run_id``, which seed ``workflow.random()``).

        Returns the commands of a trailing workflow task that has no outcome yet (empty
        for a closed run). Raises NonDeterminismError when the code disagrees with history
        and WorkflowTaskError when the code raises.
        """
        if isinstance(history, Mapping):
            events: Sequence[Mapping[str, Any]] = history["events"]
            workflow_id = workflow_id or history.get("workflow_id")
            run_id = run_id or history.get("run_id")
        else:
            events = history
        if not events or events[0].get("event_type") != "WorkflowExecutionStarted":
            raise ValueError("a history must start with a WorkflowExecutionStarted event")
        workflow_type = str((events[0].get("attributes") or {}).get("workflow_type", ""))
        definition = self._definitions.get(workflow_type)
        if definition is None:
            raise ValueError(f"no workflow registered for type {workflow_type!r}; known: {sorted(self._definitions)}")
        runner = WorkflowRunner(
            definition,
            namespace=self._namespace,
            workflow_id=workflow_id or "replay",
            run_id=run_id or "replay",
            data_converter=self._converter,
            interceptors=self._interceptors,
        )
        try:
            return [command.to_json() for command in runner.apply(events)]
        finally:
            runner.dispose()
