"""Which principals may send commands to a namespace on ``kadence.requests`` (issue 21, item 3).

Kafka does not tell a consumer who produced a record, so a protected namespace takes only
records signed by an allowed principal (kadence_protocol/ingress_signing.py). The policy is a JSON
file named by ``KADENCE_INGRESS_KEYS``::

    {"principals": {"billing": ["<key, 16+ characters>", "<the next key, while rotating>"],
                    "frontend": ["<key>"]},
     "namespaces": {"shop": ["billing"], "*": []},
     "frontend_principal": "frontend", "history_principal": "kadence-history"}

- ``principals``: each producer's keys (every listed key verifies; a key rotates in two steps);
- ``namespaces``: the protected namespaces, each with the principals allowed to send to it;
  ``*`` protects every namespace not listed. A namespace that is not protected takes
  unsigned records as before;
- ``frontend_principal``: the principal the frontend signs its own records with. It is
  allowed in every namespace: the frontend authenticates its callers over HTTP itself.
- ``history_principal``: the principal history signs its own records to ``kadence.requests``
  with (child workflow starts, notices, close policies, signals to children: they act in
  the namespace of the workflow that sent them). Allowed in every namespace too. Without it,
  history signs with ``frontend_principal`` (the same trusted deployment holds both keys);
  with neither, its records to a protected namespace are dead-lettered.

History checks each record of ``kadence.requests`` (:meth:`IngressPolicy.refusal`) and
dead-letters one to a protected namespace with the reason. Commands a frontend in the same
process hands to history directly are not records from the broker and are not checked.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kadence_protocol.ingress_signing import MIN_KEY_CHARS, PRINCIPAL_HEADER, SIGNATURE_HEADER, IngressSigner, signature

from . import json_policy
from .kafka import REQUESTS

SETTING = "KADENCE_INGRESS_KEYS"
ANY_NAMESPACE = "*"


class Record(Protocol):
    """What the check reads of a consumed record (aiokafka's ConsumerRecord has it)."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class IngressConfigError(ValueError):
    """The ingress policy cannot be used (the services refuse to start)."""


@dataclass(frozen=True)
class IngressPolicy:
    principals: Mapping[str, tuple[bytes, ...]]
    namespaces: Mapping[str, frozenset[str]]
    frontend_principal: str | None = None
    history_principal: str | None = None

    @classmethod
    def from_file(cls, path: Path) -> IngressPolicy:
        data = json_policy.read(path, IngressConfigError, f"ingress policy {path} ({SETTING})")
        return cls.from_mapping(data, where=str(path))

    @classmethod
    def from_mapping(cls, raw: object, *, where: str = "ingress policy") -> IngressPolicy:
        data = json_policy.json_object(raw, where, IngressConfigError)
        raw_principals, raw_namespaces = data.get("principals", {}), data.get("namespaces", {})
        if not isinstance(raw_principals, dict) or not isinstance(raw_namespaces, dict):
            raise IngressConfigError(f"{where}: principals and namespaces must be objects")
        principals: dict[str, tuple[bytes, ...]] = {}
        for name, keys in raw_principals.items():
            if not json_policy.is_string_list(keys, min_chars=MIN_KEY_CHARS, non_empty=True):
                raise IngressConfigError(f"{where}: principals.{name} must list keys of {MIN_KEY_CHARS}+ characters")
            principals[name] = tuple(k.encode() for k in keys)
        namespaces: dict[str, frozenset[str]] = {}
        for ns, allowed in raw_namespaces.items():
            if not json_policy.is_string_list(allowed):
                raise IngressConfigError(f"{where}: namespaces.{ns} must list principal names")
            unknown = sorted(set(allowed) - principals.keys())
            if unknown:
                raise IngressConfigError(f"{where}: namespaces.{ns} names principals without keys: {unknown}")
            namespaces[ns] = frozenset(allowed)
        frontend = data.get("frontend_principal")
        if frontend is not None and frontend not in principals:
            raise IngressConfigError(f"{where}: frontend_principal {frontend!r} has no keys in principals")
        history = data.get("history_principal")
        if history is not None and history not in principals:
            raise IngressConfigError(f"{where}: history_principal {history!r} has no keys in principals")
        if not namespaces:
            raise IngressConfigError(f"{where}: protects no namespace (namespaces is empty)")
        return cls(principals, namespaces, frontend, history)

    def allowed(self, namespace: str) -> frozenset[str] | None:
        """The principals that may send to ``namespace``; None: it is not protected."""
        allowed = self.namespaces.get(namespace, self.namespaces.get(ANY_NAMESPACE))
        if allowed is None:
            return None
        services = {p for p in (self.frontend_principal, self.history_principal) if p is not None}
        return allowed | services

    def frontend_signer(self) -> IngressSigner | None:
        """What the frontend signs its records with (its principal's first key)."""
        if self.frontend_principal is None:
            return None
        return IngressSigner(self.frontend_principal, self.principals[self.frontend_principal][0])

    def history_signer(self) -> IngressSigner | None:
        """What history signs its own records to kadence.requests with: its principal's
        first key, else the frontend's; None when the policy names neither."""
        principal = self.history_principal or self.frontend_principal
        if principal is None:
            return None
        return IngressSigner(principal, self.principals[principal][0])

    def check(self, record: Record, command: Mapping[str, Any]) -> str | None:
        """Why the consumed ``record`` carrying ``command`` is refused (a dead-letter reason), or None."""
        namespace = command.get("namespace")
        if not isinstance(namespace, str):  # commands that name none are keyed namespace/...
            namespace = (record.key or b"").decode("utf-8", "replace").partition("/")[0]
        return self.refusal(namespace, record.key, record.value or b"", record.headers)

    def refusal(self, namespace: str, key: bytes | None, value: bytes,
                headers: Sequence[tuple[str, bytes]] | None, topic: str = REQUESTS) -> str | None:
        """Why this record may not act on ``namespace`` (a dead-letter reason), or None."""
        allowed = self.allowed(namespace)
        if allowed is None:
            return None
        found = dict(headers or ())
        raw_principal, mac = found.get(PRINCIPAL_HEADER), found.get(SIGNATURE_HEADER)
        if raw_principal is None or mac is None:
            return (f"namespace {namespace!r} takes only signed commands: the record lacks the "
                    f"{PRINCIPAL_HEADER}/{SIGNATURE_HEADER} headers")
        principal = raw_principal.decode("utf-8", "replace")
        if principal not in allowed:
            return f"principal {principal!r} may not send commands to namespace {namespace!r}"
        if not any(hmac.compare_digest(signature(k, principal, topic, key, value), mac)
                   for k in self.principals[principal]):
            return f"the signature of principal {principal!r} does not verify (forged, altered or a retired key)"
        return None
