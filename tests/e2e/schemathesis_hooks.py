"""Schemathesis hooks for test_openapi_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

Long waits are shortened before each call: a poll, a result wait, a start that waits for
its outcome or a query would otherwise hold a generated request for up to ten minutes.
"""

from __future__ import annotations

from typing import Any

import schemathesis

# Each field a generated request may use to wait, and the wait the fuzzer gives it instead.
_WAITS = {"wait_seconds": 0, "timeout_ms": 100}


def _short(values: Any, *, poll: bool = False) -> None:
    if isinstance(values, dict):
        for field, short in _WAITS.items():
            if isinstance(values.get(field), int | float) and not isinstance(values[field], bool):
                values[field] = short
        if poll and "wait_seconds" not in values:
            values["wait_seconds"] = 0  # a poll's default wait is 60 s


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    _short(case.body, poll=case.operation.path.endswith("/poll"))
    _short(case.query)
