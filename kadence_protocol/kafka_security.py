"""Kafka connection security (TLS and SASL) for every aiokafka client of Kadence.

Every producer, consumer and admin client of the services and of the tools is built with
``**client_options(security)``; the server's faust apps with
``services.common.kafka.faust_credentials(security)``. ``security`` None means the environment's settings:

=================================  ============================================================
``KADENCE_KAFKA_SECURITY_PROTOCOL``  PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
``KADENCE_KAFKA_SASL_MECHANISM``     PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols)
``KADENCE_KAFKA_USERNAME``           the SASL user name
``KADENCE_KAFKA_PASSWORD``           the SASL password
``KADENCE_KAFKA_CA_FILE``            CA bundle verifying the brokers (SSL, SASL_SSL)
``KADENCE_KAFKA_CERT_FILE``          client certificate for mutual TLS (with the key file)
``KADENCE_KAFKA_KEY_FILE``           the certificate's private key
``KADENCE_KAFKA_KEY_PASSWORD``       the private key's password, if it has one
=================================  ============================================================
"""

from __future__ import annotations

import enum
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.helpers import create_ssl_context

__all__ = ["KafkaSecurity", "SaslMechanism", "SecurityProtocol", "client_options"]

ENV_PREFIX = "KADENCE_KAFKA_"


class SecurityProtocol(enum.Enum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)


class SaslMechanism(enum.Enum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


def _enum(cls: type[enum.Enum], name: str, raw: str) -> Any:
    try:
        return cls(raw.strip().upper())
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name} must be one of {[m.value for m in cls]}, got {raw!r}") from None


@dataclass(frozen=True)
class KafkaSecurity:
    """How Kadence's Kafka clients authenticate and encrypt; checked when built."""

    protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        p = self.protocol
        if p.sasl and (self.sasl_mechanism is None or not self.username or self.password is None):
            raise ValueError(f"{p.value} needs {ENV_PREFIX}SASL_MECHANISM, {ENV_PREFIX}USERNAME and "
                             f"{ENV_PREFIX}PASSWORD")
        if not p.sasl and (self.sasl_mechanism is not None or self.username or self.password):
            raise ValueError(f"SASL settings are given but {ENV_PREFIX}SECURITY_PROTOCOL is {p.value} "
                             "(SASL_PLAINTEXT or SASL_SSL use them)")
        if not p.tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError(f"TLS files are given but {ENV_PREFIX}SECURITY_PROTOCOL is {p.value} "
                             "(SSL or SASL_SSL use them)")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError(f"{ENV_PREFIX}CERT_FILE and {ENV_PREFIX}KEY_FILE go together (mutual TLS)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(ENV_PREFIX + name) or None

        protocol = get("SECURITY_PROTOCOL")
        mechanism = get("SASL_MECHANISM")
        return cls(
            protocol=_enum(SecurityProtocol, "SECURITY_PROTOCOL", protocol) if protocol else SecurityProtocol.PLAINTEXT,
            sasl_mechanism=_enum(SaslMechanism, "SASL_MECHANISM", mechanism) if mechanism else None,
            username=get("USERNAME"), password=get("PASSWORD"), ca_file=get("CA_FILE"),
            cert_file=get("CERT_FILE"), key_file=get("KEY_FILE"), key_password=get("KEY_PASSWORD"),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (verifying the brokers' certificates and host names), or None."""
        if not self.protocol.tls:
            return None
        context: ssl.SSLContext = create_ssl_context(cafile=self.ca_file, certfile=self.cert_file,
                                                     keyfile=self.key_file, password=self.key_password)
        return context

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments of an aiokafka producer, consumer or admin client."""
        options: dict[str, Any] = {"security_protocol": self.protocol.value}
        if self.protocol.tls:
            options["ssl_context"] = self.ssl_context()
        if self.protocol.sasl:
            assert self.sasl_mechanism is not None
            options.update(sasl_mechanism=self.sasl_mechanism.value, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options


def client_options(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """THE way every aiokafka client of Kadence gets its security settings (None: the
    environment's): ``AIOKafkaConsumer(..., **client_options(settings.kafka_security))``."""
    return (security if security is not None else KafkaSecurity.from_env()).client_options()
