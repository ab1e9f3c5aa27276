"""Generates ``kadence_protocol/records.py``, the record types, from ``schemas/*.avsc``.

    python -m kadence_protocol.generate          # rewrite records.py
    python -m kadence_protocol.generate --check  # exit 1 when records.py is not what the schemas give

Every Avro record becomes a slotted, frozen, keyword-only dataclass with ``from_dict`` (a
decoded record, as ``kadence.avro.decode`` gives it) and ``to_dict`` (what
``kadence.avro.encode`` takes). Avro enums become the StrEnums of ``kadence_protocol.enums``
(AVRO_ENUMS); a union of several records (an event's or a command's attributes, told apart
by its type field) stays a decoded dict. ``tests/unit/kadence_protocol/test_records.py`` regenerates
in memory and compares with the file, so a schema change without a regeneration fails.
"""

from __future__ import annotations

import json
import keyword
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .enums import AVRO_ENUMS

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
OUTPUT = Path(__file__).resolve().parent / "records.py"
NAMESPACE = "kadence"
_PRIMITIVES = {"null": "None", "boolean": "bool", "int": "int", "long": "int", "float": "float", "double": "float",
               "string": "str", "bytes": "bytes"}


@dataclass(frozen=True)
class _Type:
    """How one Avro type reads in Python: its annotation, and the expressions that convert a
    decoded value (``{v}``) into it and back."""

    annotation: str
    load: str = "{v}"
    dump: str = "{v}"
    # The same conversions as callables, when there are such (a record's, an enum's).
    load_fn: str | None = None
    dump_fn: str | None = None


def _full(name: str, namespace: str) -> str:
    return name if "." in name else f"{namespace}.{name}"


class _Schemas:
    def __init__(self, directory: Path) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.enums: dict[str, dict[str, Any]] = {}
        for path in sorted(directory.glob("*.avsc")):
            self._collect(json.loads(path.read_text(encoding="utf-8")), NAMESPACE)

    def _collect(self, node: Any, namespace: str) -> None:
        if isinstance(node, list):
            for item in node:
                self._collect(item, namespace)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "enum"):
                namespace = node.get("namespace", namespace)
                target = self.records if kind == "record" else self.enums
                target[_full(node["name"], namespace)] = {**node, "namespace": namespace}
                if kind == "record":
                    for f in node["fields"]:
                        self._collect(f["type"], namespace)
            elif kind == "array":
                self._collect(node["items"], namespace)
            elif kind == "map":
                self._collect(node["values"], namespace)
            elif isinstance(kind, (list, dict)):
                self._collect(kind, namespace)

    def type_of(self, t: Any, namespace: str) -> _Type:
        if isinstance(t, list):
            others = [x for x in t if x != "null"]
            nullable = len(others) < len(t)
            if len(others) == 1:
                inner = self.type_of(others[0], namespace)
                if not nullable:
                    return inner
                if inner.load == "{v}" and inner.dump == "{v}":
                    return _Type(f"{inner.annotation} | None")
                if inner.load_fn is not None:
                    return _Type(f"{inner.annotation} | None", f"_optional({inner.load_fn}, {{v}})",
                                 f"_optional({inner.dump_fn}, {{v}})" if inner.dump_fn else "{v}")
                return _Type(f"{inner.annotation} | None",
                             f"None if {{v}} is None else {inner.load}", f"None if {{v}} is None else {inner.dump}")
            # Several records: the decoded dict, told apart by the record's type field.
            return _Type("dict[str, Any] | None" if nullable else "dict[str, Any]")
        if isinstance(t, dict):
            kind = t["type"]
            if kind in ("record", "enum"):
                return self.type_of(_full(t["name"], t.get("namespace", namespace)), namespace)
            if kind == "array":
                inner = self.type_of(t["items"], namespace)
                if inner.load == "{v}":
                    return _Type(f"list[{inner.annotation}]", "list({v})", "list({v})")
                return _Type(f"list[{inner.annotation}]", f"[{inner.load.format(v='x')} for x in {{v}}]",
                             f"[{inner.dump.format(v='x')} for x in {{v}}]")
            if kind == "map":
                inner = self.type_of(t["values"], namespace)
                if inner.load == "{v}":
                    return _Type(f"dict[str, {inner.annotation}]", "dict({v})", "dict({v})")
                return _Type(f"dict[str, {inner.annotation}]",
                             f"{{{{k: {inner.load.format(v='x')} for k, x in {{v}}.items()}}}}",
                             f"{{{{k: {inner.dump.format(v='x')} for k, x in {{v}}.items()}}}}")
            return self.type_of(kind, namespace)
        if t in _PRIMITIVES:
            return _Type(_PRIMITIVES[t])
        name = _full(t, namespace)
        if name in self.enums:
            enum = AVRO_ENUMS[name].__name__
            return _Type(enum, f"{enum}({{v}})", load_fn=enum)
        short = name.rsplit(".", 1)[1]
        return _Type(short, f"{short}.from_dict({{v}})", "{v}.to_dict()", f"{short}.from_dict", f"{short}.to_dict")


def _default(value: Any, annotation: str) -> str:
    if isinstance(value, list):
        return "field(default_factory=list)" if not value else f"field(default_factory=lambda: {_literal(value)})"
    if isinstance(value, dict):
        return "field(default_factory=dict)" if not value else f"field(default_factory=lambda: {_literal(value)})"
    enum = next((e for e in AVRO_ENUMS.values() if e.__name__ == annotation.split(" | ")[0]), None)
    if enum is not None and isinstance(value, str):
        return f"{enum.__name__}.{enum(value).name}"
    if annotation == "float" and isinstance(value, int):
        return repr(float(value))
    return _literal(value)


def _literal(value: Any) -> str:
    """Python source for a JSON value (strings in double quotes, as the project writes them)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, 116 - len(indent), initial_indent=f"{indent}#: ", subsequent_indent=f"{indent}#: ")


def _record(schemas: _Schemas, name: str) -> list[str]:
    rec = schemas.records[name]
    short = name.rsplit(".", 1)[1]
    out = ["", "", "@dataclass(frozen=True, slots=True, kw_only=True)", f"class {short}:"]
    doc = (rec.get("doc") or f"The Avro record {name}.").replace('"""', "'''").replace("\\", "\\\\")
    wrapped = textwrap.wrap(doc, 108)
    out.append(f'    """{wrapped[0]}' + ('"""' if len(wrapped) == 1 else ""))
    out.extend(f"    {line}" for line in wrapped[1:])
    if len(wrapped) > 1:
        out.append('    """')
    out += ["", f"    NAME: ClassVar[str] = {_literal(short)}"]
    loads: list[str] = []
    dumps: list[str] = []
    for f in rec["fields"]:
        fname = f["name"]
        attr = f"{fname}_" if keyword.iskeyword(fname) else fname
        t = schemas.type_of(f["type"], rec["namespace"])
        if f.get("doc"):
            out += _comment(f["doc"], "    ")
        if "default" in f:
            out.append(f"    {attr}: {t.annotation} = {_default(f['default'], t.annotation)}")
            raw = f"d.get({_literal(fname)}, {_literal(f['default'])})"  # the Avro default, as decoded
            loads.append(f"{attr}={t.load.format(v=raw)}")
        else:
            out.append(f"    {attr}: {t.annotation}")
            loads.append(f"{attr}={t.load.format(v=f'd[{_literal(fname)}]')}")
        dumps.append(f"{_literal(fname)}: {t.dump.format(v=f'self.{attr}')}")
    out += ["", "    @classmethod", f"    def from_dict(cls, d: Mapping[str, Any]) -> {short}:",
            '        """From a decoded record (fields with a default may be absent)."""']
    out += _call("        return cls(", loads, ")")
    out += ["", "    def to_dict(self) -> dict[str, Any]:", '        """What kadence.avro.encode takes."""']
    out += _call("        return {", dumps, "}")
    return out


def _call(head: str, items: list[str], tail: str) -> list[str]:
    """``head`` items ``tail``, one item a line when they do not fit one line."""
    one = head + ", ".join(items) + tail
    if len(one) <= 120:
        return [one]
    indent = " " * (len(head) - len(head.lstrip()) + 4)
    return [head] + [f"{indent}{item}," for item in items] + [" " * (len(indent) - 4) + tail]


def render(directory: Path = SCHEMAS) -> str:
    """The text of records.py for the schemas in ``directory``."""
    schemas = _Schemas(directory)
    enums = sorted({AVRO_ENUMS[name].__name__ for name in schemas.enums})
    lines = [
        '"""The record types of the wire protocol: one frozen dataclass per Avro record of ``schemas/``.',
        "",
        "GENERATED by ``python -m kadence_protocol.generate`` from ``schemas/*.avsc``: do not edit by hand.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from collections.abc import Callable, Mapping",
        "from dataclasses import dataclass, field",
        "from typing import Any, ClassVar, TypeVar",
        "",
        f"from .enums import {', '.join(enums)}",
        "",
        'T = TypeVar("T")',
        "",
        "",
        "def _optional(convert: Callable[[Any], T], value: Any) -> T | None:",
        "    return None if value is None else convert(value)",
    ]
    for name in sorted(schemas.records):
        lines += _record(schemas, name)
    lines += ["", "", "# Every record type by its Avro name (without the namespace).",
              "RECORDS: dict[str, type[Any]] = {"]
    lines += [f"    {_literal(n.rsplit('.', 1)[1])}: {n.rsplit('.', 1)[1]}," for n in sorted(schemas.records)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python -m kadence_protocol.generate", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
