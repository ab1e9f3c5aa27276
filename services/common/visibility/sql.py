"""Search attributes and the compilation of a parsed query (``query.py``) into parameterised SQL.

Values only ever reach PostgreSQL as bind parameters (``$n``); column names and SQL text
come from this module's tables, never from the query. Attributes are typed: the built-in
ones are columns of ``visibility``, custom ones are registered per namespace in
``search_attributes`` and kept in its ``search_attributes`` jsonb. A value of the wrong
type, an unknown attribute or an operator the type has no meaning for is a
:class:`QueryError` naming the problem.

Lists are paged by keyset: the page's order columns, then the run id, and the token
holds the last row's values of them (plus a digest of the query, so that a token is not
used with another query).
"""

from __future__ import annotations

import base64
import difflib
import enum
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from kadence_protocol.enums import RunStatus

from . import query as q

MAX_PAGE_SIZE = 1000
# NULLs (a running run's close time, a type not seen yet) sort as these, so keyset
# comparisons never meet a NULL.
_NULL_TIME = 9_223_372_036_854_775_807
_NULL_TEXT = ""


class QueryError(ValueError):
    """The query cannot be run as asked (unknown attribute, type mismatch, bad token, ...)."""


class AttributeType(enum.StrEnum):
    KEYWORD = "keyword"
    TEXT = "text"
    INT = "int"
    DOUBLE = "double"
    BOOL = "bool"
    DATETIME = "datetime"
    KEYWORD_LIST = "keyword_list"


@dataclass(frozen=True)
class BuiltIn:
    column: str
    type: AttributeType
    nullable: bool = False


BUILT_INS: Mapping[str, BuiltIn] = {
    "WorkflowId": BuiltIn("workflow_id", AttributeType.KEYWORD),
    "RunId": BuiltIn("run_id", AttributeType.KEYWORD),
    "WorkflowType": BuiltIn("workflow_type", AttributeType.KEYWORD, nullable=True),
    "TaskQueue": BuiltIn("task_queue", AttributeType.KEYWORD, nullable=True),
    "ExecutionStatus": BuiltIn("status", AttributeType.KEYWORD),
    "StartTime": BuiltIn("start_time", AttributeType.DATETIME, nullable=True),
    "ExecutionTime": BuiltIn("execution_time", AttributeType.DATETIME, nullable=True),
    "CloseTime": BuiltIn("close_time", AttributeType.DATETIME, nullable=True),
    "HistoryLength": BuiltIn("history_length", AttributeType.INT),
    "ParentWorkflowId": BuiltIn("parent_workflow_id", AttributeType.KEYWORD, nullable=True),
    "ParentRunId": BuiltIn("parent_run_id", AttributeType.KEYWORD, nullable=True),
}
STATUSES = frozenset(s.value for s in RunStatus)  # the visibility row's status column
DEFAULT_ORDER = (q.Order("StartTime", descending=True),)
GROUPABLE = frozenset({"ExecutionStatus"})
_SQL_OPS = {q.Op.EQ: "=", q.Op.NE: "<>", q.Op.LT: "<", q.Op.LE: "<=", q.Op.GT: ">", q.Op.GE: ">="}
# The operators each type takes (IN, BETWEEN, STARTS_WITH, IS NULL are checked alongside).
_ORDERED = frozenset({AttributeType.KEYWORD, AttributeType.INT, AttributeType.DOUBLE, AttributeType.DATETIME})


def _a(kind: AttributeType) -> str:
    return f"{'an' if kind.value[0] in 'aeiou' else 'a'} {kind.value}"


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"{text!r} is not a time (ISO 8601, e.g. '2026-12-01T00:00:00Z')") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:  # every use takes it in UTC: a time whose UTC falls outside years 1-9999 is none
        value.astimezone(UTC)
    except OverflowError:
        raise QueryError(f"{text!r} is out of the range of times (years 1 to 9999 in UTC)") from None
    return value


def to_millis(value: datetime) -> int:
    return int(value.timestamp() * 1000)


MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_BYTES = 10_000


def stored_value(name: str, kind: AttributeType, value: Any) -> Any:
    """A search attribute's value (from JSON) as the visibility row keeps it, or QueryError."""
    def wrong(expected: str) -> QueryError:
        return QueryError(f"search attribute {name} is {_a(kind)}: it takes {expected}, not {value!r}")

    if kind in (AttributeType.KEYWORD, AttributeType.TEXT):
        if not isinstance(value, str):
            raise wrong("a string")
        return _no_nul(name, value)
    if kind is AttributeType.KEYWORD_LIST:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong("a list of strings")
        return [_no_nul(name, v) for v in value]
    if kind is AttributeType.INT:
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise wrong("a whole number")
        return value
    if kind is AttributeType.DOUBLE:
        number = _finite(value)
        if number is None:
            raise wrong("a finite number")
        return number
    if kind is AttributeType.BOOL:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if not isinstance(value, str):
        raise wrong("an ISO 8601 time string")
    # Kept in one UTC format, so that jsonb's string order is time order.
    return parse_datetime(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _finite(value: Any) -> float | None:
    """``value`` as a double, if it is a number one holds (not a bool, NaN or past its range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer past a double's range
        return None
    return number if math.isfinite(number) else None


def _no_nul(name: str, value: str) -> str:
    if "\x00" in value:  # PostgreSQL's text and jsonb cannot hold it
        raise QueryError(f"search attribute {name}: a NUL character cannot be stored")
    if _SURROGATE.search(value):  # no UTF-8 form: neither orjson nor PostgreSQL takes it
        raise QueryError(f"search attribute {name}: a lone surrogate (no UTF-8 form) cannot be stored")
    return value


def stored_attributes(custom: Mapping[str, AttributeType], values: Any) -> dict[str, Any]:
    """Search attributes given at start, checked against the namespace's registry."""
    if not isinstance(values, Mapping):
        raise QueryError("search_attributes must be an object of name: value")
    if len(values) > MAX_ATTRIBUTES:
        raise QueryError(f"search_attributes holds {len(values)} attributes; at most {MAX_ATTRIBUTES} are taken")
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in BUILT_INS:
            raise QueryError(f"{name} is a built-in search attribute; it cannot be set")
        kind = custom.get(name)
        if kind is None:
            known = ", ".join(sorted(custom)) or "none yet"
            raise QueryError(f"search attribute {name!r} is not registered in this namespace (registered: {known};"
                             " POST .../search-attributes registers one)")
        out[name] = stored_value(name, kind, value)
    if len(orjson.dumps(out)) > MAX_ATTRIBUTE_BYTES:
        raise QueryError(f"search_attributes take at most {MAX_ATTRIBUTE_BYTES} bytes as JSON")
    return out


class Compiler:
    """Compiles one query of one namespace; ``params`` collects the bind values in order."""

    def __init__(self, namespace: str, custom: Mapping[str, AttributeType]) -> None:
        self.custom = custom
        self.params: list[Any] = [namespace]

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    # -- attributes and values -----------------------------------------------------------------

    def attribute(self, name: str) -> tuple[str, AttributeType, bool]:
        """The SQL expression of an attribute, its type, and whether it is a jsonb value."""
        built_in = BUILT_INS.get(name)
        if built_in is not None:
            return built_in.column, built_in.type, False
        kind = self.custom.get(name)
        if kind is not None:
            return f"(search_attributes -> {self.bind(name)}::text)", kind, True
        known = sorted([*BUILT_INS, *self.custom])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"
        raise QueryError(f"unknown search attribute {name!r}{hint}")

    def value(self, name: str, kind: AttributeType, value: q.Value) -> Any:
        """``value`` as the type of attribute ``name`` wants it, or QueryError."""
        def mismatch(expected: str) -> QueryError:
            shown = f"'{value}'" if isinstance(value, str) else str(value).lower() if isinstance(value, bool) \
                else str(value)
            return QueryError(f"{name} is {_a(kind)} attribute: it takes {expected}, not {shown}")

        if kind in (AttributeType.KEYWORD, AttributeType.TEXT, AttributeType.KEYWORD_LIST):
            if not isinstance(value, str):
                raise mismatch("a 'quoted string'")
            if name == "ExecutionStatus" and value not in STATUSES:
                raise QueryError(f"ExecutionStatus is one of {', '.join(sorted(STATUSES))}, not '{value}'")
            return value
        if kind is AttributeType.INT:
            # A stored int is 64 bits (bigint, or jsonb written by orjson): so is a value compared.
            if isinstance(value, bool) or not isinstance(value, int):
                raise mismatch("a whole number")
            if not -(2**63) <= value < 2**63:
                raise mismatch("a whole number of 64 bits")
            return value
        if kind is AttributeType.DOUBLE:
            number = _finite(value)
            if number is None:
                raise mismatch("a finite number")
            return number
        if kind is AttributeType.BOOL:
            if not isinstance(value, bool):
                raise mismatch("true or false")
            return value
        if not isinstance(value, str):
            raise mismatch("a 'quoted ISO 8601 time'")
        try:
            return parse_datetime(value)
        except QueryError as exc:
            raise QueryError(f"{name}: {exc}") from None

    def operand(self, name: str, kind: AttributeType, is_json: bool, value: q.Value) -> str:
        """The bind parameter of a value, cast to compare with the attribute's expression."""
        typed = self.value(name, kind, value)
        if is_json:
            if kind is AttributeType.DATETIME:
                typed = typed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # stored so (sorts as time)
            return f"{self.bind(orjson.dumps(typed).decode())}::jsonb"
        if kind is AttributeType.DATETIME:
            return f"{self.bind(to_millis(typed))}::bigint"
        if kind is AttributeType.INT:
            return f"{self.bind(typed)}::bigint"
        return f"{self.bind(typed)}::text"

    # -- expressions ---------------------------------------------------------------------------

    def where(self, expr: q.Expr) -> str:
        if isinstance(expr, q.And):
            return "(" + " AND ".join(self.where(e) for e in expr.items) + ")"
        if isinstance(expr, q.Or):
            return "(" + " OR ".join(self.where(e) for e in expr.items) + ")"
        return self._predicate(expr)

    def _predicate(self, expr: q.Predicate) -> str:
        column, kind, is_json = self.attribute(expr.name)
        if isinstance(expr, q.IsNull):
            return f"({column} IS {'NOT ' if expr.negated else ''}NULL)"
        if kind is AttributeType.KEYWORD_LIST:
            return self._list(expr, column)
        if kind is AttributeType.TEXT:
            return self._text(expr, column, kind)
        if isinstance(expr, q.Comparison):
            if expr.op not in (q.Op.EQ, q.Op.NE) and kind not in _ORDERED:
                raise QueryError(f"{expr.name} is {_a(kind)} attribute: it takes = and != only")
            return f"({column} {_SQL_OPS[expr.op]} {self.operand(expr.name, kind, is_json, expr.value)})"
        if isinstance(expr, q.In):
            items = ", ".join(self.operand(expr.name, kind, is_json, v) for v in expr.values)
            return f"({column} {'NOT ' if expr.negated else ''}IN ({items}))"
        if isinstance(expr, q.Between):
            if kind not in _ORDERED:
                raise QueryError(f"{expr.name} is {_a(kind)} attribute: BETWEEN has no meaning for it")
            low = self.operand(expr.name, kind, is_json, expr.low)
            high = self.operand(expr.name, kind, is_json, expr.high)
            return f"({column} {'NOT ' if expr.negated else ''}BETWEEN {low} AND {high})"
        assert isinstance(expr, q.StartsWith)
        if kind is not AttributeType.KEYWORD:
            raise QueryError(f"{expr.name} is {_a(kind)} attribute: STARTS_WITH takes keyword attributes")
        prefix = self.value(expr.name, kind, expr.prefix)
        text = f"({column} #>> '{{}}')" if is_json else column
        # starts_with() takes the prefix as text: no LIKE pattern to escape.
        return f"starts_with({text}, {self.bind(prefix)}::text)"

    def _text(self, expr: q.Predicate, column: str, kind: AttributeType) -> str:
        """A text attribute: = finds the words as a phrase anywhere in it (case-insensitive)."""
        if not isinstance(expr, q.Comparison) or expr.op not in (q.Op.EQ, q.Op.NE):
            raise QueryError(f"{expr.name} is a text attribute: it takes = and != only")
        phrase = self.value(expr.name, kind, expr.value)
        found = f"strpos(lower({column} #>> '{{}}'), lower({self.bind(phrase)}::text)) > 0"
        return f"({found})" if expr.op is q.Op.EQ else f"(NOT coalesce({found}, false))"

    def _list(self, expr: q.Predicate, column: str) -> str:
        """A keyword list: = and IN find lists holding the value (any of the values)."""
        kind = AttributeType.KEYWORD_LIST
        if isinstance(expr, q.Comparison) and expr.op in (q.Op.EQ, q.Op.NE):
            value = self.value(expr.name, kind, expr.value)
            holds = f"{column} @> {self.bind(orjson.dumps([value]).decode())}::jsonb"
            return f"({holds})" if expr.op is q.Op.EQ else f"(NOT coalesce({holds}, false))"
        if isinstance(expr, q.In):
            values = [self.value(expr.name, kind, v) for v in expr.values]
            holds = f"{column} ?| {self.bind(values)}::text[]"
            return f"(NOT coalesce({holds}, false))" if expr.negated else f"({holds})"
        raise QueryError(f"{expr.name} is a keyword_list attribute: it takes =, != and IN only")


# ---- statements -----------------------------------------------------------------------------------

LIST_COLUMNS = ("namespace, workflow_id, run_id, workflow_type, task_queue, status, start_time, execution_time,"
                " close_time, history_length, parent_workflow_id, parent_run_id, memo, search_attributes")


@dataclass(frozen=True)
class SortKey:
    name: str
    expression: str  # NULL-free, so keyset comparisons hold
    descending: bool
    integer: bool


def _sort_keys(order: Sequence[q.Order]) -> list[SortKey]:
    keys: list[SortKey] = []
    for item in order or DEFAULT_ORDER:
        built_in = BUILT_INS.get(item.name)
        if built_in is None:
            raise QueryError(f"ORDER BY takes a built-in attribute ({', '.join(BUILT_INS)}), not {item.name!r}")
        integer = built_in.type in (AttributeType.INT, AttributeType.DATETIME)
        expression = built_in.column
        if built_in.nullable:
            expression = f"COALESCE({built_in.column}, {_NULL_TIME if integer else repr(_NULL_TEXT)})"
        keys.append(SortKey(item.name, expression, item.descending, integer))
    if not any(k.name == "RunId" for k in keys):
        keys.append(SortKey("RunId", "run_id", keys[-1].descending, False))  # unique: the tie-breaker
    return keys


def _digest(namespace: str, query_text: str) -> str:
    return hashlib.sha256(f"{namespace}\n{query_text}".encode()).hexdigest()[:16]


def encode_token(namespace: str, query_text: str, values: Sequence[Any]) -> str:
    payload = orjson.dumps({"q": _digest(namespace, query_text), "after": list(values)})
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _decode_token(token: str, namespace: str, query_text: str, keys: Sequence[SortKey]) -> list[Any]:
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = payload["after"]
        digest = payload["q"]
    except (ValueError, TypeError, KeyError):
        raise QueryError("next_page_token is not a token this API gave") from None
    if digest != _digest(namespace, query_text):
        raise QueryError("next_page_token belongs to another query; ask the first page again")
    if not isinstance(after, list) or len(after) != len(keys) or not all(
            _token_value(v, k.integer) for k, v in zip(keys, after, strict=True)):
        raise QueryError("next_page_token is not a token this API gave")
    return after


def _token_value(value: object, integer: bool) -> bool:
    """Whether a forged token's value is one a page's last row could hold: a bigint, or
    text PostgreSQL takes (a NUL, or an integer past 64 bits, failed the query: a 500)."""
    if integer:
        return type(value) is int and -(2**63) <= value < 2**63
    return isinstance(value, str) and "\x00" not in value


@dataclass(frozen=True)
class Statement:
    sql: str
    params: list[Any]
    sort_keys: tuple[SortKey, ...] = ()


def compile_list(namespace: str, query_text: str, custom: Mapping[str, AttributeType], *, page_size: int,
                 token: str | None) -> Statement:
    """SELECT of one page (page_size + 1 rows: the extra one says whether a next page exists)."""
    parsed = _parse(query_text)
    if parsed.group_by is not None:
        raise QueryError("GROUP BY is for counting (workflows/count), not listing")
    compiler = Compiler(namespace, custom)
    conditions = ["namespace = $1"]
    if parsed.where is not None:
        conditions.append(compiler.where(parsed.where))
    keys = _sort_keys(parsed.order_by)
    sort_values = ", ".join(f"{k.expression} AS sort_{i}" for i, k in enumerate(keys))
    if token:
        after = _decode_token(token, namespace, query_text, keys)
        bound = [compiler.bind(v) + ("::bigint" if k.integer else "::text") for k, v in zip(keys, after, strict=True)]
        # Rows after the token's in the order: (k0 beyond) or (k0 equal and k1 beyond) or ...
        alternatives = []
        for i, key in enumerate(keys):
            equal = [f"{keys[j].expression} = {bound[j]}" for j in range(i)]
            beyond = f"{key.expression} {'<' if key.descending else '>'} {bound[i]}"
            alternatives.append("(" + " AND ".join([*equal, beyond]) + ")")
        conditions.append("(" + " OR ".join(alternatives) + ")")
    order = ", ".join(f"{k.expression} {'DESC' if k.descending else 'ASC'}" for k in keys)
    sql = (f"SELECT {LIST_COLUMNS}, {sort_values} FROM visibility WHERE {' AND '.join(conditions)}"
           f" ORDER BY {order} LIMIT {compiler.bind(page_size + 1)}")
    return Statement(sql, compiler.params, tuple(keys))


def compile_count(namespace: str, query_text: str, custom: Mapping[str, AttributeType]) -> tuple[Statement, bool]:
    """SELECT of the count (grouped by status when the query says GROUP BY ExecutionStatus)."""
    parsed = _parse(query_text)
    if parsed.order_by:
        raise QueryError("ORDER BY has no meaning in a count")
    compiler = Compiler(namespace, custom)
    conditions = ["namespace = $1"]
    if parsed.where is not None:
        conditions.append(compiler.where(parsed.where))
    where = " AND ".join(conditions)
    if parsed.group_by is None:
        return Statement(f"SELECT count(*) AS count FROM visibility WHERE {where}", compiler.params), False
    if parsed.group_by not in GROUPABLE:
        raise QueryError(f"GROUP BY takes {', '.join(sorted(GROUPABLE))}, not {parsed.group_by!r}")
    column = BUILT_INS[parsed.group_by].column
    sql = (f"SELECT {column} AS value, count(*) AS count FROM visibility WHERE {where}"
           f" GROUP BY {column} ORDER BY count DESC, {column}")
    return Statement(sql, compiler.params), True


def _parse(query_text: str) -> q.Query:
    try:
        return q.parse(query_text)
    except q.QuerySyntaxError as exc:
        raise QueryError(f"syntax error: {exc}") from None
