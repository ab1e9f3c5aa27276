-- One history batch through one function call (issue 20): the checks the commit statement
-- made around kadence_commit_ledger_batch (0006) and the three nested functions it called
-- (0006 → 0004 → 0003, each passing its arguments on) folded into one PL/pgSQL function,
-- which also skips the checks whose arrays are empty (two batches of every three). The
-- statements, their order and what they write are those of 0003/0004/0006/0012; only the
-- calls around them go. Measured on a replay of 600 recorded batches of sequential
-- workflows: 0.92-0.94 of the PostgreSQL backend's CPU per commit (docs/architecture.md).
--
-- The outbox row no longer carries the batch's audit records (kadence.history): they are
-- the batch's events behind a HistoryRecord prefix, bytes history_events holds already.
-- The row names them instead, (run id, event id) in publication order, with their trace
-- headers; a new owner rebuilds them from history_events and executions (store.py
-- pending_outbox). Half a big batch's row was these copies, compressed and stored out of
-- line at commit and deleted after publication: a 1,000-workflow burst's commits cost the
-- backend 0.76 of the CPU without them. Rows written before keep their records (the new
-- columns are NULL) and are published as they are.
ALTER TABLE outbox_batches ADD COLUMN audit_runs text[], ADD COLUMN audit_events bigint[],
    ADD COLUMN audit_headers bytea[];

-- Returns what the statement's CASE returned: 2 if a workflow the batch ran as new has a run,
-- 3 if a request id it applied was applied before (both checked first, nothing written),
-- 1 if the range_id is stale (nothing written), else 0. The functions of 0003/0004/0006 stay
-- for a history process of an earlier build running against this schema.
CREATE FUNCTION kadence_commit(
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
    p_notify        text[],                 -- close payloads for NOTIFY kadence_closed
    p_new_ns        text[],                 -- workflows the batch ran as new: namespace, workflow id
    p_new_wf        text[],
    p_req_ns        text[],                 -- request ids applied: namespace, workflow id, id, run
    p_req_wf        text[],
    p_req_ids       text[],
    p_req_runs      text[],
    p_start_ns      text[],                 -- runs started: namespace, workflow id, run, offset
    p_start_wf      text[],
    p_start_runs    text[],
    p_start_offsets bigint[],
    p_audit_runs    text[],                 -- the batch's audit records: run, event id, headers
    p_audit_events  bigint[],
    p_audit_headers bytea[]
) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    -- One primary-key probe per key (LIMIT keeps the plan from turning into a join that
    -- scans the table, see store.py _with_current_run).
    IF cardinality(p_new_ns) > 0 AND EXISTS (
            SELECT 1 FROM unnest(p_new_ns, p_new_wf) AS k (namespace, workflow_id)
            CROSS JOIN LATERAL (SELECT run_id FROM current_executions
                                 WHERE namespace = k.namespace AND workflow_id = k.workflow_id LIMIT 1) AS c) THEN
        RETURN 2;
    END IF;
    IF cardinality(p_req_ids) > 0 AND EXISTS (
            SELECT 1 FROM unnest(p_req_ns, p_req_wf, p_req_ids) AS r (ns, wf, id)
            CROSS JOIN LATERAL (SELECT 1 FROM request_ids WHERE namespace = r.ns AND workflow_id = r.wf
                                   AND request_id = r.id LIMIT 1) AS q) THEN
        RETURN 3;
    END IF;
    UPDATE shards SET kafka_offset = COALESCE(p_offset, kafka_offset), updated_at = now()
     WHERE shard_id = p_shard_id AND range_id = p_range_id;
    IF NOT FOUND THEN
        RETURN 1;
    END IF;
    IF cardinality(p_executions) > 0 THEN
        INSERT INTO executions SELECT * FROM unnest(p_executions)
            ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, close_time = EXCLUDED.close_time,
                next_event_id = EXCLUDED.next_event_id, state = EXCLUDED.state,
                undispatched = EXCLUDED.undispatched, summary = EXCLUDED.summary;
    END IF;
    IF cardinality(p_current) > 0 THEN
        INSERT INTO current_executions SELECT * FROM unnest(p_current)
            ON CONFLICT (namespace, workflow_id) DO UPDATE SET run_id = EXCLUDED.run_id,
                status = EXCLUDED.status, start_request_id = EXCLUDED.start_request_id;
    END IF;
    IF cardinality(p_events) > 0 THEN
        INSERT INTO history_events SELECT * FROM unnest(p_events);
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
    IF p_outbox_id IS NOT NULL THEN
        INSERT INTO outbox_batches (shard_id, id, topics, keys, payloads, headers, audit_runs, audit_events,
                                    audit_headers)
        VALUES (p_shard_id, p_outbox_id, p_topics, p_keys, p_payloads, p_headers, p_audit_runs, p_audit_events,
                p_audit_headers);
    END IF;
    IF cardinality(p_req_ids) > 0 THEN
        INSERT INTO request_ids (namespace, workflow_id, request_id, run_id, shard_id)
        SELECT ns, wf, id, run, p_shard_id FROM unnest(p_req_ns, p_req_wf, p_req_ids, p_req_runs) AS r (ns, wf, id, run)
            ON CONFLICT DO NOTHING;
    END IF;
    IF cardinality(p_start_runs) > 0 THEN
        INSERT INTO run_start_offsets
        SELECT ns, wf, run, p_shard_id, o FROM unnest(p_start_ns, p_start_wf, p_start_runs, p_start_offsets)
            AS r (ns, wf, run, o)
            ON CONFLICT (namespace, workflow_id) DO UPDATE SET run_id = EXCLUDED.run_id,
                shard_id = EXCLUDED.shard_id, kafka_offset = EXCLUDED.kafka_offset;
    END IF;
    RETURN 0;
END
$$;
