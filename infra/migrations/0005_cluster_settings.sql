-- Settings fixed when a cluster is created, which every process must agree on. The first
-- is the number of history shards (= kadence.requests partitions): a run's timers, outbox
-- rows and unstarted tasks belong to its shard, so a cluster restarted with fewer shards
-- would leave those of the missing ones to nobody. History refuses to start with a count
-- other than the one recorded here.
CREATE TABLE cluster_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- A cluster created before this table: its shards are the ones ever acquired.
INSERT INTO cluster_settings (name, value)
SELECT 'shards', (max(shard_id) + 1)::text FROM shards HAVING count(*) > 0;
