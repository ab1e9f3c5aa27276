"""Run a coroutine on the fastest event loop at hand: uvloop where it is installed.

The services spend much of their CPU in the event loop itself (scheduling callbacks,
socket reads and writes for Kafka, PostgreSQL and HTTP); uvloop does that work in C.
``KADENCE_EVENT_LOOP=asyncio`` picks the standard loop instead, to compare or debug.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    if os.environ.get("KADENCE_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
