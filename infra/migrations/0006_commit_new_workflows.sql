-- A start of a workflow the shard has no run of in memory no longer asks PostgreSQL first
-- (a round trip on the start's path) whether the workflow has a run: the shard runs it as
-- a new workflow and names it in the commit, which checks before writing anything. If one
-- of them has a run after all (the shard's memory had let it go), nothing is written and
-- the shard runs the batch again with the runs looked up.
--
-- Returns 0 when the batch is committed, 1 when the shard's range_id is stale (nothing
-- written), 2 when a workflow named new has a run (nothing written).
CREATE FUNCTION kadence_commit_new_batch(
    p_shard_id         integer,
    p_range_id         bigint,
    p_offset           bigint,
    p_executions       executions[],
    p_current          current_executions[],
    p_events           history_events[],
    p_outbox_id        bigint,
    p_topics           text[],
    p_keys             bytea[],
    p_payloads         bytea[],
    p_headers          bytea[],
    p_timer_deletes    text[],
    p_closed_runs      text[],
    p_timers           timers[],
    p_heartbeats       activity_heartbeats[],
    p_notify           text[],
    p_new_namespaces   text[],                 -- with p_new_workflow_ids: the workflows run as new
    p_new_workflow_ids text[]
) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    -- One primary-key probe per workflow (LATERAL ... LIMIT 1, as the shard's look-up does:
    -- a plan cached while the table was small must not become a scan of it).
    IF cardinality(p_new_workflow_ids) > 0 AND EXISTS (
        SELECT 1 FROM unnest(p_new_namespaces, p_new_workflow_ids) AS k (namespace, workflow_id)
        CROSS JOIN LATERAL (SELECT 1 FROM current_executions c
                             WHERE c.namespace = k.namespace AND c.workflow_id = k.workflow_id LIMIT 1) AS found
    ) THEN
        RETURN 2;
    END IF;
    IF NOT kadence_commit_packed_batch(p_shard_id, p_range_id, p_offset, p_executions, p_current, p_events,
                                       p_outbox_id, p_topics, p_keys, p_payloads, p_headers, p_timer_deletes,
                                       p_closed_runs, p_timers, p_heartbeats, p_notify) THEN
        RETURN 1;
    END IF;
    RETURN 0;
END
$$;
