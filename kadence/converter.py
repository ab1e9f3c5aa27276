"""Typed payloads: turning Python values into JSON and back by type hints, and payload codecs.

A :class:`DataConverter` maps values to JSON (``to_json``) and JSON back to values of a
given type hint (``from_json``). The default one knows dataclasses, pydantic v2 models (if
pydantic is installed: it is not a dependency), enums, ``datetime`` (ISO 8601, the offset
kept), ``date``, ``time``, ``timedelta`` (seconds), ``UUID``, ``Decimal`` (a string, exact),
``bytes`` (base64), tuples, sets, ``Optional``/``Union``/``Literal``, ``list[T]``,
``dict[K, V]`` and any nesting of these. Without a type hint (or with ``Any``) a payload
decodes as plain JSON, as before typed payloads existed.

A :class:`PayloadCodec` (compression, encryption) transforms the JSON text of each payload
in the client and the worker only: the server, the audit and the CLI see the encoded form,
which is still JSON of the same outer shape (see :func:`encode_payload`).
"""

from __future__ import annotations

import base64
import collections.abc as cabc
import dataclasses
import datetime as _dt
import enum
import inspect
import json
import math
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from kadence.exceptions import PayloadError

__all__ = [
    "CODEC_MARKER",
    "DataConverter",
    "PayloadCodec",
    "Signature",
    "decode_payload",
    "default_converter",
    "encode_payload",
    "is_plain_json",
    "signature_of",
]

#: The key of the object that stands for a payload encoded by a codec.
CODEC_MARKER = "kadence-codec"


class _ConversionError(Exception):
    """A value that does not fit its type; ``path`` is where inside the payload."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def inside(self, step: str) -> _ConversionError:
        return _ConversionError(self.message, step + self.path)


class DataConverter:
    """Python values to JSON and back, by type hints.

    Subclass and override :meth:`to_json` / :meth:`from_json` (calling ``super()`` for the
    types you do not handle) to support more types; give the instance to
    ``Client.connect(data_converter=...)`` (workers use their client's converter unless
    ``Worker(data_converter=...)`` is given).
    """

    def __init__(self, payload_codec: PayloadCodec | None = None) -> None:
        #: Applied to the JSON text of every payload in the client and the worker.
        self.payload_codec = payload_codec

    # -- Python to JSON --------------------------------------------------------------

    def to_json(self, value: Any) -> Any:
        """``value`` as plain JSON data (dicts with string keys, lists, strings, finite
        numbers, booleans, None); raises :class:`TypeError` or :class:`ValueError` for a
        value it has no JSON form for."""
        if value is None or isinstance(value, str | bool | int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"{value!r} is not JSON (NaN and infinities cannot be sent)")
            return value
        if isinstance(value, enum.Enum):
            return self.to_json(value.value)
        if isinstance(value, _dt.datetime | _dt.date | _dt.time):
            return value.isoformat()
        if isinstance(value, _dt.timedelta):
            return value.total_seconds()
        if isinstance(value, uuid.UUID | Decimal):
            return str(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(bytes(value)).decode("ascii")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: self._item(getattr(value, f.name), f"[{f.name!r}]")
                    for f in dataclasses.fields(value)}
        dump = getattr(value, "model_dump", None)
        if callable(dump) and not isinstance(value, type):
            return dump(mode="json")  # a pydantic v2 model
        if isinstance(value, list | tuple):
            return [self._item(item, f"[{i}]") for i, item in enumerate(value)]
        if isinstance(value, set | frozenset):
            items = [self._item(item, "[?]") for item in value]
            try:
                # Sorted so the same set gives the same payload in every process (string
                # hashing differs between processes).
                return sorted(items)
            except TypeError:
                return items
        if isinstance(value, Mapping):
            return {self._key(k): self._item(v, f"[{k!r}]") for k, v in value.items()}
        raise TypeError(f"{type(value).__name__} {_short_repr(value)} is not JSON")

    def _item(self, value: Any, step: str) -> Any:
        try:
            return self.to_json(value)
        except _ConversionError as err:
            raise err.inside(step) from None
        except (TypeError, ValueError) as err:
            raise _ConversionError(str(err), step) from None

    def _key(self, key: Any) -> str:
        if isinstance(key, str):
            return key
        if key is None or isinstance(key, bool | int | float):
            return json.dumps(key)  # what json.dumps does with such keys
        converted = self.to_json(key)
        if isinstance(converted, str):
            return converted
        raise _ConversionError(f"{type(key).__name__} {_short_repr(key)} cannot be a JSON key", " key")

    # -- JSON to Python --------------------------------------------------------------

    def from_json(self, data: Any, hint: Any) -> Any:
        """``data`` (plain JSON) as a value of type ``hint``; raises TypeError or ValueError
        (with the reason) when it does not fit.

        A hint JSON itself satisfies (``str``, ``int``, ``float``, ``bool``, ``None``, ``Any``,
        and lists, string-keyed dicts, unions and literals of those) converts nothing: the
        value is passed as it came, as before typed payloads, so code (and histories)
        written when annotations were not enforced keep working. Conversion, and its
        errors, are for the types JSON has no form of (dataclasses, enums, datetimes...)."""
        if is_plain_json(hint):
            return data
        if hint is type(None):
            if data is not None:
                raise TypeError(f"expected null, got {_short(data)}")
            return None
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Annotated:
            return self.from_json(data, args[0])
        if isinstance(hint, typing.NewType):
            return self.from_json(data, hint.__supertype__)
        if origin is typing.Union or origin is types.UnionType:
            return self._union(data, args)
        if origin is typing.Literal:
            if data not in args:
                raise ValueError(f"{_short(data)} is not one of {', '.join(map(repr, args))}")
            return data
        if origin is not None:
            return self._generic(data, origin, args)
        if not isinstance(hint, type):
            return data  # a hint this converter does not interpret (a string, a Protocol...)
        return self._class(data, hint)

    def _union(self, data: Any, members: Sequence[Any]) -> Any:
        if data is None and type(None) in members:
            return None
        # Members JSON fits as it is first (so str | datetime keeps a plain string); in a
        # union with types to convert to, a plain member takes only data of its JSON type.
        plain = [m for m in members if is_plain_json(m)]
        for member in plain:
            if _fits_json(data, member):
                return data
        errors = [f"{_hint_name(m)}: not {_short(data)}" for m in plain]
        for member in members:
            if member in plain:
                continue
            try:
                return self.from_json(data, member)
            except (_ConversionError, TypeError, ValueError) as err:
                errors.append(f"{_hint_name(member)}: {err}")
        raise TypeError(f"{_short(data)} fits none of the types ({'; '.join(errors)})")

    def _generic(self, data: Any, origin: Any, args: tuple[Any, ...]) -> Any:
        if origin in _SEQUENCES or origin in _SETS:
            items = _expect(data, list)
            hint = args[0] if args else Any
            converted = [self._sub(item, hint, f"[{i}]") for i, item in enumerate(items)]
            if origin in _SETS:
                return frozenset(converted) if origin is frozenset else set(converted)
            return converted
        if origin is tuple:
            items = _expect(data, list)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(self._sub(item, args[0], f"[{i}]") for i, item in enumerate(items))
            if args == ((),) or not args:
                return tuple(items) if not args else ()
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} items, got {len(items)}")
            return tuple(self._sub(item, h, f"[{i}]") for i, (item, h) in enumerate(zip(items, args, strict=True)))
        if origin in _MAPPINGS:
            mapping = _expect(data, dict)
            key_hint, value_hint = args if len(args) == 2 else (Any, Any)
            return {self._sub(k, key_hint, " key", key=True): self._sub(v, value_hint, f"[{k!r}]")
                    for k, v in mapping.items()}
        if isinstance(origin, type):
            return self._class(data, origin)
        return data

    def _sub(self, data: Any, hint: Any, step: str, *, key: bool = False) -> Any:
        try:
            if key and isinstance(data, str) and isinstance(hint, type) and issubclass(hint, int | float):
                data = json.loads(data)  # JSON keys are strings; dict[int, T] (or an IntEnum) wants them back
            return self.from_json(data, hint)
        except _ConversionError as err:
            raise err.inside(step) from None
        except (TypeError, ValueError) as err:
            raise _ConversionError(str(err), step) from None

    def _class(self, data: Any, cls: type) -> Any:
        if cls is bool:
            return _expect(data, bool)
        if cls is int:
            if isinstance(data, bool) or not isinstance(data, int):
                raise TypeError(f"expected an integer, got {_short(data)}")
            return data
        if cls is float:
            if isinstance(data, bool) or not isinstance(data, int | float):
                raise TypeError(f"expected a number, got {_short(data)}")
            return float(data)
        if cls is str:
            return _expect(data, str)
        if issubclass(cls, enum.Enum):
            try:
                return cls(data)
            except ValueError:
                raise ValueError(f"{_short(data)} is not a value of {cls.__name__}") from None
        if issubclass(cls, _dt.datetime):
            return cls.fromisoformat(_expect(data, str))
        if issubclass(cls, _dt.date):
            return cls.fromisoformat(_expect(data, str))
        if issubclass(cls, _dt.time):
            return cls.fromisoformat(_expect(data, str))
        if issubclass(cls, _dt.timedelta):
            if isinstance(data, bool) or not isinstance(data, int | float):
                raise TypeError(f"expected a number of seconds, got {_short(data)}")
            return cls(seconds=data)
        if issubclass(cls, uuid.UUID):
            return cls(_expect(data, str))
        if issubclass(cls, Decimal):
            if isinstance(data, bool) or not isinstance(data, str | int | float):
                raise TypeError(f"expected a decimal string, got {_short(data)}")
            try:
                return cls(str(data))
            except InvalidOperation:
                raise ValueError(f"{_short(data)} is not a decimal number") from None
        if issubclass(cls, bytes | bytearray):
            try:
                return cls(base64.b64decode(_expect(data, str), validate=True))
            except ValueError:
                raise ValueError(f"{_short(data)} is not base64") from None
        if dataclasses.is_dataclass(cls):
            return self._dataclass(data, cls)
        if typing.is_typeddict(cls):
            mapping = _expect(data, dict)
            hints = _type_hints(typing.cast(type, cls))  # narrowed to type[object] by is_typeddict
            return {k: self._sub(v, hints.get(k, Any), f"[{k!r}]") for k, v in mapping.items()}
        validate = getattr(cls, "model_validate", None)
        if callable(validate):  # a pydantic v2 model
            try:
                return validate(data)
            except ValueError as err:  # pydantic's ValidationError is a ValueError
                raise ValueError(" ".join(str(err).split())) from None
        if cls in (list, tuple, set, frozenset, dict):
            return self._generic(data, cls, ())
        if isinstance(data, cls):
            return data
        raise TypeError(f"{cls.__name__} has no JSON form this converter knows (got {_short(data)})")

    def _dataclass(self, data: Any, cls: type) -> Any:
        mapping = _expect(data, dict)
        hints = _type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name not in mapping:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"missing field {f.name!r}")
                continue
            values[f.name] = self._sub(mapping[f.name], hints.get(f.name, Any), f"[{f.name!r}]")
        # Fields the class does not (or no longer) has are ignored: payloads outlive code.
        return cls(**values)

    # -- payloads: JSON text ---------------------------------------------------------

    def encode_value(self, value: Any, *, what: str) -> str:
        """One value as JSON text; PayloadError names ``what`` (and the place inside)."""
        return _dumps(self._convert(value, what), what)

    def encode_args(self, args: Sequence[Any], *, what: str) -> str:
        """Positional arguments as JSON text of an array; PayloadError names the argument."""
        data = [self._convert(arg, f"argument {i} of {what}") for i, arg in enumerate(args, start=1)]
        return _dumps(data, f"arguments of {what}")

    def decode_value(self, payload: str | None, hint: Any = None, *, what: str = "the value") -> Any:
        """JSON text of one value (None or empty: None) as ``hint``; PayloadError names ``what``."""
        data = None if payload is None or payload == "" else json.loads(payload)
        return self._from(data, hint, what)

    def decode_args(self, payload: str | Sequence[Any] | None, hints: Sequence[Any] = (), *,
                    what: str = "the call") -> list[Any]:
        """JSON text of an array as arguments, the i-th converted to ``hints[i]`` (extra
        arguments, beyond the hints, stay plain JSON)."""
        if payload is None:
            return []
        data = json.loads(payload) if isinstance(payload, str) else payload
        if not isinstance(data, list):
            raise TypeError(f"arguments must be a JSON array, got {type(data).__name__}")
        return [self._from(item, hints[i] if i < len(hints) else None, f"argument {i + 1} of {what}")
                for i, item in enumerate(data)]

    def _convert(self, value: Any, what: str) -> Any:
        try:
            return self.to_json(value)
        except _ConversionError as err:
            raise PayloadError(f"{what}{_at(err.path)}: {err.message}") from None
        except (TypeError, ValueError) as err:
            raise PayloadError(f"{what}: {err}") from err

    def _from(self, data: Any, hint: Any, what: str) -> Any:
        if hint is None or hint is Any:
            return data
        try:
            return self.from_json(data, hint)
        except _ConversionError as err:
            raise PayloadError(f"{what}: cannot convert {_short(data)} to {_hint_name(hint)}"
                               f"{_at(err.path)}: {err.message}") from None
        except (TypeError, ValueError) as err:
            raise PayloadError(f"{what}: cannot convert {_short(data)} to {_hint_name(hint)}: {err}") from err


@runtime_checkable
class PayloadCodec(Protocol):
    """Transforms the bytes of every payload (the UTF-8 JSON text) on its way out of and
    back into the SDK: compression, encryption. ``name`` is recorded with each encoded
    payload; ``decode`` must undo ``encode``."""

    name: str

    async def encode(self, data: bytes) -> bytes: ...

    async def decode(self, data: bytes) -> bytes: ...


async def encode_payload(codec: PayloadCodec | None, payload: str | None, *, args: bool = False) -> str | None:
    """The JSON text ``payload`` as it travels with ``codec``: a value becomes
    ``{"kadence-codec": name, "data": base64}``; arguments (``args``) stay a JSON array,
    of that one object. Without a codec (or payload) it is unchanged."""
    if codec is None or payload is None:
        return payload
    marker = {CODEC_MARKER: codec.name, "data": base64.b64encode(await codec.encode(payload.encode())).decode()}
    return json.dumps([marker] if args else marker, separators=(",", ":"))


async def decode_payload(codec: PayloadCodec | None, payload: str | None, *, args: bool = False) -> str | None:
    """Undo :func:`encode_payload`; a payload not encoded is returned as it is (it was sent
    without a codec). PayloadError when it is encoded and there is no codec, or another."""
    if payload is None or CODEC_MARKER not in payload:
        return payload
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    marker = data[0] if args and isinstance(data, list) and len(data) == 1 else data
    if not (isinstance(marker, dict) and set(marker) == {CODEC_MARKER, "data"}):
        return payload
    if codec is None:
        raise PayloadError(f"a payload encoded by codec {marker[CODEC_MARKER]!r} arrived, "
                           "but no payload codec is configured here")
    if marker[CODEC_MARKER] != codec.name:
        raise PayloadError(f"a payload encoded by codec {marker[CODEC_MARKER]!r} arrived, "
                           f"but the configured codec is {codec.name!r}")
    return (await codec.decode(base64.b64decode(str(marker["data"])))).decode()


async def decode_args_payload(codec: PayloadCodec | None, payload: Any) -> Any:
    """Arguments as they come in a body (JSON text, an already parsed array, or None) with
    the codec undone; a parsed array stays parsed."""
    if codec is None or payload is None:
        return payload
    if isinstance(payload, str):
        return await decode_payload(codec, payload, args=True)
    text = json.dumps(payload, separators=(",", ":"))
    decoded = await decode_payload(codec, text, args=True)
    return payload if decoded is text else json.loads(decoded or "null")


_DEFAULT = DataConverter()


def default_converter() -> DataConverter:
    """The converter used when none is given (no codec)."""
    return _DEFAULT


# -- type hints of callables ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Signature:
    """The type hints a callable declares: its positional parameters (``self`` left out
    for methods) and its return; None where nothing is declared."""

    params: tuple[Any, ...]
    rest: Any  # the hint of ``*args``, None when there is none
    result: Any

    def param_hints(self, count: int) -> list[Any]:
        """Hints for ``count`` positional arguments."""
        return [self.params[i] if i < len(self.params) else self.rest for i in range(count)]


_NO_HINTS = Signature((), None, None)


def signature_of(fn: Callable[..., Any] | None, *, method: bool = False) -> Signature:
    """The hints of ``fn`` (a method when ``method``: its first parameter is skipped); an
    unresolvable annotation counts as none, so hints never stop a call."""
    if fn is None:
        return _NO_HINTS
    try:
        return _signature(fn, method)
    except TypeError:  # unhashable callables
        return _signature.__wrapped__(fn, method)


@lru_cache(maxsize=4096)
def _signature(fn: Callable[..., Any], method: bool) -> Signature:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - a forward reference that does not resolve: no hints
        hints = {}
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return _NO_HINTS
    if method and parameters:
        parameters = parameters[1:]
    params: list[Any] = []
    rest = None
    for p in parameters:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            params.append(hints.get(p.name))
        elif p.kind is p.VAR_POSITIONAL:
            rest = hints.get(p.name)
    result = hints.get("return")
    return Signature(tuple(params), rest, result)


@lru_cache(maxsize=1024)
def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fields decode as plain JSON
        return {}


# -- helpers -------------------------------------------------------------------------


_SEQUENCES = (list, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, cabc.Collection)
_SETS = (set, frozenset, cabc.Set, cabc.MutableSet)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def is_plain_json(hint: Any) -> bool:
    """Whether values of ``hint`` are JSON as it is (see :meth:`DataConverter.from_json`)."""
    try:
        return _is_plain(hint)
    except TypeError:  # an unhashable hint
        return _is_plain.__wrapped__(hint)


@lru_cache(maxsize=1024)
def _is_plain(hint: Any) -> bool:
    if hint is None or hint is Any or hint is object or isinstance(hint, typing.TypeVar) or hint in _PLAIN_SCALARS:
        return True
    if hint in (list, dict) or (hint in _SEQUENCES[1:] and not typing.get_args(hint)):
        return True
    if isinstance(hint, typing.NewType):
        return is_plain_json(hint.__supertype__)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return is_plain_json(args[0])
    if origin is typing.Literal:
        return True
    if origin is typing.Union or origin is types.UnionType:
        return all(is_plain_json(a) for a in args)
    if origin in _SEQUENCES:
        return all(is_plain_json(a) for a in args)
    if origin in _MAPPINGS:
        return not args or (args[0] in (str, Any) and is_plain_json(args[1]))
    return False


def _fits_json(data: Any, hint: Any) -> bool:
    """Whether ``data`` is of the JSON type of the plain hint ``hint``."""
    if hint is None or hint is Any or hint is object or isinstance(hint, typing.TypeVar):
        return True
    if isinstance(hint, typing.NewType):
        return _fits_json(data, hint.__supertype__)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _fits_json(data, args[0])
    if origin is typing.Literal:
        return data in args
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits_json(data, a) for a in args)
    if hint is type(None):
        return data is None
    if hint is bool:
        return isinstance(data, bool)
    if hint is int:
        return isinstance(data, int) and not isinstance(data, bool)
    if hint is float:
        return isinstance(data, int | float) and not isinstance(data, bool)
    if hint is str:
        return isinstance(data, str)
    if hint is dict or origin in _MAPPINGS:
        return isinstance(data, dict)
    return isinstance(data, list)


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def _expect(data: Any, kind: type) -> Any:
    if not isinstance(data, kind) or (kind is not bool and isinstance(data, bool)):
        raise TypeError(f"expected {_JSON_NAMES.get(kind, kind.__name__)}, got {_short(data)}")
    return data


#: What json.dumps(data, separators=(",", ":"), allow_nan=False) would build on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _dumps(data: Any, what: str) -> str:
    try:
        return _ENCODER.encode(data)
    except (TypeError, ValueError) as err:
        # Only reached when a to_json override (or a model's own dump) left non-JSON data.
        raise PayloadError(f"{what}: {err}") from err


def _at(path: str) -> str:
    return f" at {path.strip()}" if path else ""


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__qualname__
    return str(hint).replace("typing.", "")


def _short(value: Any) -> str:
    text = json.dumps(value, default=repr) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
