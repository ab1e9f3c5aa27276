"""visible (kadence_protocol/visible_text.py): what the CLI and the web UI show of a tenant's text."""

from __future__ import annotations

from kadence_protocol.visible_text import visible


def test_controls_and_bidi_marks_are_escaped_as_repr_would_and_the_rest_kept() -> None:
    assert visible("a\x00\r\x1b[2J\x7f\x9b\u061c\u200e\u200f\u202a\u202e\u2066\u2069b") == (
        "a\\x00\\r\\x1b[2J\\x7f\\x9b\\u061c\\u200e\\u200f\\u202a\\u202e\\u2066\\u2069b")
    assert visible("line\n\ttab é ✓ 👩\u200d💻 <b>&") == "line\n\ttab é ✓ 👩\u200d💻 <b>&"
