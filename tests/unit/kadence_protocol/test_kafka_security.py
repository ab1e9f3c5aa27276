"""Kafka TLS/SASL settings (kadence_protocol/kafka_security.py) and that every aiokafka client of
the services and tools is built through the one helper."""

from __future__ import annotations

import ast
import datetime
import ssl
from pathlib import Path

import pytest

from kadence_protocol.kafka_security import (
    KafkaSecurity,
    SaslMechanism,
    SecurityProtocol,
    client_options,
)
from services.common.config import Settings
from services.common.kafka import faust_credentials

ROOT = Path(__file__).resolve().parents[3]
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "TracingProducer", "SigningProducer"}


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafka-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_plaintext_by_default() -> None:
    assert KafkaSecurity.from_env({}).client_options() == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(KafkaSecurity()) is None


def test_sasl_scram_over_tls_from_the_environment(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    env = {"KADENCE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KADENCE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "KADENCE_KAFKA_USERNAME": "history", "KADENCE_KAFKA_PASSWORD": "pw", "KADENCE_KAFKA_CA_FILE": str(cert),
           "KADENCE_KAFKA_CERT_FILE": str(cert), "KADENCE_KAFKA_KEY_FILE": str(key)}
    security = KafkaSecurity.from_env(env)
    assert (security.protocol, security.sasl_mechanism) == (SecurityProtocol.SASL_SSL, SaslMechanism.SCRAM_SHA_512)
    assert "pw" not in repr(security)
    options = security.client_options()
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert options == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                       "sasl_plain_username": "history", "sasl_plain_password": "pw"}
    credentials = faust_credentials(security)
    assert type(credentials).__name__ == "SASLCredentials"


def test_sasl_plain_and_ssl_alone(tmp_path: Path) -> None:
    plain = KafkaSecurity(SecurityProtocol.SASL_PLAINTEXT, SaslMechanism.PLAIN, "u", "p").client_options()
    assert plain == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                     "sasl_plain_username": "u", "sasl_plain_password": "p"}
    cert, _ = _self_signed(tmp_path)
    tls = KafkaSecurity(SecurityProtocol.SSL, ca_file=str(cert)).client_options()
    assert tls["security_protocol"] == "SSL" and isinstance(tls["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in tls


@pytest.mark.parametrize(("env", "message"), [
    ({"KADENCE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SECURITY_PROTOCOL must be one of"),
    ({"KADENCE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KADENCE_KAFKA_SASL_MECHANISM"),
    ({"KADENCE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KADENCE_KAFKA_SASL_MECHANISM": "GSSAPI",
      "KADENCE_KAFKA_USERNAME": "u", "KADENCE_KAFKA_PASSWORD": "p"}, "SASL_MECHANISM must be one of"),
    ({"KADENCE_KAFKA_USERNAME": "u"}, "SASL settings are given but"),
    ({"KADENCE_KAFKA_CA_FILE": "/ca.pem"}, "TLS files are given but"),
    ({"KADENCE_KAFKA_SECURITY_PROTOCOL": "SSL", "KADENCE_KAFKA_CERT_FILE": "/c.pem"}, "go together"),
])
def test_inconsistent_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaSecurity.from_env(env)


def test_services_read_the_settings_and_the_helper_defaults_to_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KADENCE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KADENCE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KADENCE_KAFKA_USERNAME", "frontend")
    monkeypatch.setenv("KADENCE_KAFKA_PASSWORD", "secret")
    assert Settings.from_env().kafka_security.username == "frontend"
    assert client_options()["sasl_mechanism"] == "SCRAM-SHA-256"
    assert client_options(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}


def _constructions() -> list[tuple[str, ast.Call]]:
    found = []
    for folder in ("kadence", "kadence_protocol", "services", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) \
                        else ""
                    if name in CLIENTS or (name == "App" and isinstance(func, ast.Attribute)
                                           and isinstance(func.value, ast.Name) and func.value.id == "faust"):
                        found.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return found


def test_every_kafka_client_is_built_through_the_helper() -> None:
    """A new AIOKafkaProducer/Consumer/AdminClient (or faust app) that skips the security
    settings would connect in plain text to a broker that requires TLS/SASL."""
    constructions = _constructions()
    assert len(constructions) >= 10
    missing = []
    for where, call in constructions:
        kwargs = [k for k in call.keywords if k.arg is None]
        via_helper = any(isinstance(k.value, ast.Call) and isinstance(k.value.func, ast.Name)
                         and k.value.func.id == "client_options" for k in kwargs)
        faust_app = any(k.arg == "broker_credentials" for k in call.keywords)
        if not (via_helper or faust_app):
            missing.append(where)
    assert not missing, f"Kafka clients built without **client_options(...): {missing}"
