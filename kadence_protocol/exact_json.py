"""JSON read and written with orjson for speed, and with json where orjson would change the
value: orjson reads an integer past 64 bits as a float (``10**30`` came back ``1e+30``) and
refuses to write one, while JSON holds it and a client may send it (in a memo, say).

The check costs two passes in C over the text (services/frontend/validation.py reads
request bodies the same way), so values without such an integer pay no more than orjson.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# A run of 19 digits, found as 19 zeros once every digit reads as a zero.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_DIGITS_AS_ZERO_TEXT = str.maketrans("123456789", "000000000")
_LONG_DIGITS = "0" * 19


def loads(text: str | bytes) -> Any:
    """``text`` parsed; an integer of 19 digits or more stays an exact ``int``."""
    if isinstance(text, bytes):
        long = _LONG_DIGITS.encode() in text.translate(_DIGITS_AS_ZERO)
    else:
        long = _LONG_DIGITS in text.translate(_DIGITS_AS_ZERO_TEXT)
    return json.loads(text) if long else orjson.loads(text)


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON; json writes it when it holds an integer past 64 bits."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
