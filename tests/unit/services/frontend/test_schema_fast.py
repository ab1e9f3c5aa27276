"""The compiled predicate of a request body schema (schema_check.accepts) takes exactly the
bodies the field-naming checker (schema_check.check) takes, over every body schema of the
document, and check_fast refuses with check's own error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.frontend.errors import InvalidArgument
from services.frontend.openapi import _OPS, COMPONENTS, request_schema
from services.frontend.schema_check import accepts, check, check_fast

BODY_OPS = sorted(op for op in _OPS if request_schema(op) is not None)

# Values near the edges of the document's constraints: lengths, bounds, types.
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2, max_value=2), st.integers(), st.sampled_from(
        [0, 1, 100, 101, 600, 601, 2**31, 2**63, 1.0, 0.5, -0.5, 600.5, float("nan"), float("inf")]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3), st.sampled_from(["", "x" * 1000, "x" * 1001, "default", "Fail", "ScheduleActivityTask",
                                          "AllowDuplicate", "a_b", "1a"]),
)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                              max_size=3), max_leaves=8)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return COMPONENTS[ref.rsplit("/", 1)[-1]] if ref else schema


@st.composite
def _shaped(draw: st.DrawFn, schema: dict[str, Any], depth: int = 0) -> Any:
    """A value mostly of the schema's shape (so that deep constraints are reached), sometimes not."""
    schema = _resolve(schema)
    if depth > 3 or draw(st.integers(0, 9)) == 0:
        return draw(_JSON)
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or ["object"])
    kind = draw(st.sampled_from(kinds))
    if "enum" in schema and draw(st.booleans()):
        return draw(st.sampled_from(schema["enum"]))
    if kind == "object":
        props = schema.get("properties", {})
        out = {}
        for name in draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []:
            out[name] = draw(_shaped(props[name], depth + 1))
        for name in schema.get("required", ()):
            if name not in out and draw(st.integers(0, 4)):
                out[name] = draw(_shaped(props.get(name, {}), depth + 1))
        if draw(st.integers(0, 9)) == 0:
            out[draw(st.text(max_size=4))] = draw(_JSON)
        return out
    if kind == "array":
        items = schema.get("items") or {}
        return draw(st.lists(_shaped(items, depth + 1), max_size=3))
    if kind == "string":
        high = schema.get("maxLength", 5)
        return draw(st.sampled_from(["", "a", "default", "x" * high, "x" * (high + 1)]) | st.text(max_size=4))
    return draw(_SCALARS)


def _check_takes(schema: dict[str, Any], value: Any) -> bool:
    try:
        check(schema, value, COMPONENTS)
    except InvalidArgument:
        return False
    return True


@pytest.mark.parametrize("op", BODY_OPS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_predicate_takes_what_check_takes(op: str, data: st.DataObject) -> None:
    schema = request_schema(op)
    assert schema is not None
    value = data.draw(_shaped(schema))
    try:
        taken = _check_takes(schema, value)
    except OverflowError:  # check's own refusal of a huge integer for a number: check_fast asks it too
        with pytest.raises(OverflowError):
            check_fast(schema, value, COMPONENTS)
        return
    assert accepts(schema, COMPONENTS)(value) == taken, value


def test_check_fast_names_the_field_as_check_does() -> None:
    schema = request_schema("complete_activity_task")
    assert schema is not None
    check_fast(schema, {"task_token": "t", "result": "1"}, COMPONENTS)
    with pytest.raises(InvalidArgument) as info:
        check_fast(schema, {"task_token": "t", "workflow_task": {"started_time": 1, "after_started_time": 1,
                                                                  "ahead_id": 0}}, COMPONENTS)
    assert info.value.field == "workflow_task.ahead_id"
    answers = request_schema("answer_tasks")
    assert answers is not None
    with pytest.raises(InvalidArgument) as info:
        check_fast(answers, {"answers": [{"operation": "complete_activity_task", "body": {}}, 3]}, COMPONENTS)
    assert info.value.field == "answers[1]"


def test_the_predicate_is_compiled_once() -> None:
    schema = request_schema("start")
    assert schema is not None
    assert accepts(schema, COMPONENTS) is accepts(schema, COMPONENTS)
