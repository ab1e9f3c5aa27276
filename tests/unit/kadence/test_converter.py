"""The data converter: typed values round-trip through JSON by type hints, a value that
does not fit names its place, and the payload codec wraps payloads in the marker shape."""

from __future__ import annotations

import base64
import enum
import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal, NewType, Optional, TypedDict
from uuid import UUID

import pytest

from kadence.converter import (
    DataConverter,
    PayloadCodec,
    decode_args_payload,
    decode_payload,
    encode_payload,
    signature_of,
)
from kadence.exceptions import PayloadError

pytestmark = pytest.mark.timeout(30)

conv = DataConverter()


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Item:
    sku: str
    qty: int
    price: Decimal


@dataclass
class Order:
    id: UUID
    items: list[Item]
    placed: datetime
    due: date
    color: Color
    tags: set[str] = field(default_factory=set)
    note: str | None = None
    blob: bytes = b""
    dims: tuple[int, int] = (0, 0)
    levels: dict[str, Level] = field(default_factory=dict)


def _order() -> Order:
    return Order(
        id=UUID("12345678-1234-5678-1234-567812345678"),
        items=[Item("a", 2, Decimal("10.10")), Item("b", 1, Decimal("0.333333333333333333333"))],
        placed=datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=timezone(timedelta(hours=2))),
        due=date(2026, 2, 1),
        color=Color.BLUE,
        tags={"x", "y"},
        note=None,
        blob=b"\x00\xffbin",
        dims=(3, 4),
        levels={"a": Level.HIGH},
    )


def test_a_dataclass_round_trips_with_every_supported_field_type() -> None:
    order = _order()
    text = conv.encode_value(order, what="x")
    data = json.loads(text)
    assert data["placed"] == "2026-01-02T03:04:05.006000+02:00"
    assert data["items"][1]["price"] == "0.333333333333333333333"  # exact, as a string
    assert data["blob"] == base64.b64encode(b"\x00\xffbin").decode()
    assert data["tags"] == ["x", "y"]  # sets are sorted: the same payload in every process
    back = conv.decode_value(text, Order)
    assert back == order
    assert back.placed.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(("value", "hint"), [
    (Color.RED, Color), (Level.LOW, Level), (datetime(2026, 1, 1, tzinfo=UTC), datetime),
    (date(2026, 1, 1), date), (time(12, 30), time), (timedelta(seconds=90.5), timedelta),
    (UUID(int=7), UUID), (Decimal("1.5"), Decimal), (b"abc", bytes), ((1, "a"), tuple[int, str]),
    ((1, 2, 3), tuple[int, ...]), (frozenset({1, 2}), frozenset[int]), ({1: "a"}, dict[int, str]),
    (None, Optional[int]),  # noqa: UP045 - the spelling users still write
    (5, int | None), ("s", str | datetime), ("b", Literal["a", "b"]),
    ({Level.LOW: True}, dict[Level, bool]), ({Color.RED: 1}, dict[Color, int]),
    ([Color.RED], list[Color]), ({"k": [UUID(int=1)]}, dict[str, list[UUID]]), (2.0, float), (3, NewType("N", int)),
])
def test_values_round_trip_by_their_hint(value: Any, hint: Any) -> None:
    assert conv.decode_value(conv.encode_value(value, what="v"), hint) == value


class Point(TypedDict):
    x: int
    at: datetime


def test_typed_dicts_convert_their_values() -> None:
    value = Point(x=1, at=datetime(2026, 1, 1, tzinfo=UTC))
    assert conv.decode_value(conv.encode_value(value, what="p"), Point) == value


def test_union_tries_members_in_order() -> None:
    assert conv.decode_value('"2026-01-01T00:00:00+00:00"', datetime | int) == datetime(2026, 1, 1, tzinfo=UTC)
    assert conv.decode_value("5", datetime | int) == 5


def test_without_a_hint_payloads_are_plain_json() -> None:
    assert conv.decode_value('{"a": [1, 2]}', None) == {"a": [1, 2]}
    assert conv.decode_value('{"a": [1, 2]}', Any) == {"a": [1, 2]}


def test_a_value_that_does_not_fit_names_the_argument_and_the_field() -> None:
    with pytest.raises(PayloadError, match=r"argument 1 of Order\.run: cannot convert \{\"items\": \[\]\} to "
                                           r"Order: missing field 'id'"):
        conv.decode_args('[{"items": []}]', [Order], what="Order.run")
    with pytest.raises(PayloadError, match=r"argument 2 of f: cannot convert .* to Item at \['price'\]: "
                                           r"\"a lot\" is not a decimal number"):
        conv.decode_args('[1, {"sku": "a", "qty": 2, "price": "a lot"}]', [int, Item], what="f")
    with pytest.raises(PayloadError, match="is not a value of Color"):
        conv.decode_value('"green"', Color)
    with pytest.raises(PayloadError, match=r"cannot convert \[1\] to uuid.UUID \| int: \[1\] fits none of "
                                           r"the types \(int: not \[1\]; UUID: "):
        conv.decode_value("[1]", UUID | int)


def test_hints_json_satisfies_pass_values_as_they_came() -> None:
    # As before typed payloads: annotations JSON needs no conversion for are not enforced,
    # so code (and histories) from then keep working.
    assert conv.decode_value('{"a": 1}', str) == {"a": 1}
    assert conv.decode_value("true", int) is True
    assert conv.decode_value('[{"x": 1}]', list[str]) == [{"x": 1}]
    assert conv.decode_value("1", float) == 1
    # In a union with a type to convert to, a plain member takes only its own JSON type.
    assert conv.decode_value('"2026-01-01T00:00:00+00:00"', int | datetime) == datetime(2026, 1, 1, tzinfo=UTC)


def test_unknown_fields_are_ignored_and_defaults_fill_missing_ones() -> None:
    item = conv.decode_value('{"sku": "a", "qty": 1, "price": "2", "old_field": 1}', Item)
    assert item == Item("a", 1, Decimal("2"))


def test_encoding_names_the_place_of_a_value_without_json_form() -> None:
    with pytest.raises(PayloadError, match=r"argument 1 of w at \['note'\]: object .* is not JSON"):
        conv.encode_args([{"note": object()}], what="w")
    with pytest.raises(PayloadError, match=r"result of a at \['qty'\]: nan is not JSON"):
        conv.encode_value(Item("a", float("nan"), Decimal(1)), what="result of a")  # type: ignore[arg-type]


def test_pydantic_models_round_trip() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Customer(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        name: str
        since: datetime
        vip: bool = False

    value = Customer(name="Ann", since=datetime(2025, 5, 1, tzinfo=UTC))
    back = conv.decode_value(conv.encode_value(value, what="c"), Customer)
    assert back == value
    with pytest.raises(PayloadError, match=r"argument 1 of f: cannot convert .* to .*Customer: .*name"):
        conv.decode_args('[{"since": "2025-05-01T00:00:00Z"}]', [Customer], what="f")


class _Service:
    async def run(self, order: Order, n: int, *rest: str) -> list[Item]:
        return []


def test_signature_reads_params_and_return_of_methods_and_functions() -> None:
    sig = signature_of(_Service.run, method=True)
    assert sig.param_hints(4) == [Order, int, str, str]
    assert sig.result == list[Item]

    def plain(x):  # type: ignore[no-untyped-def]
        return x

    assert signature_of(plain).param_hints(2) == [None, None]


class XorZlib:
    """A test codec: compress, then XOR with a key (not real encryption)."""

    name = "test-xor-zlib"

    async def encode(self, data: bytes) -> bytes:
        return bytes(b ^ 0x5A for b in zlib.compress(data))

    async def decode(self, data: bytes) -> bytes:
        return zlib.decompress(bytes(b ^ 0x5A for b in data))


async def test_codec_wraps_values_and_arguments_in_the_marker_shape() -> None:
    codec = XorZlib()
    assert isinstance(codec, PayloadCodec)
    args = conv.encode_args(["secret", 1], what="w")
    encoded = await encode_payload(codec, args, args=True)
    assert encoded is not None
    shape = json.loads(encoded)
    assert isinstance(shape, list) and len(shape) == 1 and shape[0]["kadence-codec"] == "test-xor-zlib"
    assert "secret" not in encoded
    assert await decode_payload(codec, encoded, args=True) == args
    assert await decode_args_payload(codec, shape) == ["secret", 1]  # an already parsed array
    value = await encode_payload(codec, '"secret"')
    assert value is not None and json.loads(value)["kadence-codec"] == "test-xor-zlib"
    assert await decode_payload(codec, value) == '"secret"'
    # A payload sent without a codec passes through.
    assert await decode_payload(codec, '["plain"]', args=True) == '["plain"]'


async def test_an_encoded_payload_without_the_codec_is_a_clear_error() -> None:
    encoded = await encode_payload(XorZlib(), '"x"')
    with pytest.raises(PayloadError, match=r"encoded by codec 'test-xor-zlib'.*no payload codec is configured"):
        await decode_payload(None, encoded)
