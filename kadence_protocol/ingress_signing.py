"""Signed commands on ``kadence.requests``: who produced a record, proven by an HMAC.

Kafka hands a consumer no authenticated principal, so a producer that may start or signal
workflows in a protected namespace names itself in the ``kadence-principal`` header and
signs the record with a key it shares with Kadence (``kadence-signature``: url-safe base64
of HMAC-SHA256 over the principal, the topic, the record key and the value). History
checks it (services/common/ingress_auth.py) and dead-letters a record to a protected
namespace that is unsigned, signed by a principal not allowed there, or altered.

``KafkaIngress(..., signer=IngressSigner("billing", key))`` signs every command it sends;
a plain Kafka producer adds ``IngressSigner.headers(topic, key, value)`` to its records.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field

__all__ = ["PRINCIPAL_HEADER", "SIGNATURE_HEADER", "IngressSigner", "signature"]

PRINCIPAL_HEADER = "kadence-principal"
SIGNATURE_HEADER = "kadence-signature"
#: A producer's principal and key when none is given (KafkaIngress).
PRINCIPAL_ENV = "KADENCE_INGRESS_PRINCIPAL"
KEY_ENV = "KADENCE_INGRESS_KEY"
MIN_KEY_CHARS = 16
_DOMAIN = b"kadence-ingress-v1"


def _field(raw: bytes) -> bytes:
    # Length-prefixed, so no two different records sign the same bytes.
    return len(raw).to_bytes(4, "big") + raw


def signature(key: bytes, principal: str, topic: str, record_key: bytes | None, value: bytes) -> bytes:
    """The signature header's value for one record."""
    message = b"".join((_DOMAIN, _field(principal.encode()), _field(topic.encode()),
                        _field(record_key if record_key is not None else b""), _field(value)))
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).rstrip(b"=")


@dataclass(frozen=True)
class IngressSigner:
    """A principal and its key, signing the records it produces."""

    principal: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.principal or len(self.principal) > 200:
            raise ValueError("an ingress principal needs a name (at most 200 characters)")
        if len(self.key) < MIN_KEY_CHARS:
            raise ValueError(f"an ingress key needs at least {MIN_KEY_CHARS} characters")

    @classmethod
    def of(cls, principal: str, key: str) -> IngressSigner:
        return cls(principal, key.encode())

    @classmethod
    def from_env(cls) -> IngressSigner | None:
        """``$KADENCE_INGRESS_PRINCIPAL`` with ``$KADENCE_INGRESS_KEY``, if both are set."""
        principal, key = os.environ.get(PRINCIPAL_ENV), os.environ.get(KEY_ENV)
        return cls.of(principal, key) if principal and key else None

    def headers(self, topic: str, record_key: bytes | None, value: bytes) -> list[tuple[str, bytes]]:
        """The two headers that sign this record."""
        return [(PRINCIPAL_HEADER, self.principal.encode()),
                (SIGNATURE_HEADER, signature(self.key, self.principal, topic, record_key, value))]
