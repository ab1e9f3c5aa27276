"""Task tokens: opaque to workers, naming one task attempt and signed by the frontend.

A token is ``<payload>.<mac>``: url-safe base64 of JSON (namespace, task queue, run, event,
attempt, kind) and of the first 16 bytes of its HMAC-SHA256 under the server's first key
(``TokenKeys``). Every configured key verifies, so a key rotates in two steps with both
valid for a while. A token that does not verify, or that names another namespace than the
request's, is refused with 403 (``PermissionDenied``): only a poll hands tokens out.

The keys also remember the last ``ISSUED_REMEMBERED`` tokens they signed, by their text: a
token that comes back exactly as this frontend handed it out is the very text whose
payload it signed, so its task is taken from there, without decoding and verifying it again
(every answer carries a token; that was a few per cent of the server). Any other text, a
token of another frontend included, takes the full check.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .errors import InvalidArgument, PermissionDenied

KINDS = ("workflow", "activity", "query")
#: The setting naming the keys: comma-separated, the first signs, all verify.
KEYS_SETTING = "KADENCE_TASK_TOKEN_KEYS"
MIN_KEY_CHARS = 16
# 128 bits of the digest: forging one takes 2**128 tries, and the token stays short.
_MAC_BYTES = 16
_MAX_TOKEN_CHARS = 8192
# Tokens remembered as issued: more than the tasks a frontend has out at once in practice
# (a worker's default ceilings are 1,000 workflow tasks and 100 activities), a few MB at most.
ISSUED_REMEMBERED = 16_384


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# base64.b64decode(..., altchars=b"-_", validate=True) as it runs, without building this
# table on every call (every answer carries a token).
_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _unb64(text: str) -> bytes:
    """Strict: characters outside the alphabet are an error, not skipped (a non-ASCII
    character is a ValueError, as base64's)."""
    return binascii.a2b_base64((text + "=" * (-len(text) % 4)).encode("ascii").translate(_URLSAFE),
                               strict_mode=True)


@dataclass(frozen=True)
class TokenKeys:
    """The HMAC keys of task tokens: ``keys[0]`` signs, every one verifies."""

    keys: tuple[bytes, ...]
    # The tokens signed lately, by text, oldest first (TaskToken.encode, TaskToken.decode).
    issued: OrderedDict[str, TaskToken] = field(default_factory=OrderedDict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError(f"{KEYS_SETTING} names no key")
        for key in self.keys:
            if len(key) < MIN_KEY_CHARS:
                raise ValueError(f"each key of {KEYS_SETTING} must have at least {MIN_KEY_CHARS} characters")

    @classmethod
    def parse(cls, setting: str) -> TokenKeys:
        """Keys from the setting's text: comma-separated, blanks around them ignored."""
        return cls(tuple(k.strip().encode() for k in setting.split(",") if k.strip()))

    @classmethod
    def of(cls, keys: Iterable[str]) -> TokenKeys:
        return cls(tuple(k.encode() for k in keys))

    @staticmethod
    def new_key() -> str:
        """A random key fit for the setting (url-safe, no comma)."""
        return secrets.token_urlsafe(32)

    # hmac.digest: the one-shot form (OpenSSL's), cheaper than building an HMAC object;
    # every poll signs tokens and every answer verifies one.
    def sign(self, payload: bytes) -> bytes:
        return hmac.digest(self.keys[0], payload, "sha256")[:_MAC_BYTES]

    def verifies(self, payload: bytes, mac: bytes) -> bool:
        for key in self.keys:
            if hmac.compare_digest(hmac.digest(key, payload, "sha256")[:_MAC_BYTES], mac):
                return True
        return False


@dataclass(frozen=True)
class TaskToken:
    namespace: str
    workflow_id: str
    run_id: str
    scheduled_event_id: int
    attempt: int
    kind: str
    # A workflow task's started time as the worker was given it (ms); 0 for query tasks.
    started_time: int = 0
    # The task queue the task was polled from ("" for query tasks, which name no queue here).
    task_queue: str = ""

    def encode(self, keys: TokenKeys) -> str:
        raw = orjson.dumps({"attempt": self.attempt, "kind": self.kind, "namespace": self.namespace,
                            "run_id": self.run_id, "scheduled_event_id": self.scheduled_event_id,
                            "started_time": self.started_time, "task_queue": self.task_queue,
                            "workflow_id": self.workflow_id})
        text = f"{_b64(raw)}.{_b64(keys.sign(raw))}"
        # Only a token decode would take is remembered, so that decode answers as it would.
        if len(text) <= _MAX_TOKEN_CHARS and self._readable():
            issued = keys.issued
            issued[text] = self
            if len(issued) > ISSUED_REMEMBERED:
                issued.popitem(last=False)
        return text

    def _readable(self) -> bool:
        """Whether decode takes these fields (as they come back from the JSON)."""
        return (type(self.namespace) is str and type(self.workflow_id) is str and type(self.run_id) is str
                and type(self.kind) is str and type(self.task_queue) is str and type(self.scheduled_event_id) is int
                and type(self.attempt) is int and type(self.started_time) is int and self.kind in KINDS)

    @classmethod
    def decode(cls, token: object, keys: TokenKeys, *, field: str = "task_token") -> TaskToken:
        """The token's task, once its signature verifies (403 otherwise; 400 if it is no token)."""
        if type(token) is str:
            known = keys.issued.get(token)
            if known is not None:  # the text these keys signed: it verifies and reads as this task
                return known
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise InvalidArgument(f"{field} must be the non-empty string a poll returned", field=field)
        payload_text, dot, mac_text = token.partition(".")
        try:
            raw, mac = _unb64(payload_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"{field} is not a task token", field=field) from None
        if not dot:  # the unsigned format of earlier versions, or one written by hand
            raise PermissionDenied(f"{field} is not signed: use the token a poll returned", field=field)
        # Verified before it is parsed: nothing of an unsigned payload is looked at.
        # One spelling per signature (base64's spare trailing bits must be the canonical zeros).
        if _b64(mac) != mac_text or not keys.verifies(raw, mac):
            raise PermissionDenied(f"{field} was not issued by this server (forged, altered or signed with a"
                                   " retired key)", field=field)
        try:
            data = orjson.loads(raw)
        except ValueError:
            raise InvalidArgument(f"{field} is not a task token", field=field) from None
        if not isinstance(data, dict):
            raise InvalidArgument(f"{field} is not a task token", field=field)
        try:
            tok = cls(
                namespace=data["namespace"], workflow_id=data["workflow_id"], run_id=data["run_id"],
                scheduled_event_id=data["scheduled_event_id"], attempt=data["attempt"], kind=data["kind"],
                started_time=data.get("started_time", 0), task_queue=data.get("task_queue", ""),
            )
        except KeyError as exc:
            raise InvalidArgument(f"{field} lacks {exc.args[0]}", field=field) from None
        if not (all(isinstance(v, str) for v in (tok.namespace, tok.workflow_id, tok.run_id, tok.kind,
                                                  tok.task_queue))
                and all(type(v) is int for v in (tok.scheduled_event_id, tok.attempt, tok.started_time))
                and tok.kind in KINDS):
            raise InvalidArgument(f"{field} is not a task token", field=field)
        return tok

    def check_namespace(self, namespace: str, *, field: str = "task_token") -> None:
        """403 unless the token was issued in ``namespace`` (the namespace of the request)."""
        if self.namespace != namespace:
            raise PermissionDenied(f"{field} was issued for namespace {self.namespace!r}, not {namespace!r}",
                                   field=field)


def keys_in_file(path: Path) -> str:
    """The keys setting kept in ``path``, made (one random key, readable by its owner only) if
    missing: ``kadence dev`` keeps its data directory's key there so tokens survive a restart."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(TokenKeys.new_key() + "\n")
    return path.read_text(encoding="utf-8").strip()
