"""Schemathesis hooks for test_openapi_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

Long waits are shortened before each call: a poll, a result wait, a start that waits for
its outcome or a query would otherwise hold a generated request for up to ten minutes.
A valid namespace in the path becomes "default" (registered), so generated calls reach the
handlers instead of stopping at 404 NamespaceNotFound. A generated PATCH that gave "default"
limits of its own (an rps of 0.001 is valid) is followed by one restoring the cluster's:
otherwise every later call of the run was answered 429 and the time budget went on nothing.
"""

from __future__ import annotations

import re
from typing import Any

import requests
import schemathesis
from schemathesis.core import NotSet

from services.common.validation import NAMESPACE_PATTERN

_NAMESPACE = re.compile(NAMESPACE_PATTERN)
# Each field a generated request may use to wait, and the wait the fuzzer gives it instead.
_WAITS = {"wait_seconds": 0, "timeout_ms": 100}
# Operations (by path ending) whose wait is long when absent or null: where it is, which field.
_DEFAULT_WAITS = {"/poll": ("body", "wait_seconds"), "/query": ("body", "timeout_ms"),
                  "/result": ("query", "wait_seconds"), "/update": ("body", "wait_seconds")}


def _short(values: Any, forced: str | None) -> None:
    if not isinstance(values, dict):
        return
    for many in ("starts", "waits"):  # POST /workflow-starts, /workflow-results: each item may wait
        if isinstance(values.get(many), list):
            for item in values[many]:
                _short(item, "wait_seconds" if many == "waits" else None)
    for field, short in _WAITS.items():
        value = values.get(field)
        if (isinstance(value, int | float) and not isinstance(value, bool)) or (field == forced and value is None) \
                or (isinstance(value, str) and _NUMBER.fullmatch(value)):  # a query string's number is text
            values[field] = short


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    where, forced = next((w for end, w in _DEFAULT_WAITS.items() if case.operation.path.endswith(end)),
                         (None, None))
    if where == "query" and case.query is None:
        case.query = {}
    if where == "body" and (case.body is None or isinstance(case.body, NotSet)):
        case.body = {}  # an absent body waits the default 60 s as well
        case.media_type = "application/json"
    _short(case.body, forced if where == "body" else None)
    _short(case.query, forced if where == "query" else None)
    params = case.path_parameters
    if isinstance(params, dict) and isinstance(params.get("namespace"), str) \
            and _NAMESPACE.fullmatch(params["namespace"]):
        params["namespace"] = "default"


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _not_http(case: Any) -> bool:
    """A header value with a control character is not HTTP (RFC 9110): the server's HTTP
    parser refuses it with a plain-text 400 before any handler, as it should."""
    headers = case.headers if isinstance(case.headers, dict) else {}
    return any(isinstance(v, str) and _CONTROL.search(v) for v in headers.values())


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """A query to a run no worker serves times out with 504 DeadlineExceeded by design
    (docs/protocol.md); every other 5xx fails the run. A request that is not HTTP is no
    finding (see _not_http)."""
    if _not_http(case):
        return False
    if case.operation.path.endswith("/query") and response.status_code == 504:
        try:
            return bool(response.json().get("error") != "DeadlineExceeded")
        except ValueError:
            return True
    return True


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    """After a namespace's limits were changed, its limits are the cluster's again (the call
    and its answer were as generated; only the calls after it are spared the limits)."""
    if case.method.upper() != "PATCH" or response.status_code != 200:
        return
    try:
        limits = response.json().get("limits")
    except ValueError:
        return
    if isinstance(limits, dict) and any(v is not None for v in limits.values()):
        restored = requests.patch(response.request.url, json={"limits": dict.fromkeys(limits)}, timeout=10,
                                  headers={"Authorization": response.request.headers.get("Authorization", "")})
        restored.raise_for_status()
