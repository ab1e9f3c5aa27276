"""Is a command on the partition of its workflow? One partition is one history shard, and
only the shard a workflow's key hashes to may write its state (timers, tasks and the
re-dispatch scan go by the run's shard). A record produced without a key, with another
key, or with a partitioner other than Kafka's default (murmur2) would have another shard
write the run; such a record is dead-lettered with the reason instead.
"""

from __future__ import annotations

from services.common import kafka


def misrouted(key: bytes | None, partition: int, namespace: str, workflow_id: str,
              partitions: int) -> str | None:
    """The dead-letter reason for a command record that is not where its workflow lives, or
    None. ``partitions`` is the partition count of kadence.requests (0: not known, the
    partition is not checked)."""
    expected = kafka.workflow_key(namespace, workflow_id)
    if key is None:
        return f"record has no key: its key must be {expected!r} (namespace/workflow_id)"
    if key != expected:
        return f"record key {key!r} is not namespace/workflow_id of the command"
    if partitions > 0:
        right = kafka.partition_for(key, partitions)
        if partition != right:
            return (f"record for {expected!r} is on partition {partition}, but its key belongs on"
                    f" partition {right} of {partitions} (produce with Kafka's default murmur2"
                    f" partitioner, e.g. kcat -X partitioner=murmur2_random)")
    return None
