"""The list filter language (Temporal's): a tokenizer and a recursive-descent parser into an AST.

    WorkflowType = 'Order' AND (ExecutionStatus = 'Running' OR StartTime > '2026-12-01T00:00:00Z')
    ORDER BY StartTime DESC

Grammar (keywords are case-insensitive, attribute names are not)::

    query      := [expr] [GROUP BY name] [ORDER BY order (',' order)*]
    expr       := and_expr (OR and_expr)*
    and_expr   := primary (AND primary)*
    primary    := '(' expr ')' | predicate
    predicate  := name op value | name [NOT] IN '(' value (',' value)* ')'
                | name [NOT] BETWEEN value AND value | name STARTS_WITH value | name IS [NOT] NULL
    op         := '=' | '!=' | '<>' | '<' | '<=' | '>' | '>='
    order      := name [ASC | DESC]
    value      := 'string' | "string" | number | TRUE | FALSE
    name       := letter (letter | digit | '_')* | `backquoted name`

A quote inside a string is doubled (``'O''Brien'``) or escaped with a backslash. This module
knows nothing about attributes or SQL: ``sql.py`` types and compiles the AST.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_QUERY_LENGTH = 10_000
MAX_DEPTH = 32
MAX_IN_VALUES = 1000


class QuerySyntaxError(ValueError):
    """The query is not in the language; the message says where and why."""


class Op(enum.StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


Value = str | int | float | bool


@dataclass(frozen=True)
class Comparison:
    name: str
    op: Op
    value: Value


@dataclass(frozen=True)
class In:
    name: str
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between:
    name: str
    low: Value
    high: Value
    negated: bool = False


@dataclass(frozen=True)
class StartsWith:
    name: str
    prefix: Value


@dataclass(frozen=True)
class IsNull:
    name: str
    negated: bool = False


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


Predicate = Comparison | In | Between | StartsWith | IsNull
Expr = Predicate | And | Or


@dataclass(frozen=True)
class Order:
    name: str
    descending: bool = False


@dataclass(frozen=True)
class Query:
    where: Expr | None = None
    order_by: tuple[Order, ...] = ()
    group_by: str | None = None


# ---- tokens -------------------------------------------------------------------------------------


class Kind(enum.Enum):
    NAME = "name"
    STRING = "string"
    NUMBER = "number"
    OP = "operator"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    KEYWORD = "keyword"
    END = "end of query"


KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "BETWEEN", "STARTS_WITH", "IS", "NULL", "ORDER", "GROUP", "BY",
                      "ASC", "DESC", "TRUE", "FALSE"})
_OPS = {"=": Op.EQ, "!=": Op.NE, "<>": Op.NE, "<": Op.LT, "<=": Op.LE, ">": Op.GT, ">=": Op.GE}


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str  # keywords upper-cased, strings unquoted
    position: int  # 0-based character offset in the query
    value: Value | None = None


def _error(query: str, position: int, message: str) -> QuerySyntaxError:
    near = query[position:position + 20]
    where = f"at character {position + 1}" + (f" (near {near!r})" if near else " (the end)")
    return QuerySyntaxError(f"{message} {where}")


def tokenize(query: str) -> list[Token]:
    if len(query) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(f"the query is {len(query)} characters long; at most {MAX_QUERY_LENGTH} are taken")
    tokens: list[Token] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
        elif c in "'\"":
            start, i, chars = i, i + 1, []
            while True:
                if i >= n:
                    raise _error(query, start, "unterminated string")
                if query[i] == "\\" and i + 1 < n:
                    chars.append(query[i + 1])
                    i += 2
                elif query[i] == c:
                    if i + 1 < n and query[i + 1] == c:  # a doubled quote is one quote
                        chars.append(c)
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    chars.append(query[i])
                    i += 1
            text = "".join(chars)
            tokens.append(Token(Kind.STRING, text, start, text))
        elif c == "`":
            end = query.find("`", i + 1)
            if end < 0:
                raise _error(query, i, "unterminated `name`")
            if end == i + 1:
                raise _error(query, i, "empty `name`")
            tokens.append(Token(Kind.NAME, query[i + 1:end], i))
            i = end + 1
        elif c.isdigit() or (c in "+-." and i + 1 < n and (query[i + 1].isdigit() or query[i + 1] == ".")):
            start = i
            i += 1
            while i < n and (query[i].isdigit() or query[i] in ".eE" or (query[i] in "+-" and query[i - 1] in "eE")):
                i += 1
            text = query[start:i]
            number: int | float
            try:
                number = int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    raise _error(query, start, f"{text!r} is not a number") from None
            tokens.append(Token(Kind.NUMBER, text, start, number))
        elif c.isascii() and (c.isalpha() or c == "_"):
            start = i
            while i < n and query[i].isascii() and (query[i].isalnum() or query[i] == "_"):
                i += 1
            word = query[start:i]
            upper = word.upper()
            if upper in KEYWORDS:
                value: Value | None = {"TRUE": True, "FALSE": False}.get(upper)
                tokens.append(Token(Kind.KEYWORD, upper, start, value))
            else:
                tokens.append(Token(Kind.NAME, word, start))
        elif query.startswith(("<=", ">=", "!=", "<>"), i):
            tokens.append(Token(Kind.OP, query[i:i + 2], i))
            i += 2
        elif c in "=<>":
            tokens.append(Token(Kind.OP, c, i))
            i += 1
        elif c == "(":
            tokens.append(Token(Kind.LPAREN, c, i))
            i += 1
        elif c == ")":
            tokens.append(Token(Kind.RPAREN, c, i))
            i += 1
        elif c == ",":
            tokens.append(Token(Kind.COMMA, c, i))
            i += 1
        else:
            raise _error(query, i, f"unexpected character {c!r}")
    tokens.append(Token(Kind.END, "", n))
    return tokens


# ---- parser -------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.i = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def _fail(self, message: str) -> QuerySyntaxError:
        return _error(self.query, self.token.position, message)

    def _describe(self, token: Token) -> str:
        if token.kind is Kind.END:
            return "the end of the query"
        return f"{token.kind.value} {token.text!r}"

    def _at(self, kind: Kind) -> bool:
        return self.tokens[self.i].kind is kind

    def _keyword(self, *words: str) -> bool:
        t = self.token
        if t.kind is Kind.KEYWORD and t.text in words:
            self.i += 1
            return True
        return False

    def _expect_keyword(self, word: str) -> None:
        if not self._keyword(word):
            raise self._fail(f"expected {word}, found {self._describe(self.token)}")

    def _expect(self, kind: Kind) -> Token:
        t = self.token
        if t.kind is not kind:
            raise self._fail(f"expected {kind.value}, found {self._describe(t)}")
        self.i += 1
        return t

    def parse(self) -> Query:
        where = None
        if not (self.token.kind is Kind.END or (self.token.kind is Kind.KEYWORD and self.token.text in ("ORDER",
                                                                                                        "GROUP"))):
            where = self._or()
        group_by = None
        if self._keyword("GROUP"):
            self._expect_keyword("BY")
            group_by = self._expect(Kind.NAME).text
        order: list[Order] = []
        if self._keyword("ORDER"):
            self._expect_keyword("BY")
            while True:
                name = self._expect(Kind.NAME).text
                descending = self._keyword("DESC")
                if not descending:
                    self._keyword("ASC")
                order.append(Order(name, descending))
                if not self._at(Kind.COMMA):
                    break
                self.i += 1
        if self.token.kind is not Kind.END:
            expected = "AND, OR, ORDER BY or the end of the query" if not order else "',' or the end of the query"
            raise self._fail(f"expected {expected}, found {self._describe(self.token)}")
        return Query(where, tuple(order), group_by)

    def _or(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self._fail(f"the query nests deeper than {MAX_DEPTH} levels")
        items = [self._and()]
        while self._keyword("OR"):
            items.append(self._and())
        self.depth -= 1
        return items[0] if len(items) == 1 else Or(tuple(items))

    def _and(self) -> Expr:
        items = [self._primary()]
        while self._keyword("AND"):
            items.append(self._primary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def _primary(self) -> Expr:
        if self.token.kind is Kind.LPAREN:
            self.i += 1
            inner = self._or()
            self._expect(Kind.RPAREN)
            return inner
        if self.token.kind is not Kind.NAME:
            raise self._fail(f"expected an attribute name or '(', found {self._describe(self.token)}")
        name = self.token.text
        self.i += 1
        t = self.token
        if t.kind is Kind.OP:
            self.i += 1
            return Comparison(name, _OPS[t.text], self._value())
        negated = self._keyword("NOT")
        if self._keyword("IN"):
            self._expect(Kind.LPAREN)
            values = [self._value()]
            while self._at(Kind.COMMA):
                self.i += 1
                values.append(self._value())
                if len(values) > MAX_IN_VALUES:
                    raise self._fail(f"IN takes at most {MAX_IN_VALUES} values")
            self._expect(Kind.RPAREN)
            return In(name, tuple(values), negated)
        if self._keyword("BETWEEN"):
            low = self._value()
            self._expect_keyword("AND")
            return Between(name, low, self._value(), negated)
        if negated:
            raise self._fail(f"expected IN or BETWEEN after NOT, found {self._describe(self.token)}")
        if self._keyword("STARTS_WITH"):
            return StartsWith(name, self._value())
        if self._keyword("IS"):
            negated = self._keyword("NOT")
            self._expect_keyword("NULL")
            return IsNull(name, negated)
        raise self._fail(f"expected an operator (=, !=, <, <=, >, >=, IN, BETWEEN, STARTS_WITH, IS) after {name!r},"
                         f" found {self._describe(t)}")

    def _value(self) -> Value:
        t = self.token
        if t.kind in (Kind.STRING, Kind.NUMBER) or (t.kind is Kind.KEYWORD and t.text in ("TRUE", "FALSE")):
            self.i += 1
            assert t.value is not None
            return t.value
        raise self._fail(f"expected a value (a 'quoted string', a number, true or false), found {self._describe(t)}")


def parse(query: str) -> Query:
    """The AST of ``query`` (empty or blank: no filter), or QuerySyntaxError."""
    return _Parser(query).parse()
