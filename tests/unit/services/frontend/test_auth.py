"""Authentication and authorization of the API (services/frontend/auth.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from services.frontend.auth import (
    OPERATION_PERMISSIONS,
    AuthConfigError,
    Authenticator,
    Unauthenticated,
    api_key_entry,
    served,
    serving,
    worker_task_queues,
)
from services.frontend.errors import PermissionDenied
from services.frontend.handlers import ROUTES

SECRET = "s" * 40
NOW = 1_800_000_000.0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def jwt(claims: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _auth() -> Authenticator:
    auth = Authenticator.from_mapping({
        "api_keys": [
            api_key_entry("shop-app", "shop-key-123", [{"namespace": "shop", "permissions": ["read", "write"]}]),
            api_key_entry("pay-worker", "worker-key-1",
                          [{"namespace": "shop", "permissions": ["worker"], "task_queues": ["payments"]}]),
            api_key_entry("ops", "ops-key-1234", [{"namespace": "*", "permissions": ["admin"]}]),
        ],
        "jwt": {"hs256_secrets": [SECRET, "t" * 40], "issuer": "https://idp", "audience": "kadence"},
    })
    auth.clock = lambda: NOW
    return auth


def test_every_route_is_classified() -> None:
    assert {name for _, _, name in ROUTES} <= set(OPERATION_PERMISSIONS)


def test_api_keys_and_namespace_permissions() -> None:
    auth = _auth()
    shop = auth.check("Bearer shop-key-123", "start", "shop")
    assert shop.name == "shop-app"
    auth.check("Bearer shop-key-123", "describe", "shop")
    with pytest.raises(PermissionDenied, match="shop-app lacks the write permission in namespace 'bank'"):
        auth.check("Bearer shop-key-123", "terminate", "bank")
    with pytest.raises(PermissionDenied, match="lacks the worker permission"):
        auth.check("Bearer shop-key-123", "poll_activity_tasks", "shop", "payments")
    # A worker polls its own task queues only.
    auth.check("Bearer worker-key-1", "poll_activity_tasks", "shop", "payments")
    auth.check("Bearer worker-key-1", "complete_activity_task", "shop")
    with pytest.raises(PermissionDenied, match="task queue 'cards'"):
        auth.check("Bearer worker-key-1", "poll_workflow_tasks", "shop", "cards")
    with pytest.raises(PermissionDenied):
        auth.check("Bearer worker-key-1", "describe", "shop")
    # admin: everything, everywhere.
    for op in OPERATION_PERMISSIONS:
        auth.check("Bearer ops-key-1234", op, "anything", "q")


def test_missing_or_unknown_credentials_are_401() -> None:
    auth = _auth()
    for header in (None, "", "Basic abc", "Bearer ", "Bearer nope", "bearer shop-key-1234"):
        with pytest.raises(Unauthenticated):
            auth.check(header, "describe", "shop")
    with pytest.raises(PermissionDenied):
        auth.check("Bearer ops-key-1234", "no_such_operation", "shop")


def test_jwt_verified_with_claims_checked() -> None:
    auth = _auth()
    claims = {"sub": "svc", "exp": NOW + 60, "iss": "https://idp", "aud": "kadence",
              "kadence_grants": [{"namespace": "shop", "permissions": ["read"]}]}
    assert auth.check(f"Bearer {jwt(claims)}", "history", "shop").name == "svc"
    assert auth.check(f"Bearer {jwt(claims, secret='t' * 40)}", "history", "shop").name == "svc"  # rotated
    with pytest.raises(PermissionDenied):
        auth.check(f"Bearer {jwt(claims)}", "start", "shop")
    bad = [
        jwt(claims, secret="x" * 40),                      # another secret
        jwt({**claims, "exp": NOW - 3600}),                # expired
        jwt({k: v for k, v in claims.items() if k != "exp"}),
        jwt({**claims, "nbf": NOW + 3600}),
        jwt({**claims, "iss": "https://evil"}),
        jwt({**claims, "aud": "other"}),
        jwt({**claims, "sub": ""}),
        jwt(claims, alg="none"),
        jwt(claims)[:-2] + "AA",                           # signature altered
        "a.b.c",
    ]
    # A token whose payload was changed after signing.
    head, _body, sig = jwt(claims).split(".")
    forged = {**claims, "kadence_grants": [{"namespace": "*", "permissions": ["admin"]}]}
    bad.append(f"{head}.{_b64(json.dumps(forged).encode())}.{sig}")
    for token in bad:
        with pytest.raises(Unauthenticated):
            auth.check(f"Bearer {token}", "history", "shop")


def test_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="neither"):
        Authenticator.from_mapping({})
    with pytest.raises(AuthConfigError, match="sha256"):
        Authenticator.from_mapping({"api_keys": [{"name": "x", "key": "plain"}]})
    with pytest.raises(AuthConfigError, match="permissions"):
        Authenticator.from_mapping({"api_keys": [api_key_entry("x", "k", [{"namespace": "a",
                                                                          "permissions": ["root"]}])]})
    with pytest.raises(AuthConfigError, match="32"):
        Authenticator.from_mapping({"jwt": {"hs256_secrets": ["short"]}})
    with pytest.raises(AuthConfigError, match="cannot read"):
        Authenticator.from_file(tmp_path / "missing.json")
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"api_keys": [api_key_entry("a", "key-a", [{"namespace": "n",
                                                                           "permissions": ["read"]}])]}))
    assert "key-a" not in path.read_text()  # only the hash is stored
    assert Authenticator.from_file(path).check("Bearer key-a", "describe", "n").name == "a"


# -- RS256 / ES256 / JWKS (keys generated here) -----------------------------------------------

def _rsa() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(private: Any) -> str:
    from cryptography.hazmat.primitives import serialization
    pem: bytes = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


CLAIMS = {"sub": "svc", "exp": NOW + 60, "kadence_grants": [{"namespace": "shop", "permissions": ["read"]}]}


def _with_clock(auth: Authenticator) -> Authenticator:
    auth.clock = lambda: NOW
    return auth


def test_rs256_with_a_configured_public_key(tmp_path: Path) -> None:
    import jwt as pyjwt
    key, other = _rsa(), _rsa()
    pem_file = tmp_path / "idp.pem"
    pem_file.write_text(_pem(key))
    for public in (_pem(key), f"@{pem_file}"):
        auth = _with_clock(Authenticator.from_mapping({"jwt": {"public_keys": [public], "algorithms": ["RS256"]}}))
        assert auth.check(f"Bearer {pyjwt.encode(CLAIMS, key, algorithm='RS256')}", "describe", "shop").name == "svc"
        with pytest.raises(Unauthenticated, match="signature does not verify"):
            auth.check(f"Bearer {pyjwt.encode(CLAIMS, other, algorithm='RS256')}", "describe", "shop")
        with pytest.raises(Unauthenticated, match="expired"):
            auth.check(f"Bearer {pyjwt.encode({**CLAIMS, 'exp': NOW - 600}, key, algorithm='RS256')}",
                       "describe", "shop")
        # The algorithm comes from the configuration: HS256 "signed" with the public key as the
        # secret (the classic confusion attack), RS512 and "none" are refused.
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(CLAIMS).encode())
        mac = hmac.new(_pem(key).encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        for token in (f"{head}.{body}.{_b64(mac)}", pyjwt.encode(CLAIMS, key, algorithm="RS512"),
                      jwt(CLAIMS, alg="none")):
            with pytest.raises(Unauthenticated, match="not accepted"):
                auth.check(f"Bearer {token}", "describe", "shop")


def test_es256_and_jwks_file_by_kid(tmp_path: Path) -> None:
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec
    rsa_key, ec_key = _rsa(), ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"

    def publish(*pairs: tuple[str, Any, str]) -> None:
        keys = []
        for kid, private, alg in pairs:
            jwk = json.loads(pyjwt.algorithms.get_default_algorithms()[alg].to_jwk(private.public_key()))
            keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        jwks.write_text(json.dumps({"keys": keys}))

    publish(("r1", rsa_key, "RS256"), ("e1", ec_key, "ES256"))
    auth = _with_clock(Authenticator.from_mapping({"jwt": {"jwks_file": str(jwks)}}))
    rs = pyjwt.encode(CLAIMS, rsa_key, algorithm="RS256", headers={"kid": "r1"})
    es = pyjwt.encode(CLAIMS, ec_key, algorithm="ES256", headers={"kid": "e1"})
    assert auth.check(f"Bearer {rs}", "describe", "shop").name == "svc"
    assert auth.check(f"Bearer {es}", "describe", "shop").name == "svc"
    # A kid the set does not hold, or a kid naming another key: refused.
    for token in (pyjwt.encode(CLAIMS, rsa_key, algorithm="RS256", headers={"kid": "gone"}),
                  pyjwt.encode(CLAIMS, rsa_key, algorithm="RS256", headers={"kid": "e1"})):
        with pytest.raises(Unauthenticated):
            auth.check(f"Bearer {token}", "describe", "shop")
    # The file is read again when it changes: a key taken out of the set stops verifying.
    import os
    publish(("e1", ec_key, "ES256"))
    stat = jwks.stat()
    os.utime(jwks, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(Unauthenticated):
        auth.check(f"Bearer {rs}", "describe", "shop")
    assert auth.check(f"Bearer {es}", "describe", "shop").name == "svc"


def test_asymmetric_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="PEM"):
        Authenticator.from_mapping({"jwt": {"public_keys": ["not a key"]}})
    with pytest.raises(AuthConfigError, match="JWKS"):
        Authenticator.from_mapping({"jwt": {"jwks_file": str(tmp_path / "none.json")}})
    with pytest.raises(AuthConfigError, match="algorithms"):
        Authenticator.from_mapping({"jwt": {"hs256_secrets": [SECRET], "algorithms": ["none"]}})


def test_the_scope_of_a_query_answer_is_the_callers_worker_queues_there() -> None:
    auth = _auth()
    assert worker_task_queues("shop") is None  # authentication off: every queue
    for key, namespace, queues in (("worker-key-1", "shop", frozenset({"payments"})),
                                   ("worker-key-1", "bank", frozenset()),
                                   ("shop-key-123", "shop", frozenset()),  # no worker permission
                                   ("ops-key-1234", "bank", None)):  # admin everywhere: every queue
        mark = serving(auth, auth.authenticate(f"Bearer {key}"))
        try:
            assert worker_task_queues(namespace) == queues, (key, namespace)
        finally:
            served(mark)
