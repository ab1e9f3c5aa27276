"""The shared shape checks of the JSON policy files (services/common/json_policy.py), as the
authentication configuration and the ingress policy use them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.common import json_policy
from services.common.ingress_auth import IngressConfigError, IngressPolicy
from services.frontend.auth import AuthConfigError, Authenticator


def test_each_file_is_refused_with_its_own_error_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "policy.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(AuthConfigError, match=re.escape(f"cannot read the authentication configuration {broken}")):
        Authenticator.from_file(broken)
    with pytest.raises(IngressConfigError, match=r"cannot read the ingress policy .* \(KADENCE_INGRESS_KEYS\)"):
        IngressPolicy.from_file(broken)
    broken.write_text("[]", encoding="utf-8")
    for load, error in ((Authenticator.from_file, AuthConfigError), (IngressPolicy.from_file, IngressConfigError)):
        with pytest.raises(error, match=re.escape(f"{broken}: must be a JSON object")):
            load(broken)


def test_string_lists() -> None:
    assert json_policy.is_string_list([]) and json_policy.is_string_list(["a", "b"])
    assert not json_policy.is_string_list([], non_empty=True)
    assert not json_policy.is_string_list(["short"], min_chars=16)
    assert not json_policy.is_string_list("ab") and not json_policy.is_string_list(["a", 1])
    with pytest.raises(IngressConfigError, match=r"principals\.p must list keys of 16"):
        IngressPolicy.from_mapping({"principals": {"p": ["short"]}, "namespaces": {"shop": ["p"]}})
    with pytest.raises(AuthConfigError, match=r"grants\[0\].task_queues must be a list of names"):
        Authenticator.from_mapping({"api_keys": [{"name": "n", "sha256": "0" * 64, "grants": [
            {"namespace": "shop", "permissions": ["read"], "task_queues": "orders"}]}]})
