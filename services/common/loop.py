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
"""

from __future__ import annotations

import asyncio
import gc
import os
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


def run(main: Coroutine[Any, Any, T]) -> T:
    tune_gc()
    if os.environ.get("KADENCE_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
