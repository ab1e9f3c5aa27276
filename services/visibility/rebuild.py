"""Rebuild visibility from ``kadence.history``: delete the rows (of one namespace, or all),
then project the topic from its beginning up to the end offsets seen at the start.

The live projection may run meanwhile: both only ever move a row forward (store.py), so
what they write in any order comes to the same rows. Only what the topic still holds comes
back; runs whose events the topic no longer has (retention, a development broker
restarted) are gone from visibility after a rebuild.
"""

from __future__ import annotations

import logging
from typing import Any

from services.common import db
from services.common.bounded import BoundedRead
from services.common.kafka import HISTORY

from . import projection, shortcut, store

log = logging.getLogger(__name__)


async def rebuild(bootstrap: str, dsn: str, *, namespace: str | None = None, batch: int = 2000) -> int:
    """Rebuild; return the number of history records read."""
    await db.migrate(dsn)
    pool = await db.create_pool(dsn, max_size=2)
    try:
        async with BoundedRead(bootstrap, HISTORY) as read:
            deleted = await store.forget(pool, namespace)
            log.info("visibility rebuild: %d rows deleted; reading %d records", deleted, read.total)
            count = 0
            records: list[dict[str, Any]] = []
            async for item in read:
                count += 1
                try:
                    record = shortcut.decode(item.value)
                except projection.Skipped as exc:
                    log.warning("visibility rebuild: skipping %s[%d]@%d: %s", item.topic, item.partition,
                                item.offset, exc)
                    continue
                if namespace is None or record["namespace"] == namespace:
                    records.append(record)
                if len(records) >= batch:
                    await store.apply(pool, projection.fold(records))
                    records = []
            await store.apply(pool, projection.fold(records))
        return count
    finally:
        await pool.close()
