"""How Kadence's own processes run: the fastest event loop at hand, a tuned garbage collector.

The services spend much of their CPU in the event loop itself (scheduling callbacks,
socket reads and writes for Kafka, PostgreSQL and HTTP); uvloop does that work in C.
``KADENCE_EVENT_LOOP=asyncio`` picks the standard loop instead, to compare or debug.

A server allocates a few container objects per request that outlive it briefly, and
CPython's default collector (a young-generation pass every 700 net allocations, older
passes over everything alive) then spends a fifth of the server's time walking the
same long-lived objects: caches of workflow state, connections, schemas. So the objects
of start-up are frozen out of collection and the young generation is collected every
50,000 net allocations (``KADENCE_GC=default`` keeps CPython's settings). Reference
cycles are still collected, only less often. This is set for the processes Kadence
starts (``kadence``, the services, the benchmark), never by the SDK inside a user's.

On CPython 3.11, ``enum.EnumType`` defines ``__getattr__``, and a metaclass with one reads
every class attribute through a slow hook: ``EventType.TIMER_FIRED`` costs about ten times a
module global, and the fold, the builder and the engines read such members on every event.
3.12 dropped that ``__getattr__`` (every member has been a class attribute since 3.11, so it
only ever answered for names that do not exist), and Kadence's processes drop it on 3.11 too
(``KADENCE_ENUM_LOOKUP=default`` keeps it).
"""

from __future__ import annotations

import asyncio
import enum
import gc
import os
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


GC_THRESHOLDS = (50_000, 10, 10)


def tune_gc() -> None:
    """Freeze what start-up allocated and collect the young generation less often."""
    if os.environ.get("KADENCE_GC", "tuned") == "default":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def tune_enum_lookup() -> None:
    """Read enum members as plain class attributes, as CPython 3.12 does (module docstring)."""
    if os.environ.get("KADENCE_ENUM_LOOKUP", "tuned") == "default" or sys.version_info >= (3, 12):
        return
    if "__getattr__" in vars(enum.EnumType):
        delattr(enum.EnumType, "__getattr__")


def run(main: Coroutine[Any, Any, T]) -> T:
    tune_gc()
    tune_enum_lookup()
    if os.environ.get("KADENCE_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
