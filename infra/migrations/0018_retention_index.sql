-- Retention's scan bounded by its index (issue 20, goal 5). Each namespace has its own
-- retention, so the old scan (executions_closed: shard, close time) could not bound close
-- time in the index and walked every closed run the shard keeps, with a heap fetch and a
-- namespace look-up per run, once a minute per shard: its cost grew with the history kept
-- and its reads pushed the commits' pages out of shared buffers. Keyed by namespace as
-- well, the job looks up each namespace's expired runs as a range (retention.py _EXPIRED).
-- The old build's query still runs on this index (shard_id leads, same predicate).
CREATE INDEX executions_expiry ON executions (shard_id, namespace, close_time) WHERE close_time IS NOT NULL;
DROP INDEX executions_closed;
