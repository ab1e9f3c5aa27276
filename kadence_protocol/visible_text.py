"""Text a tenant chose (ids, types, names, messages, search attribute values) made safe to show.

Control characters (but newline and tab) and the bidirectional overrides reorder or restyle
what a terminal or a page shows: an id holding U+202E reads backwards and passes for another,
an escape sequence clears an operator's screen. Both the CLI and the web UI show each of them
as its escape instead (``\\x1b``, ``\\u202e``), as repr() would, so what is shown is what is there.
"""

from __future__ import annotations

import re

__all__ = ["UNSEEN", "visible"]

#: The characters shown as escapes: C0 and C1 controls but newline and tab, DEL, and the
#: bidirectional marks, embeddings, overrides and isolates.
UNSEEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """``text`` with each control character shown as its escape (``\\x1b``), as repr() would."""
    return UNSEEN.sub(lambda m: repr(m.group())[1:-1], text)
