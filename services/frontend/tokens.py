"""Task tokens: opaque to workers, url-safe base64 of JSON naming one task attempt."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass

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

    def encode(self) -> str:
        raw = json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: object, *, field: str = "task_token") -> TaskToken:
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise InvalidArgument(f"{field} must be the non-empty string a poll returned", field=field)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"{field} is not a task token", field=field) from None
        if not isinstance(data, dict):
            raise InvalidArgument(f"{field} is not a task token", field=field)
        try:
            tok = cls(
                namespace=data["namespace"], workflow_id=data["workflow_id"], run_id=data["run_id"],
                scheduled_event_id=data["scheduled_event_id"], attempt=data["attempt"], kind=data["kind"],
            )
        except KeyError as exc:
            raise InvalidArgument(f"{field} lacks {exc.args[0]}", field=field) from None
        if not (all(isinstance(v, str) for v in (tok.namespace, tok.workflow_id, tok.run_id, tok.kind))
                and all(type(v) is int for v in (tok.scheduled_event_id, tok.attempt))
                and tok.kind in KINDS):
            raise InvalidArgument(f"{field} is not a task token", field=field)
        return tok
