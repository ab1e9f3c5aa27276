"""How Kadence's own processes run: the garbage collector's settings, enum member reads; no I/O."""

from __future__ import annotations

import enum
import gc
import sys
from collections.abc import Iterator

import pytest

from kadence_protocol.enums import EventType
from services.common import loop as _loop

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_start_up_objects_are_frozen_and_young_collections_are_rarer(collector: None) -> None:
    _loop.tune_gc()
    assert gc.get_threshold() == _loop.GC_THRESHOLDS and gc.get_freeze_count() > 0


def test_kadence_gc_default_keeps_cpythons_settings(collector: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KADENCE_GC", "default")
    before = gc.get_threshold()
    _loop.tune_gc()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


@pytest.fixture
def enum_lookup() -> Iterator[None]:
    hook = vars(enum.EnumType).get("__getattr__")
    yield
    if hook is not None and "__getattr__" not in vars(enum.EnumType):
        setattr(enum.EnumType, "__getattr__", hook)  # noqa: B010 - put back what the test took


class _Colour(enum.StrEnum):
    RED = "red"
    name_ = "name"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 has no EnumType.__getattr__ to drop")
def test_enum_members_are_read_as_plain_class_attributes(enum_lookup: None) -> None:
    _loop.tune_enum_lookup()
    assert "__getattr__" not in vars(enum.EnumType)
    # Members, aliases by value and missing names behave as before (and as on 3.12).
    assert str.__eq__(_Colour.RED, "red") and _Colour("name") is _Colour.name_ and _Colour["RED"] is _Colour.RED
    assert getattr(EventType, "TIMER_FIRED") is EventType("TimerFired")  # noqa: B009 - read through the class
    for missing in ("BLUE", "__missing_dunder__"):
        with pytest.raises(AttributeError):
            getattr(_Colour, missing)


def test_kadence_enum_lookup_default_keeps_cpythons(enum_lookup: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KADENCE_ENUM_LOOKUP", "default")
    before = vars(enum.EnumType).get("__getattr__")
    _loop.tune_enum_lookup()
    assert vars(enum.EnumType).get("__getattr__") is before
