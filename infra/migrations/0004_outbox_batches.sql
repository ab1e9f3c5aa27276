-- The outbox holds one row per history batch instead of one per message: a batch of a
-- few runs publishes a dozen records, and a row each (inserted at commit, deleted after
-- publication) was most of the outbox's cost in PostgreSQL. The messages keep their
-- publication order inside the row. Rows of the old table written before this migration
-- are published and deleted as before; ids are dense per shard across both tables.
CREATE TABLE outbox_batches (
    shard_id  integer NOT NULL,
    id        bigint  NOT NULL,                -- dense per shard, publication order
    topics    text[]  NOT NULL,
    keys      bytea[] NOT NULL,
    payloads  bytea[] NOT NULL,
    headers   bytea[] NOT NULL,                -- per message: JSON list of [name, value-hex], or NULL
    PRIMARY KEY (shard_id, id)
);

DROP FUNCTION kadence_commit_batch(integer, bigint, bigint, executions[], current_executions[],
    history_events[], outbox[], text[], text[], timers[], activity_heartbeats[], text[]);

-- One history batch in one statement, as in 0003, with the outbox as one row.
CREATE FUNCTION kadence_commit_batch(
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
    p_timer_deletes text[],                 -- timer keys of this shard
    p_closed_runs   text[],                 -- runs whose every timer goes
    p_timers        timers[],
    p_heartbeats    activity_heartbeats[],
    p_notify        text[]                  -- payloads for NOTIFY kadence_closed
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE shards SET kafka_offset = COALESCE(p_offset, kafka_offset), updated_at = now()
     WHERE shard_id = p_shard_id AND range_id = p_range_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF cardinality(p_executions) > 0 THEN
        INSERT INTO executions SELECT * FROM unnest(p_executions)
            ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, close_time = EXCLUDED.close_time,
                next_event_id = EXCLUDED.next_event_id, state = EXCLUDED.state,
                undispatched = EXCLUDED.undispatched;
    END IF;
    IF cardinality(p_current) > 0 THEN
        INSERT INTO current_executions SELECT * FROM unnest(p_current)
            ON CONFLICT (namespace, workflow_id) DO UPDATE SET run_id = EXCLUDED.run_id,
                status = EXCLUDED.status, start_request_id = EXCLUDED.start_request_id;
    END IF;
    IF cardinality(p_events) > 0 THEN
        INSERT INTO history_events SELECT * FROM unnest(p_events);
    END IF;
    IF p_outbox_id IS NOT NULL THEN
        INSERT INTO outbox_batches VALUES (p_shard_id, p_outbox_id, p_topics, p_keys, p_payloads, p_headers);
    END IF;
    -- Deletes before upserts: a timer re-armed under the same key in this batch survives.
    IF cardinality(p_timer_deletes) > 0 THEN
        DELETE FROM timers WHERE shard_id = p_shard_id AND timer_key = ANY(p_timer_deletes);
    END IF;
    IF cardinality(p_closed_runs) > 0 THEN
        DELETE FROM timers WHERE run_id = ANY(p_closed_runs);
    END IF;
    IF cardinality(p_timers) > 0 THEN
        INSERT INTO timers SELECT * FROM unnest(p_timers)
            ON CONFLICT (shard_id, timer_key) DO UPDATE SET fire_at = EXCLUDED.fire_at, ref = EXCLUDED.ref,
                attempt = EXCLUDED.attempt;
    END IF;
    IF cardinality(p_heartbeats) > 0 THEN
        INSERT INTO activity_heartbeats SELECT * FROM unnest(p_heartbeats)
            ON CONFLICT (run_id, scheduled_event_id) DO UPDATE SET attempt = EXCLUDED.attempt,
                details = EXCLUDED.details, heartbeat_time = EXCLUDED.heartbeat_time;
    END IF;
    IF cardinality(p_notify) > 0 THEN
        -- Delivered at commit, one notification per run.
        PERFORM pg_notify('kadence_closed', r) FROM unnest(p_notify) AS r;
    END IF;
    RETURN true;
END
$$;
