"""Task tokens: opaque to workers, url-safe base64 of JSON naming one task attempt."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import orjson

from .errors import InvalidArgument

KINDS = ("workflow", "activity", "query")


@dataclass(frozen=True)
class TaskToken:
    namespace: str
    workflow_id: str
    run_id: str
    scheduled_event_id: int
    attempt: int
    kind: str
    # A workflow task's started time as the worker was given it (ms); 0 in older tokens.
    started_time: int = 0

    def encode(self) -> str:
        raw = orjson.dumps({"attempt": self.attempt, "kind": self.kind, "namespace": self.namespace,
                            "run_id": self.run_id, "scheduled_event_id": self.scheduled_event_id,
                            "started_time": self.started_time, "workflow_id": self.workflow_id})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: object, *, field: str = "task_token") -> TaskToken:
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise InvalidArgument(f"{field} must be the non-empty string a poll returned", field=field)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = orjson.loads(raw)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"{field} is not a task token", field=field) from None
        if not isinstance(data, dict):
            raise InvalidArgument(f"{field} is not a task token", field=field)
        try:
            tok = cls(
                namespace=data["namespace"], workflow_id=data["workflow_id"], run_id=data["run_id"],
                scheduled_event_id=data["scheduled_event_id"], attempt=data["attempt"], kind=data["kind"],
                started_time=data.get("started_time", 0),
            )
        except KeyError as exc:
            raise InvalidArgument(f"{field} lacks {exc.args[0]}", field=field) from None
        if not (all(isinstance(v, str) for v in (tok.namespace, tok.workflow_id, tok.run_id, tok.kind))
                and all(type(v) is int for v in (tok.scheduled_event_id, tok.attempt, tok.started_time))
                and tok.kind in KINDS):
            raise InvalidArgument(f"{field} is not a task token", field=field)
        return tok
