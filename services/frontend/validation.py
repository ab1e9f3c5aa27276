"""Validation of API input: each parser names the offending field in its error.

Pure functions, no I/O. They run after the body passed its schema in the OpenAPI
document (openapi.py, schema_check.py: types, ranges, unknown fields refused) and check
what a schema cannot say (JSON text, UTF-8 sizes, command attributes). The limits and value checks are those of
``services.common.validation``, which history applies to every record of
kadence.requests as well; the engine runs its ``check_command`` on each command
before producing it.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastavro.validation import validate as avro_validate

from kadence_protocol import avro, exact_json
from services.common import validation as common

from .errors import InvalidArgument

MAX_NAME = common.MAX_NAME_CHARS
Body = dict[str, Any]
# json.dumps(v, separators=(",", ":")) without its encoder built per call: by allow_nan, the
# encoder writing characters as they are and the one escaping them (see _unescaped).
_ENCODERS = {allow_nan: (json.JSONEncoder(separators=(",", ":"), allow_nan=allow_nan, ensure_ascii=False).encode,
                         json.JSONEncoder(separators=(",", ":"), allow_nan=allow_nan).encode)
             for allow_nan in (False, True)}
T = TypeVar("T")
_TOO_DEEP = "{what} is nested too deeply"


def checked(check: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a check of services.common.validation; its refusal becomes an InvalidArgument."""
    try:
        return check(*args, **kwargs)
    except common.Invalid as exc:
        raise InvalidArgument(exc.message, field=exc.field) from None


def parse_json_body(raw: bytes) -> Body:
    if not raw.strip():
        return {}
    try:
        data = _fast_loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if data is None:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidArgument(f"the request body is not valid JSON: {exc}") from None
        except RecursionError:  # past orjson's 1024 levels, json runs out of stack
            raise InvalidArgument(_TOO_DEEP.format(what="the request body")) from None
    if not isinstance(data, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return data


def _fast_loads(raw: bytes) -> Any:
    """The body parsed by orjson, cheaper than json on every request; None
    (or orjson's refusal) leaves it to json, which takes what it always took (UTF-16, a BOM,
    NaN, lone surrogates) and words the errors as it always did. A body with an integer past
    64 bits is left to json too: orjson reads it as a float (exact_json.py)."""
    if not exact_json.orjson_exact(raw):
        return None
    return orjson.loads(raw)


def namespace(value: object) -> str:
    return checked(common.namespace, value)


def name(body: Body, field: str, *, required: bool = True, value: object = None) -> str:
    """A non-empty string of at most 1000 characters (``value`` overrides the body)."""
    v = body.get(field) if value is None else value
    if v is None and not required:
        return ""
    return checked(common.name, v, field)


def optional_str(body: Body, field: str, *, max_len: int = MAX_NAME) -> str | None:
    v = body.get(field)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > max_len:
        raise InvalidArgument(f"{field} must be a string of at most {max_len} characters", field=field)
    return checked(common.text, v, field, max_len) or None


def array_json(body: Body, field: str) -> str | None:
    """A JSON array argument, returned as JSON text (absent: null)."""
    v = body.get(field)
    if v is None:
        return None
    if not isinstance(v, list):
        raise InvalidArgument(f"{field} must be an array", field=field)
    try:
        text = _unescaped(v, allow_nan=False)  # NaN and Infinity are not JSON
    except ValueError:  # NaN or Infinity: refused below, in the words of the JSON check
        text = _json_text(v, field)
    except RecursionError:
        raise InvalidArgument(_TOO_DEEP.format(what=field), field=field) from None
    else:
        # JSON text of an array, written by json itself, with no lone surrogate: the parse and
        # Unicode checks of common.payload cannot refuse it, only its size in UTF-8 can.
        cap = common.DEFAULT_LIMITS.max_payload_bytes
        if len(text) <= cap and (text.isascii() or len(text.encode()) <= cap):
            return text
    return checked(common.payload, text, field, array=True)


def json_text(body: Body, field: str) -> str | None:
    """A payload given as JSON text (a string holding JSON), or null."""
    v = body.get(field)
    if v is None:
        return None
    return checked(common.payload, v, field)


def non_negative_int(body: Body, field: str, default: int, *, maximum: int = 2**62) -> int:
    v = body.get(field)
    if v is None:
        return default
    if type(v) is not int or v < 0 or v > maximum:
        raise InvalidArgument(f"{field} must be an integer between 0 and {maximum}", field=field)
    return v


def int_in(body: Body, field: str, default: int, low: int, high: int) -> int:
    v = body.get(field)
    if v is None or v == "":
        return default
    if isinstance(v, str):  # query-string parameters arrive as text
        try:
            v = int(v)
        except ValueError:
            raise InvalidArgument(f"{field} must be an integer", field=field) from None
    if type(v) is not int or not low <= v <= high:
        raise InvalidArgument(f"{field} must be an integer between {low} and {high}", field=field)
    return v


def seconds(body: Body, field: str, default: float, maximum: float) -> float:
    v = body.get(field)
    if v is None or v == "":
        return default
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise InvalidArgument(f"{field} must be a number of seconds", field=field) from None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not 0 <= v <= maximum:
        raise InvalidArgument(f"{field} must be a number of seconds between 0 and {maximum:g}", field=field)
    return float(v)


def failure(body: Body, field: str, *, required: bool) -> dict[str, Any] | None:
    v = body.get(field)
    if v is None:
        if required:
            raise InvalidArgument(f"{field} must be a Failure object", field=field)
        return None
    if not isinstance(v, dict):
        raise InvalidArgument(f"{field} must be a Failure object", field=field)
    message = v.get("message")
    if not isinstance(message, str):
        raise InvalidArgument(f"{field}.message must be a string", field=f"{field}.message")
    out: dict[str, Any] = {"message": message}
    for key in ("type", "stack_trace"):
        s = v.get(key, "")
        if not isinstance(s, str):
            raise InvalidArgument(f"{field}.{key} must be a string", field=f"{field}.{key}")
        out[key] = s
    nr = v.get("non_retryable", False)
    if not isinstance(nr, bool):
        raise InvalidArgument(f"{field}.non_retryable must be a boolean", field=f"{field}.non_retryable")
    out["non_retryable"] = nr
    out["details"] = json_text(v, "details") if "details" in v else None
    unknown = next((k for k in v if k not in _FAILURE_FIELDS), None)
    if unknown is not None:
        raise InvalidArgument(f"{field}.{unknown} is not a field of a Failure", field=f"{field}.{unknown}")
    return out


_FAILURE_FIELDS = frozenset(("message", "type", "stack_trace", "non_retryable", "details"))


# -- workflow commands ----------------------------------------------------------------------


def command_types() -> list[str]:
    return list(_command_types())


@functools.cache
def _command_types() -> tuple[str, ...]:
    field = next(f for f in avro.schemas().current["kadence.Command"]["fields"] if f["name"] == "command_type")
    return tuple(field["type"]["symbols"])


_LONG = (-(2**63), 2**63 - 1)


def _is_long(v: Any) -> bool:
    return type(v) is int and _LONG[0] <= v <= _LONG[1]


# fastavro's validate of a primitive type, for values parsed from JSON (str, int, float, bool,
# None, list, dict): the same yes or no, without parsing the field's schema on every call.
_PRIMITIVE: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool), "long": _is_long,
}


def _value_test(avro_type: Any) -> Callable[[Any], bool]:
    """Whether a value fits ``avro_type``, as ``fastavro.validation.validate`` decides."""
    if isinstance(avro_type, str) and avro_type in _PRIMITIVE:
        return _PRIMITIVE[avro_type]
    if (isinstance(avro_type, list) and len(avro_type) == 2 and avro_type[0] == "null"
            and isinstance(avro_type[1], str) and avro_type[1] in _PRIMITIVE):
        test = _PRIMITIVE[avro_type[1]]
        return lambda v: v is None or test(v)
    return lambda v: bool(avro_validate(v, avro_type, raise_errors=False))


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    type: Any
    optional: bool  # has a default: absent or null takes it
    number: bool  # JSON true/false is no number here
    fits: Callable[[Any], bool]
    record: Mapping[str, Any] | None  # the fields (name: type) of the record the value may be


@functools.cache
def _attribute_fields(command_type: str) -> tuple[_Field, ...]:
    """The attribute fields of a command type, each with its test (built once per type)."""
    schema = avro.schemas().current[avro.command_attributes_type(command_type)]
    return tuple(_Field(f["name"], f["type"], "default" in f, f["type"] in ("long", "int", "double", "float"),
                        _value_test(f["type"]), _record_fields(f["type"])) for f in schema["fields"])


@functools.cache
def _attribute_names(command_type: str) -> frozenset[str]:
    return frozenset(f.name for f in _attribute_fields(command_type))


def _record_of(avro_type: Any) -> dict[str, Any] | None:
    """The record schema ``avro_type`` is, or the one record branch of a union; else None."""
    if isinstance(avro_type, list):
        records = [r for r in map(_record_of, avro_type) if r is not None]
        return records[0] if len(records) == 1 else None
    if isinstance(avro_type, str):
        avro_type = avro.schemas().current.get(avro_type)
    if isinstance(avro_type, dict) and avro_type.get("type") == "record":
        return avro_type
    return None


def _record_fields(avro_type: Any) -> dict[str, Any] | None:
    """The fields (name: type) of the record ``avro_type`` is, or of a union's one record; else None."""
    record = _record_of(avro_type)
    return None if record is None else {f["name"]: f["type"] for f in record["fields"]}


def _unknown_key(value: dict[str, Any], fields: Mapping[str, Any] | None) -> str | None:
    """The dotted path of a key in ``value`` (a record given as JSON, nested records included)
    that its record (``fields``) has no field for, or None."""
    if fields is None:
        return None
    for key, item in value.items():
        if key not in fields:
            return key
        if isinstance(item, dict):
            inner = _unknown_key(item, _record_fields(fields[key]))
            if inner is not None:
                return f"{key}.{inner}"
    return None


def commands(body: Body, field: str = "commands", *, within: str = "") -> list[dict[str, Any]]:
    """Worker commands (kadence.Command as JSON), checked against the Avro schema.
    ``within`` names the object that holds them, for the error messages."""
    v = body.get(field, [])
    if v is None:
        return []
    label = within + field
    if not isinstance(v, list):
        raise InvalidArgument(f"{label} must be an array of commands", field=label)
    types = _command_types()
    out: list[dict[str, Any]] = []
    for i, cmd in enumerate(v):
        if not isinstance(cmd, dict):
            raise InvalidArgument(f"{label}[{i}] must be an object", field=f"{label}[{i}]")
        ctype = cmd.get("command_type")
        if ctype not in types:
            raise InvalidArgument(f"{label}[{i}].command_type must be one of {', '.join(types)}",
                                  field=f"{label}[{i}].command_type")
        attrs = cmd.get("attributes", {})
        if not isinstance(attrs, dict):
            raise InvalidArgument(f"{label}[{i}].attributes must be an object", field=f"{label}[{i}].attributes")
        fields = _attribute_fields(ctype)
        names = _attribute_names(ctype)
        if not attrs.keys() <= names:
            unknown = next(k for k in attrs if k not in names)
            here = f"{label}[{i}].attributes.{unknown}"
            raise InvalidArgument(f"{here} is not a field of {ctype}", field=here)
        clean: dict[str, Any] = {}
        for f in fields:
            value = attrs.get(f.name)
            if value is None and (f.optional or f.name not in attrs):
                if not f.optional:
                    here = f"{label}[{i}].attributes.{f.name}"
                    raise InvalidArgument(f"{here} is required", field=here)
                continue
            if (f.number and isinstance(value, bool)) or not f.fits(value):
                here = f"{label}[{i}].attributes.{f.name}"
                if f.number and isinstance(value, bool):
                    raise InvalidArgument(f"{here} must be a number", field=here)
                raise InvalidArgument(f"{here} does not fit the schema ({_type_name(f.type)})", field=here)
            if isinstance(value, dict):  # a record (a failure, a retry policy): fastavro ignores extra keys
                inner = _unknown_key(value, f.record)  # the record's fields found once per type
                if inner is not None:
                    here = f"{label}[{i}].attributes.{f.name}.{inner}"
                    raise InvalidArgument(f"{here} is not a field of its record", field=here)
            clean[f.name] = value
        out.append({"command_type": ctype, "attributes": clean})
    return out


# RunAheadWorkflowTask's integers: (default when absent, None if required; lowest value).
_RUN_AHEAD_FIELDS: dict[str, tuple[int | None, int]] = {
    "after_scheduled_event_id": (0, 0), "after_started_time": (None, 0), "started_time": (None, 0),
    "ahead_id": (None, 1), "after_ahead_id": (0, 0),
}


def run_ahead(body: Body, field: str = "workflow_task") -> dict[str, Any] | None:
    """The workflow task a worker ran ahead with its activity's result (kadence.RunAheadWorkflowTask
    as JSON), or None when the answer carries none."""
    v = body.get(field)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InvalidArgument(f"{field} must be an object", field=field)
    out: dict[str, Any] = {}
    for name, (default, low) in _RUN_AHEAD_FIELDS.items():
        value = v.get(name, default)
        if type(value) is not int or not low <= value < 2**63:
            raise InvalidArgument(f"{field}.{name} must be an integer between {low} and {2**63 - 1}",
                                  field=f"{field}.{name}")
        out[name] = value
    out["commands"] = commands(v, within=f"{field}.")
    out["runs_timers_ahead"] = flag(v, "runs_timers_ahead", within=f"{field}.")
    return out


def flag(body: Body, field: str, *, within: str = "") -> bool:
    """An optional boolean (absent or null: false)."""
    v = body.get(field)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise InvalidArgument(f"{within}{field} must be a boolean", field=f"{within}{field}")
    return v


def _type_name(t: Any) -> str:
    if isinstance(t, list):
        return " | ".join(_type_name(x) for x in t)
    if isinstance(t, dict):
        return str(t.get("name") or t.get("type"))
    return str(t)


# -- request values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StartRequest:
    namespace: str
    workflow_id: str
    workflow_type: str
    task_queue: str
    input: str | None
    execution_timeout_ms: int
    workflow_task_timeout_ms: int
    request_id: str
    identity: str
    run_timeout_ms: int = 0
    id_reuse_policy: str = ""
    id_conflict_policy: str = ""
    memo: str | None = None  # JSON text of an object
    search_attributes: str | None = None  # JSON object, checked against the registry (frontend/visibility.py)
    retry_policy: dict[str, Any] | None = None  # a kadence.RetryPolicy record (services/history/retry.py)


def memo(body: Body, field: str = "memo") -> str | None:
    """A JSON object (absent or null: none), returned as JSON text."""
    v = body.get(field)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InvalidArgument(f"{field} must be a JSON object", field=field)
    return checked(common.payload, _json_text(v, field), field)


def _json_text(v: object, field: str) -> str:
    """``v`` (parsed from the body) as JSON text again; a value nested so deeply that json runs
    out of stack writing it (orjson parses 1024 levels, json writes about 990) is refused."""
    try:
        return _unescaped(v, allow_nan=True)
    except RecursionError:
        raise InvalidArgument(_TOO_DEEP.format(what=field), field=field) from None


def _unescaped(v: object, *, allow_nan: bool) -> str:
    """``v`` as compact JSON text with its characters as they are, not escaped: escaped, 'é'
    took 6 bytes of the payload limit and '😀' 12, so 1 MB of text that fits every limit was
    refused as over 2 MiB. A lone surrogate has no UTF-8 form: a value holding one is written
    escaped, as before."""
    plain, escaped = _ENCODERS[allow_nan]
    text = plain(v)
    return escaped(v) if not text.isascii() and common.has_surrogate(text) else text


def policy(body: Body, field: str, allowed: frozenset[str]) -> str:
    """A start policy's name; absent, null or '' is the default ('')."""
    v = body.get(field)
    return "" if v is None else checked(common.choice, v, field, allowed)


def start_request(ns: str, body: Body, workflow_id: str | None = None) -> StartRequest:
    return StartRequest(
        namespace=namespace(ns),
        workflow_id=name(body, "workflow_id", value=workflow_id),
        workflow_type=name(body, "workflow_type"),
        task_queue=name(body, "task_queue"),
        input=array_json(body, "input"),
        execution_timeout_ms=non_negative_int(body, "execution_timeout_ms", 0, maximum=common.MAX_DURATION_MS),
        workflow_task_timeout_ms=non_negative_int(body, "workflow_task_timeout_ms", 10000,
                                                  maximum=common.MAX_DURATION_MS),
        request_id=optional_str(body, "request_id") or "",
        identity=optional_str(body, "identity") or "",
        run_timeout_ms=non_negative_int(body, "run_timeout_ms", 0, maximum=common.MAX_DURATION_MS),
        id_reuse_policy=policy(body, "id_reuse_policy", common.REUSE_POLICIES),
        id_conflict_policy=policy(body, "id_conflict_policy", common.CONFLICT_POLICIES),
        memo=memo(body),
        retry_policy=workflow_retry_policy(body),
    )


# The kadence.RetryPolicy fields and their defaults (schemas/kadence.RetryPolicy.avsc).
RETRY_POLICY_DEFAULTS: dict[str, Any] = {"initial_interval_ms": 1000, "backoff_coefficient": 2.0,
                                         "maximum_interval_ms": 0, "maximum_attempts": 0,
                                         "non_retryable_error_types": []}


def workflow_retry_policy(body: Body, field: str = "retry_policy") -> dict[str, Any] | None:
    """A start's retry policy: an object of the RetryPolicy fields (each defaulted), or
    absent/null (never retried); checked as the Kafka start record's is."""
    v = body.get(field)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InvalidArgument(f"{field} must be a JSON object or null", field=field)
    unknown = sorted(set(v) - set(RETRY_POLICY_DEFAULTS))
    if unknown:
        raise InvalidArgument(f"{field}.{unknown[0]} is not a retry policy field", field=f"{field}.{unknown[0]}")
    policy = {**RETRY_POLICY_DEFAULTS, **v}
    checked(common.retry_policy, policy, field)
    if isinstance(policy["backoff_coefficient"], int):
        policy["backoff_coefficient"] = float(policy["backoff_coefficient"])
    return policy


@dataclass(frozen=True)
class PollRequest:
    namespace: str
    task_queue: str
    identity: str
    max_tasks: int
    wait_seconds: float


def poll_request(ns: str, task_queue: str, body: Body) -> PollRequest:
    return PollRequest(
        namespace=namespace(ns),
        task_queue=name(body, "task_queue", value=task_queue),
        identity=optional_str(body, "identity") or "",
        max_tasks=int_in(body, "max_tasks", 1, 1, 100),
        wait_seconds=seconds(body, "wait_seconds", 60.0, 600.0),
    )
