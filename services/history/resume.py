"""Where a shard taken over starts reading kadence.requests: the stored offset, always,
except in the two cases that say otherwise explicitly.

The stored offset (``shards.kafka_offset``, committed with every batch) is the truth. A
log end below it is no proof that the broker lost records: the development broker
(Tansu) reports a partition's end as the base offset of its last record batch + 1, so an
idle partition often looks shorter than what was read from it. Rewinding on such a guess
re-ran every command of the partition. Consumption restarts at 0 only when

* the broker is new (``kadence dev`` created the topics on a fresh in-memory broker: its
  offsets name other records than the stored ones), or
* the operator says the broker lost data (``KADENCE_REWIND_LOST_PARTITIONS=1``) and the
  log end is below the stored offset. The records read again are then copies of records
  already applied: the ledger (ledger.py) keeps them from acting twice or on a later run.
"""

from __future__ import annotations

import enum


class Resume(enum.Enum):
    STORED = "stored"  # from the stored offset
    FRESH = "fresh"  # from 0: a new broker
    REWIND = "rewind"  # from 0: the operator's rewind of a broker that lost records


def resume_from(stored: int, log_end: int, *, fresh_broker: bool, rewind_lost: bool) -> Resume:
    """How to resume a partition whose stored offset is ``stored`` and whose broker reports
    ``log_end`` as its end."""
    if fresh_broker:
        return Resume.FRESH
    if rewind_lost and stored > log_end:
        return Resume.REWIND
    return Resume.STORED
