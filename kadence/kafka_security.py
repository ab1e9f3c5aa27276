"""Kafka connection security (TLS and SASL) for the SDK's Kafka clients, as the SDK has
always offered it: defined in the protocol package (``kadence_protocol.kafka_security``),
which the server's clients use too."""

from __future__ import annotations

from kadence_protocol.kafka_security import (
    ENV_PREFIX,
    KafkaSecurity,
    SaslMechanism,
    SecurityProtocol,
    client_options,
)

__all__ = ["ENV_PREFIX", "KafkaSecurity", "SaslMechanism", "SecurityProtocol", "client_options"]
