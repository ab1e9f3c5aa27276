-- The commit of 0016 without the audit names as arguments (issue 20): the batch's audit
-- records are exactly its events, in the order p_events gives them, so kadence_commit_v2
-- takes their names (run id, event id) from p_events instead of two more arrays of one
-- element per event, and their trace headers as NULL when no event has any (untraced, the
-- usual case). Encoding those three arrays was a quarter of the history process's CPU in
-- the statement's arguments (asyncpg checks every array element against collections.abc
-- in Python); PostgreSQL builds the two arrays from p_events instead of parsing them.
-- The row it writes is the row 0016 wrote, except audit_headers NULL instead of an array
-- of NULLs (store.py pending_outbox reads both) and audit_runs/audit_events NULL instead
-- of empty for a batch without events. kadence_commit stays for a history process of the
-- build before running against this schema.

CREATE FUNCTION kadence_commit_v2(
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
    p_audit_headers bytea[]                 -- each event's trace headers; NULL: none has any
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
        -- The audit records are the batch's events, in the order given (NULL names when none).
        INSERT INTO outbox_batches (shard_id, id, topics, keys, payloads, headers, audit_runs, audit_events,
                                    audit_headers)
        SELECT p_shard_id, p_outbox_id, p_topics, p_keys, p_payloads, p_headers,
               array_agg(e.run_id ORDER BY e.n), array_agg(e.event_id ORDER BY e.n), p_audit_headers
          FROM unnest(p_events) WITH ORDINALITY AS e (run_id, event_id, data, n);
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
