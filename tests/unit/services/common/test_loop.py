"""How Kadence's own processes run: the garbage collector's settings; no I/O."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

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
