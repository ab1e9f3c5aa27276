"""JSON read and written with orjson for speed, and with json where orjson would change the
value: orjson reads an integer past 64 bits as a float (``10**30`` came back ``1e+30``) and
refuses to write one, while JSON holds it and a client may send it (in a memo, say).

The check costs two passes in C over the text (services/frontend/validation.py reads
request bodies the same way), so values without such an integer pay no more than orjson. A
text with a run of 19 digits has its runs read: most such integers (a 63-bit random id, say)
are within the 64 bits orjson reads exactly, and only one outside them needs json.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# A run of 19 digits, found as 19 zeros once every digit reads as a zero.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_DIGITS_AS_ZERO_TEXT = str.maketrans("123456789", "000000000")
_LONG_DIGITS = "0" * 19
_LONG_DIGITS_BYTES = _LONG_DIGITS.encode()
# The integers orjson reads as themselves; past them it reads a float.
_ORJSON_LOW, _ORJSON_HIGH = -(2**63), 2**64 - 1


def orjson_exact(text: str | bytes) -> bool:
    """Whether orjson reads every integer of ``text`` as the ``int`` json would. A run of 19
    digits or more inside a string, or a fraction's, may answer False: json then reads it,
    as exactly as ever, only slower."""
    if isinstance(text, bytes):
        return _runs_fit(text, text.translate(_DIGITS_AS_ZERO), _LONG_DIGITS_BYTES, 48, 45)
    return _runs_fit(text, text.translate(_DIGITS_AS_ZERO_TEXT), _LONG_DIGITS, "0", "-")


def _runs_fit(text: Any, zeros: Any, long: Any, zero: Any, minus: Any) -> bool:
    """Every run of 19 digits or more in ``text`` (``zeros``: its digits as zeros), with
    the minus before it, within orjson's integers. Found by ``find`` in C: a regular
    expression over the text cost more than json's whole parse."""
    end = len(zeros)
    i = zeros.find(long)
    while i >= 0:
        j = i + len(long)
        if j < end and zeros[j] == zero:
            j += 1
            if j < end and zeros[j] == zero:
                # 21 digits or more: past 64 bits whatever they are, and not read by int(),
                # which refuses past 4,300 digits and costs the square of the length.
                return False
        start = i - 1 if i and text[i - 1] == minus else i
        if not _ORJSON_LOW <= int(text[start:j]) <= _ORJSON_HIGH:
            return False
        i = zeros.find(long, j)
    return True


def loads(text: str | bytes) -> Any:
    """``text`` parsed; an integer past 64 bits stays an exact ``int``."""
    return orjson.loads(text) if orjson_exact(text) else json.loads(text)


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON; json writes it when it holds an integer past 64 bits."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
