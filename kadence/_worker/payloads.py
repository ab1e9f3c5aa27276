"""The payload codec at the worker's edge: undone on the events a workflow task brings,
applied to the commands it sends.

Workflow code runs synchronously on its own loop while a codec is async, so the worker
decodes every payload the workflow runtime reads before an activation and encodes the
payloads of its commands after; the runtime in between only ever sees plain JSON text.
Payloads the runtime never reads (the command events' own copies, failures) are left as
history holds them. Search attributes (``workflow.upsert_search_attributes``'s marker) are
never encoded: the frontend checks them and visibility indexes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kadence.converter import PayloadCodec, decode_args_payload, decode_payload, encode_payload
from kadence_protocol.enums import CommandType, EventType
from kadence_protocol.markers import SEARCH_ATTRIBUTES_MARKER

__all__ = ["decode_events", "decode_updates", "encode_commands"]

#: Per event type, the payload attributes workflow code reads: name -> is an argument array.
_EVENT_PAYLOADS: Mapping[str, Mapping[str, bool]] = {
    EventType.WORKFLOW_EXECUTION_STARTED: {"input": True, "memo": False},
    EventType.WORKFLOW_EXECUTION_SIGNALED: {"input": True},
    EventType.ACTIVITY_TASK_COMPLETED: {"result": False},
    EventType.ACTIVITY_TASK_TIMED_OUT: {"last_heartbeat_details": True},
    EventType.ACTIVITY_TASK_CANCELED: {"details": True},
    EventType.MARKER_RECORDED: {"details": False},  # workflow.side_effect values
    EventType.CHILD_WORKFLOW_EXECUTION_COMPLETED: {"result": False},
    EventType.CHILD_WORKFLOW_EXECUTION_CANCELED: {"details": False},
    EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED: {"input": True},  # replayed: the handler runs again on it
}

#: Per command type, the payload attributes it carries: name -> is an argument array.
_COMMAND_PAYLOADS: Mapping[str, Mapping[str, bool]] = {
    CommandType.SCHEDULE_ACTIVITY_TASK: {"input": True},
    CommandType.COMPLETE_WORKFLOW_EXECUTION: {"result": False},
    CommandType.CONTINUE_AS_NEW_WORKFLOW_EXECUTION: {"input": True, "memo": False},
    CommandType.RECORD_MARKER: {"details": False},
    CommandType.START_CHILD_WORKFLOW_EXECUTION: {"input": True},
    CommandType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION: {"input": True},
    CommandType.CANCEL_WORKFLOW_EXECUTION: {"details": False},
    CommandType.COMPLETE_WORKFLOW_UPDATE: {"result": False},
}


async def decode_events(codec: PayloadCodec | None, events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``events`` with the codec undone on the payloads workflow code reads."""
    if codec is None:
        return list(events)
    decoded: list[Mapping[str, Any]] = []
    for event in events:
        fields = _EVENT_PAYLOADS.get(str(event.get("event_type")))
        attrs = event.get("attributes") or {}
        if not fields or not any(attrs.get(name) is not None for name in fields):
            decoded.append(event)
            continue
        new_attrs = dict(attrs)
        for name, is_args in fields.items():
            if is_args:
                new_attrs[name] = await decode_args_payload(codec, attrs.get(name))
            else:
                new_attrs[name] = await decode_payload(codec, attrs.get(name))
        decoded.append({**event, "attributes": new_attrs})
    return decoded


async def decode_updates(codec: PayloadCodec | None,
                         updates: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The update requests a workflow task brings (update_id, name, input) with the codec
    undone on their input, which the validator and handler read."""
    if codec is None:
        return list(updates)
    return [{**u, "input": await decode_args_payload(codec, u.get("input"))} for u in updates]


def _plain(command: Mapping[str, Any]) -> bool:
    """Whether a command's payloads travel without the codec: the search-attribute marker's
    values are checked by the frontend and indexed by visibility, so they stay readable."""
    attrs = command.get("attributes") or {}
    return (command.get("command_type") == CommandType.RECORD_MARKER
            and attrs.get("marker_name") == SEARCH_ATTRIBUTES_MARKER)


async def encode_commands(codec: PayloadCodec | None, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Commands (as sent) with the codec applied to their payloads."""
    if codec is None:
        return commands
    encoded = []
    for command in commands:
        fields = _COMMAND_PAYLOADS.get(str(command.get("command_type")))
        if fields and not _plain(command):
            attrs = dict(command.get("attributes") or {})
            for name, is_args in fields.items():
                if isinstance(attrs.get(name), str):
                    attrs[name] = await encode_payload(codec, attrs[name], args=is_args)
            command = {**command, "attributes": attrs}
        encoded.append(command)
    return encoded
