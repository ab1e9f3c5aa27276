"""Signing commands (kadence_protocol/ingress_signing.py) and the per-namespace check of history
(services/common/ingress_auth.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest

from kadence_protocol.ingress_signing import IngressSigner
from services.common.ingress_auth import IngressConfigError, IngressPolicy

TOPIC = "kadence.requests"
POLICY = IngressPolicy.from_mapping({
    "principals": {"billing": ["billing-key-new-0000", "billing-key-old-0000"], "crm": ["crm-key-000000000000"],
                   "fe": ["frontend-key-000000"]},
    "namespaces": {"shop": ["billing"], "bank": []},
    "frontend_principal": "fe",
})


class Rec(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _signed(principal: str, key: str, value: bytes = b"cmd", record_key: bytes = b"shop/w1") -> Rec:
    return Rec(record_key, value, IngressSigner.of(principal, key).headers(TOPIC, record_key, value))


def test_allowed_principals_with_any_of_their_keys() -> None:
    for key in ("billing-key-new-0000", "billing-key-old-0000"):  # rotation: both verify
        assert POLICY.check(_signed("billing", key), {"namespace": "shop"}) is None
    # The frontend's principal is allowed everywhere; bank takes nobody else.
    assert POLICY.check(_signed("fe", "frontend-key-000000"), {"namespace": "bank"}) is None
    assert "may not send" in (POLICY.check(_signed("billing", "billing-key-new-0000"), {"namespace": "bank"}) or "")
    # Namespaces that are not protected take anything, signed or not.
    assert POLICY.check(Rec(b"open/w", b"x", []), {"namespace": "open"}) is None


def test_unsigned_forged_altered_and_foreign_records_are_refused() -> None:
    good = _signed("billing", "billing-key-new-0000")
    refusals = {
        "unsigned": Rec(good.key, good.value, []),
        "forged": _signed("billing", "not-billings-key-000"),
        "other principal": _signed("crm", "crm-key-000000000000"),
        "altered value": Rec(good.key, b"cmd2", good.headers),
        "altered key": Rec(b"shop/w2", good.value, good.headers),
        "principal renamed": Rec(good.key, good.value, [("kadence-principal", b"crm"), good.headers[1]]),
    }
    for what, record in refusals.items():
        assert POLICY.check(record, {"namespace": "shop"}) is not None, what
    assert "takes only signed" in (POLICY.check(refusals["unsigned"], {"namespace": "shop"}) or "")
    assert "does not verify" in (POLICY.check(refusals["forged"], {"namespace": "shop"}) or "")
    # A command without a namespace field is judged by its key's namespace.
    assert POLICY.check(refusals["unsigned"], {}) is not None


def test_star_protects_every_other_namespace() -> None:
    policy = IngressPolicy.from_mapping({"principals": {"a": ["a-key-0000000000000"]}, "namespaces": {"*": ["a"]}})
    assert policy.check(Rec(b"any/w", b"v", []), {"namespace": "any"}) is not None
    assert policy.check(_signed("a", "a-key-0000000000000", record_key=b"any/w"), {"namespace": "any"}) is None


def test_policy_file_is_checked(tmp_path: Path) -> None:
    with pytest.raises(IngressConfigError, match="cannot read"):
        IngressPolicy.from_file(tmp_path / "missing.json")
    bad = [
        ({"principals": {"a": ["short"]}, "namespaces": {"n": ["a"]}}, "16"),
        ({"principals": {}, "namespaces": {"n": ["ghost"]}}, "without keys"),
        ({"principals": {"a": ["a-key-0000000000000"]}, "namespaces": {}}, "protects no namespace"),
        ({"principals": {"a": ["a-key-0000000000000"]}, "namespaces": {"n": ["a"]}, "frontend_principal": "fe"},
         "frontend_principal"),
    ]
    for data, message in bad:
        with pytest.raises(IngressConfigError, match=message):
            IngressPolicy.from_mapping(data)
    path = tmp_path / "ingress.json"
    path.write_text(json.dumps({"principals": {"a": ["a-key-0000000000000"]}, "namespaces": {"n": ["a"]}}))
    assert IngressPolicy.from_file(path).allowed("n") == frozenset({"a"})


def test_signer_checks_its_key_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="16"):
        IngressSigner.of("a", "short")
    monkeypatch.delenv("KADENCE_INGRESS_KEY", raising=False)
    monkeypatch.setenv("KADENCE_INGRESS_PRINCIPAL", "billing")
    assert IngressSigner.from_env() is None
    monkeypatch.setenv("KADENCE_INGRESS_KEY", "billing-key-new-0000")
    signer = IngressSigner.from_env()
    assert signer is not None and signer.principal == "billing" and "billing-key" not in repr(signer)
