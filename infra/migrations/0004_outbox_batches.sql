-- The outbox holds one row per history batch instead of one per message: rows inserted at
-- commit and deleted after publication, a dozen per batch, left dead tuples faster than
-- autovacuum cleared them (253,610 after a 10,000-workflow run), and the commit slowed
-- with them. The messages keep their publication order inside the row. Rows of the old
-- table written before this migration are published and deleted as before; ids are
-- dense per shard across both tables.
CREATE TABLE outbox_batches (
    shard_id  integer NOT NULL,
    id        bigint  NOT NULL,                -- dense per shard, publication order
    topics    text[]  NOT NULL,
    keys      bytea[] NOT NULL,
    payloads  bytea[] NOT NULL,
    headers   bytea[] NOT NULL,                -- per message: JSON list of [name, value-hex], or NULL
    PRIMARY KEY (shard_id, id)
);

-- One history batch in one statement: kadence_commit_batch of 0003 (the fence, then every
-- table, with no message in its one-row-per-message outbox), then the batch's outbox row.
-- Both in the statement's own transaction; a stale range_id writes nothing.
CREATE FUNCTION kadence_commit_packed_batch(
    p_shard_id      integer,
    p_range_id      bigint,
    p_offset        bigint,                 -- next kadence.requests offset; NULL keeps the stored one
    p_executions    executions[],
    p_current       current_executions[],
    p_events        history_events[],
    p_outbox_id     bigint,                 -- NULL: the batch publishes nothing
    p_topics        text[],
    p_keys          bytea[],
    p_payloads      bytea[],
    p_headers       bytea[],
    p_timer_deletes text[],
    p_closed_runs   text[],
    p_timers        timers[],
    p_heartbeats    activity_heartbeats[],
    p_notify        text[]
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT kadence_commit_batch(p_shard_id, p_range_id, p_offset, p_executions, p_current, p_events,
                                '{}'::outbox[], p_timer_deletes, p_closed_runs, p_timers, p_heartbeats,
                                p_notify) THEN
        RETURN false;
    END IF;
    IF p_outbox_id IS NOT NULL THEN
        INSERT INTO outbox_batches VALUES (p_shard_id, p_outbox_id, p_topics, p_keys, p_payloads, p_headers);
    END IF;
    RETURN true;
END
$$;
