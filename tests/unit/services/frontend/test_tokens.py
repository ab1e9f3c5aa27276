"""Signed task tokens: sign, verify, tamper, rotate, foreign namespace (services/frontend/tokens.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from services.frontend import InvalidArgument, PermissionDenied, TaskToken, TokenKeys
from services.frontend.tokens import keys_in_file

OLD, NEW = "old-key-" + "o" * 24, "new-key-" + "n" * 24
TOKEN = TaskToken("shop", "order-1", "run-1", 5, 1, "activity", 1_700_000_000_000, "payments")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_signed_token_verifies_and_names_namespace_and_queue() -> None:
    keys = TokenKeys.parse(OLD)
    back = TaskToken.decode(TOKEN.encode(keys), keys)
    assert back == TOKEN
    assert (back.namespace, back.task_queue) == ("shop", "payments")


def test_forged_unsigned_and_foreign_key_tokens_are_refused_with_403() -> None:
    keys = TokenKeys.parse(OLD)
    payload = orjson.dumps({"namespace": "shop", "workflow_id": "order-1", "run_id": "run-1",
                            "scheduled_event_id": 5, "attempt": 1, "kind": "activity"})
    # The old format (base64 JSON, no signature), as written by hand.
    with pytest.raises(PermissionDenied, match="not signed"):
        TaskToken.decode(_b64(payload), keys)
    # A made-up signature.
    with pytest.raises(PermissionDenied, match="not issued by this server"):
        TaskToken.decode(_b64(payload) + "." + _b64(b"\0" * 16), keys)
    # Signed by another server's key.
    with pytest.raises(PermissionDenied):
        TaskToken.decode(TOKEN.encode(TokenKeys.parse(NEW)), keys)


def test_an_altered_token_is_refused() -> None:
    keys = TokenKeys.parse(OLD)
    text = TOKEN.encode(keys)
    payload, mac = text.split(".")
    other = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other["workflow_id"] = "someone-elses"
    with pytest.raises(PermissionDenied):
        TaskToken.decode(_b64(orjson.dumps(other)) + "." + mac, keys)
    # One character of the signature changed.
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    with pytest.raises(PermissionDenied):
        TaskToken.decode(payload + "." + flipped, keys)


def test_rotation_first_key_signs_every_key_verifies() -> None:
    before = TokenKeys.parse(OLD)
    during = TokenKeys.parse(f"{NEW}, {OLD}")
    after = TokenKeys.parse(NEW)
    issued_before = TOKEN.encode(before)
    assert TaskToken.decode(issued_before, during) == TOKEN  # still in flight while both are valid
    issued_during = TOKEN.encode(during)
    assert TaskToken.decode(issued_during, after) == TOKEN  # signed with the new key
    with pytest.raises(PermissionDenied):
        TaskToken.decode(issued_before, after)  # the old key retired


def test_foreign_namespace_is_403() -> None:
    keys = TokenKeys.parse(OLD)
    token = TaskToken.decode(TOKEN.encode(keys), keys)
    token.check_namespace("shop")
    with pytest.raises(PermissionDenied, match="issued for namespace 'shop', not 'bank'"):
        token.check_namespace("bank")


def test_keys_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="no key"):
        TokenKeys.parse(" , ")
    with pytest.raises(ValueError, match="at least 16"):
        TokenKeys.parse("short")
    assert len(TokenKeys.parse(TokenKeys.new_key()).keys) == 1
    assert "," not in TokenKeys.new_key()


def test_not_a_token_is_400() -> None:
    keys = TokenKeys.parse(OLD)
    for bad in [None, 7, "", "x" * 9000]:
        with pytest.raises(InvalidArgument):
            TaskToken.decode(bad, keys)


def test_dev_keeps_its_key_in_the_data_directory(tmp_path: Path) -> None:
    path = tmp_path / "task-token-keys"
    first = keys_in_file(path)
    assert keys_in_file(path) == first  # the same after a restart
    assert path.stat().st_mode & 0o777 == 0o600
    TokenKeys.parse(first)


def test_token_base64_is_read_as_base64_reads_it() -> None:
    """The token's base64 is decoded without base64.b64decode's per-call table, to the same
    bytes and the same refusals (strict: nothing outside the alphabet is skipped)."""
    import base64
    import binascii
    import random
    import string

    from services.frontend.tokens import _unb64

    def outcome(decode: object, text: str) -> object:
        try:
            return decode(text)  # type: ignore[operator]
        except (binascii.Error, ValueError):
            return "refused"

    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "-_+/=. \u00e9\n"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        expected = outcome(lambda t: base64.b64decode(t + "=" * (-len(t) % 4), altchars=b"-_", validate=True), text)
        assert outcome(_unb64, text) == expected, text


def test_a_token_coming_back_as_issued_is_read_from_what_the_keys_remember() -> None:
    keys = TokenKeys.parse(OLD)
    text = TOKEN.encode(keys)
    assert TaskToken.decode(text, keys) is TOKEN  # no second decode and verification
    elsewhere = TokenKeys.parse(OLD)  # another frontend with the same keys: the full check
    assert TaskToken.decode(text, elsewhere) == TOKEN and not elsewhere.issued
    # Altered by one character, it is another text: checked in full, and refused.
    payload, mac = text.split(".")
    with pytest.raises(PermissionDenied):
        TaskToken.decode(payload + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B"), keys)


def test_a_token_decode_would_refuse_is_not_remembered() -> None:
    keys = TokenKeys.parse(OLD)
    for bad in [TaskToken("d", "w", "r", 1, 1, "workflow", "soon"),  # type: ignore[arg-type]
                TaskToken("d", "w", "r", 1, True, "workflow"), TaskToken("d", "w", "r", 1, 1, "nonsense"),
                TaskToken("d", "w" * 7000, "r", 1, 1, "workflow")]:  # too long a token
        with pytest.raises(InvalidArgument):
            TaskToken.decode(bad.encode(keys), keys)
    assert not keys.issued


def test_the_tokens_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.frontend import tokens

    monkeypatch.setattr(tokens, "ISSUED_REMEMBERED", 3)
    keys = TokenKeys.parse(OLD)
    texts = [TaskToken("shop", f"order-{i}", "run", 5, 1, "activity").encode(keys) for i in range(5)]
    assert list(keys.issued) == texts[2:]  # the oldest dropped first
    assert TaskToken.decode(texts[0], keys).workflow_id == "order-0"  # forgotten: checked in full, still valid
