"""History's own records to kadence.requests (child workflows) under signed ingress: the
policy's history_principal is allowed in every namespace, and history signs with it (else
with the frontend's principal)."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.ingress_auth import IngressConfigError, IngressPolicy

pytestmark = pytest.mark.timeout(10)
TOPIC = "kadence.requests"
BASE: dict[str, Any] = {"principals": {"billing": ["billing-key-0000000000"], "fe": ["frontend-key-000000"],
                                       "history": ["history-key-new-0000", "history-key-old-0000"]},
                        "namespaces": {"shop": ["billing"], "*": []}}


def test_history_signs_with_its_principal_and_is_taken_in_every_protected_namespace() -> None:
    policy = IngressPolicy.from_mapping({**BASE, "frontend_principal": "fe", "history_principal": "history"})
    signer = policy.history_signer()
    assert signer is not None and signer.principal == "history" and signer.key == b"history-key-new-0000"
    for namespace in ("shop", "anything-else"):
        key, value = f"{namespace}/child".encode(), b"a ChildWorkflowNotice"
        assert policy.refusal(namespace, key, value, signer.headers(TOPIC, key, value)) is None
        assert "does not verify" in (policy.refusal(namespace, key, value + b"!", signer.headers(TOPIC, key, value))
                                     or "")


def test_without_a_history_principal_history_signs_as_the_frontend() -> None:
    policy = IngressPolicy.from_mapping({**BASE, "frontend_principal": "fe"})
    signer = policy.history_signer()
    assert signer is not None and signer.principal == "fe"
    assert policy.refusal("shop", b"shop/c", b"v", signer.headers(TOPIC, b"shop/c", b"v")) is None
    # History's principal is not allowed anywhere unless the policy names it.
    from kadence_protocol.ingress_signing import IngressSigner
    alone = IngressSigner.of("history", "history-key-new-0000")
    assert "may not send" in (policy.refusal("shop", b"shop/c", b"v", alone.headers(TOPIC, b"shop/c", b"v")) or "")


def test_with_neither_principal_history_does_not_sign() -> None:
    assert IngressPolicy.from_mapping(BASE).history_signer() is None


def test_a_history_principal_without_keys_is_refused() -> None:
    with pytest.raises(IngressConfigError, match="history_principal 'nobody' has no keys"):
        IngressPolicy.from_mapping({**BASE, "history_principal": "nobody"})
