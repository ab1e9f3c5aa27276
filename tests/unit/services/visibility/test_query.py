"""The list filter language: tokenizer, parser and the compilation to parameterised SQL,
including hostile input (quotes, semicolons, unicode, very long or deep queries)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.visibility import query as q
from services.common.visibility import sql
from services.common.visibility.sql import AttributeType, QueryError

CUSTOM = {"CustomerId": AttributeType.KEYWORD, "Amount": AttributeType.DOUBLE, "Priority": AttributeType.INT,
          "Vip": AttributeType.BOOL, "Note": AttributeType.TEXT, "Tags": AttributeType.KEYWORD_LIST,
          "DueAt": AttributeType.DATETIME}


def listing(text: str, token: str | None = None) -> sql.Statement:
    return sql.compile_list("default", text, CUSTOM, page_size=10, token=token)


def test_the_example_of_the_brief_parses_into_its_ast() -> None:
    parsed = q.parse("WorkflowType = 'Order' AND ExecutionStatus = 'Running' AND StartTime > '2026-12-01T00:00:00Z'"
                     " ORDER BY StartTime DESC")
    assert parsed == q.Query(
        q.And((q.Comparison("WorkflowType", q.Op.EQ, "Order"), q.Comparison("ExecutionStatus", q.Op.EQ, "Running"),
               q.Comparison("StartTime", q.Op.GT, "2026-12-01T00:00:00Z"))),
        (q.Order("StartTime", descending=True),))


def test_precedence_parentheses_and_every_operator() -> None:
    parsed = q.parse("a = 1 OR b != 'x' AND (c IN ('p', 'q') OR d NOT BETWEEN 1 AND 2.5) AND e STARTS_WITH 'pre'"
                     " and f is not null and g NOT IN (true, false) and h <> -3 and i <= 1e3 group by k"
                     " order by a, b asc, c desc")
    assert isinstance(parsed.where, q.Or)
    first, second = parsed.where.items
    assert first == q.Comparison("a", q.Op.EQ, 1)
    assert isinstance(second, q.And)
    assert second.items[0] == q.Comparison("b", q.Op.NE, "x")
    assert second.items[1] == q.Or((q.In("c", ("p", "q")), q.Between("d", 1, 2.5, negated=True)))
    assert second.items[2:] == (q.StartsWith("e", "pre"), q.IsNull("f", negated=True),
                                q.In("g", (True, False), negated=True), q.Comparison("h", q.Op.NE, -3),
                                q.Comparison("i", q.Op.LE, 1000.0))
    assert parsed.group_by == "k"
    assert parsed.order_by == (q.Order("a"), q.Order("b"), q.Order("c", descending=True))


def test_strings_take_doubled_and_escaped_quotes_and_unicode() -> None:
    assert q.parse("WorkflowId = 'O''Brien'").where == q.Comparison("WorkflowId", q.Op.EQ, "O'Brien")
    assert q.parse(r"WorkflowId = 'a\'b'").where == q.Comparison("WorkflowId", q.Op.EQ, "a'b")
    assert q.parse('WorkflowId = "dq"').where == q.Comparison("WorkflowId", q.Op.EQ, "dq")
    assert q.parse("WorkflowId = 'заказ-😀'").where == q.Comparison("WorkflowId", q.Op.EQ, "заказ-😀")
    assert q.parse("`Odd Name` = 1").where == q.Comparison("Odd Name", q.Op.EQ, 1)


def test_blank_query_has_no_filter() -> None:
    assert q.parse("") == q.Query()
    assert q.parse("   ORDER BY CloseTime") == q.Query(None, (q.Order("CloseTime"),))


@pytest.mark.parametrize(("text", "message"), [
    ("WorkflowType = ", "expected a value"),
    ("WorkflowType 'x'", "expected an operator"),
    ("WorkflowType = 'x' AND", "expected an attribute name"),
    ("(WorkflowType = 'x'", "expected )"),
    ("WorkflowType = 'x')", "expected AND, OR, ORDER BY or the end"),
    ("WorkflowType = 'unterminated", "unterminated string"),
    ("WorkflowType = 'x'; DROP TABLE visibility", "unexpected character ';'"),
    ("WorkflowType = 'x' -- comment", "unexpected character '-'"),
    ("WorkflowId = 'a' ORDER StartTime", "expected BY"),
    ("WorkflowId NOT = 'a'", "expected IN or BETWEEN after NOT"),
    ("WorkflowId = 'a' ORDER BY", "expected name"),
    ("Заказ = 'x'", "unexpected character 'З'"),  # noqa: RUF001
    ("HistoryLength BETWEEN 1 OR 2", "expected AND"),
])
def test_syntax_errors_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(q.QuerySyntaxError, match=re.escape(message)) as caught:
        q.parse(text)
    assert "at character" in str(caught.value)


def test_very_long_and_very_deep_queries_are_refused_cleanly() -> None:
    with pytest.raises(q.QuerySyntaxError, match="at most 10000"):
        q.parse("WorkflowId = '" + "x" * 20_000 + "'")
    with pytest.raises(q.QuerySyntaxError, match="nests deeper"):
        q.parse("(" * 500 + "WorkflowId = 'x'" + ")" * 500)
    long_or = " OR ".join(f"WorkflowId = 'w{i}'" for i in range(400))
    statement = listing(long_or)
    assert len(statement.params) == 400 + 2  # the namespace, 400 values, the limit


def test_compiled_sql_binds_every_value_and_names_only_whitelisted_columns() -> None:
    hostile = "x'); DROP TABLE visibility; --"
    statement = listing(f"WorkflowId = '{hostile.replace(chr(39), chr(39) * 2)}' AND CustomerId = 'robert''s'"
                        " ORDER BY StartTime DESC")
    assert hostile in statement.params and '"robert\'s"' in statement.params
    assert "DROP" not in statement.sql and "robert" not in statement.sql
    assert statement.params[0] == "default" and "namespace = $1" in statement.sql
    # Nothing in the SQL that came from the query but the placeholders.
    assert re.findall(r"'[^']*'", statement.sql) == ["'{}'"] * statement.sql.count("'{}'")


def test_values_are_typed_by_the_attribute() -> None:
    statement = listing("StartTime > '2026-12-01T00:00:00Z' AND HistoryLength >= 3 AND Amount < 2"
                        " AND Vip = true AND DueAt <= '2026-12-02T01:00:00+01:00'")
    assert 1796083200000 in statement.params  # StartTime as ms since the epoch
    assert 3 in statement.params
    assert "2.0" in statement.params and "true" in statement.params  # jsonb text of custom values
    assert '"2026-12-02T00:00:00.000000Z"' in statement.params  # custom times normalised to UTC


@pytest.mark.parametrize(("text", "message"), [
    ("WorkflowTyp = 'x'", "unknown search attribute 'WorkflowTyp'; did you mean WorkflowType?"),
    ("Nope = 'x'", "unknown search attribute 'Nope'"),
    ("HistoryLength = 'x'", "HistoryLength is an int attribute: it takes a whole number, not 'x'"),
    ("HistoryLength = 1.5", "takes a whole number"),
    ("WorkflowType = 3", "WorkflowType is a keyword attribute: it takes a 'quoted string', not 3"),
    ("StartTime > 'yesterday'", "StartTime: 'yesterday' is not a time"),
    ("StartTime > 5", "takes a 'quoted ISO 8601 time'"),
    ("Vip = 'yes'", "takes true or false"),
    ("Vip > true", "Vip is a bool attribute: it takes = and != only"),
    ("ExecutionStatus = 'Runing'", "ExecutionStatus is one of"),
    ("Note > 'x'", "Note is a text attribute: it takes = and != only"),
    ("Tags > 'x'", "keyword_list attribute: it takes =, != and IN only"),
    ("HistoryLength STARTS_WITH 'x'", "STARTS_WITH takes keyword attributes"),
    ("Vip BETWEEN true AND false", "BETWEEN has no meaning"),
    ("WorkflowId = 'x' ORDER BY CustomerId", "ORDER BY takes a built-in attribute"),
    ("WorkflowId = 'x' GROUP BY ExecutionStatus", "GROUP BY is for counting"),
])
def test_semantic_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=re.escape(message)):
        listing(text)


def test_count_and_group_by() -> None:
    statement, grouped = sql.compile_count("default", "WorkflowType = 'Order' GROUP BY ExecutionStatus", CUSTOM)
    assert grouped and "GROUP BY status" in statement.sql and statement.params == ["default", "Order"]
    with pytest.raises(QueryError, match="GROUP BY takes ExecutionStatus"):
        sql.compile_count("default", "GROUP BY WorkflowType", CUSTOM)
    with pytest.raises(QueryError, match="ORDER BY has no meaning in a count"):
        sql.compile_count("default", "ORDER BY StartTime", CUSTOM)


def test_page_tokens_are_bound_to_their_query_and_checked() -> None:
    token = sql.encode_token("default", "WorkflowType = 'a'", [123, "run-1"])
    statement = listing("WorkflowType = 'a'", token)
    assert 123 in statement.params and "run-1" in statement.params
    with pytest.raises(QueryError, match="belongs to another query"):
        listing("WorkflowType = 'b'", token)
    with pytest.raises(QueryError, match="not a token this API gave"):
        listing("WorkflowType = 'a'", "garbage!!")
    forged = sql.encode_token("default", "WorkflowType = 'a'", ["not-an-int", "run-1"])
    with pytest.raises(QueryError, match="not a token this API gave"):
        listing("WorkflowType = 'a'", forged)


@pytest.mark.parametrize("after", [[2**63, "run-1"], [2**64 - 1, "run-1"], [123, "run\x00"], [True, "run-1"]])
def test_a_forged_token_holding_what_no_row_holds_is_refused(after: list[object]) -> None:
    # A bigint past 64 bits or a NUL in text failed in PostgreSQL: a 500 rather than a 400.
    forged = sql.encode_token("default", "", after)
    with pytest.raises(QueryError, match="not a token this API gave"):
        listing("", forged)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_fails_with_a_query_error(text: str) -> None:
    try:
        statement = listing(text)
    except QueryError:
        return
    # Whatever compiled carries no character of the query outside the bind parameters.
    for char in set(text) - set(" \t\n\r"):
        if not char.isascii() or char in "';\\\"":
            assert char not in statement.sql


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_string_value_round_trips_through_quoting(value: str) -> None:
    quoted = "'" + value.replace("'", "''").replace("\\", "\\\\") + "'"
    assert q.parse(f"WorkflowId = {quoted}").where == q.Comparison("WorkflowId", q.Op.EQ, value)


def test_search_attributes_given_at_start_are_checked_and_normalised() -> None:
    stored = sql.stored_attributes(CUSTOM, {"CustomerId": "c-42", "Amount": 3, "Priority": 7, "Vip": False,
                                            "Tags": ["a", "b"], "DueAt": "2026-12-02T01:00:00+01:00"})
    assert stored == {"CustomerId": "c-42", "Amount": 3.0, "Priority": 7, "Vip": False, "Tags": ["a", "b"],
                      "DueAt": "2026-12-02T00:00:00.000000Z"}
    for values, message in (({"Nope": 1}, "'Nope' is not registered"), ({"Priority": "7"}, "takes a whole number"),
                            ({"Tags": "a"}, "takes a list of strings"), ({"Vip": 1}, "takes true or false"),
                            ({"DueAt": "soon"}, "is not a time"), ({"WorkflowType": "x"}, "built-in"),
                            ([1], "must be an object"), ({"CustomerId": "x" * 20_000}, "at most 10000 bytes")):
        with pytest.raises(QueryError, match=re.escape(message)):
            sql.stored_attributes(CUSTOM, values)


def test_a_nul_character_is_refused_in_search_attribute_values() -> None:
    for values in ({"CustomerId": "a\x00b"}, {"Tags": ["ok", "\x00"]}):
        with pytest.raises(QueryError, match="NUL character cannot be stored"):
            sql.stored_attributes(CUSTOM, values)


def test_values_no_column_can_hold_are_refused_not_failed_on() -> None:
    """Each of these was an internal error (500) of a start or a list: asyncpg or orjson
    refused the value after every check had passed."""
    for text, message in (("Priority = 100000000000000000000000", "takes a whole number of 64 bits"),
                          ("HistoryLength > 9223372036854775808", "takes a whole number of 64 bits"),
                          ("Priority IN (1, -9223372036854775809)", "takes a whole number of 64 bits"),
                          ("Amount = 1e400", "takes a finite number"),
                          ("Amount < 1" + "0" * 400, "takes a finite number"),
                          ("DueAt > '0001-01-01T00:00:00+14:00'", "out of the range of times"),
                          ("StartTime < '9999-12-31T23:00:00-10:00'", "out of the range of times")):
        with pytest.raises(QueryError, match=re.escape(message)):
            listing(text)
    # The edges still taken.
    edges = listing("Priority = 9223372036854775807 AND Priority > -9223372036854775808 AND Amount < 1.7e308"
                    " AND DueAt > '0001-01-01T00:00:00Z' AND StartTime < '9999-12-31T23:59:59Z'")
    assert "9223372036854775807" in edges.params
    for values, message in (({"CustomerId": "\ud800"}, "lone surrogate"), ({"Tags": ["a", "\udfff"]}, "lone surrogate"),
                            ({"Amount": 10**400}, "takes a finite number"),
                            ({"DueAt": "0001-01-01T00:00:00+14:00"}, "out of the range of times")):
        with pytest.raises(QueryError, match=re.escape(message)):
            sql.stored_attributes(CUSTOM, values)
