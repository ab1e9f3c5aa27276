"""New run ids: time-ordered (UUID version 7, RFC 9562), 32 hex digits like any run id.

A run's rows are keyed by its id (``executions``, ``history_events``, ``visibility``). With
random ids every new run lands on a random leaf page of those indexes, so the pages a
burst of commits touches spread over the whole index: once the indexes outgrow shared
buffers, each commit reads pages back in and writes others out, and after each checkpoint
writes whole pages to the WAL, a cost that grows with the runs kept. Ids that start with
the creation time put new runs at the right edge, in the few pages recent commits keep
warm. The rest of the id is random (74 bits), so ids stay unguessable and unique.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["new_run_id"]

_VERSION = 0x7
_VARIANT = 0b10


def new_run_id(*, now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
               random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A new run id: 48 bits of Unix time in ms, the version, 74 random bits, as hex."""
    rand = int.from_bytes(random_bytes(10), "big")  # 80 bits; 74 used
    value = (now_ms() & (1 << 48) - 1) << 80
    value |= _VERSION << 76
    value |= (rand >> 62 & 0xFFF) << 64  # rand_a: 12 bits
    value |= _VARIANT << 62
    value |= rand & (1 << 62) - 1  # rand_b: 62 bits
    return f"{value:032x}"
