-- The typed domain (issue 16) in the schema: the status and kind columns take only the
-- values of their enums in kadence_protocol/enums.py (RunStatus, TimerKind, TaskKind;
-- tests/unit/test_domain_migration.py keeps the lists equal); two indexes no query uses
-- are dropped; executions gains the summary history writes for the frontend.
--
-- Each CHECK is added NOT VALID and validated after: the validation scans the table under a
-- lock that lets reads and writes go on.

ALTER TABLE executions ADD CONSTRAINT executions_status_check
    CHECK (status IN ('Running', 'Completed', 'Failed', 'TimedOut', 'Terminated', 'ContinuedAsNew', 'Canceled'))
    NOT VALID;
ALTER TABLE executions VALIDATE CONSTRAINT executions_status_check;

ALTER TABLE current_executions ADD CONSTRAINT current_executions_status_check
    CHECK (status IN ('Running', 'Completed', 'Failed', 'TimedOut', 'Terminated', 'ContinuedAsNew', 'Canceled'))
    NOT VALID;
ALTER TABLE current_executions VALIDATE CONSTRAINT current_executions_status_check;

ALTER TABLE visibility ADD CONSTRAINT visibility_status_check
    CHECK (status IN ('Running', 'Completed', 'Failed', 'TimedOut', 'Terminated', 'ContinuedAsNew', 'Canceled'))
    NOT VALID;
ALTER TABLE visibility VALIDATE CONSTRAINT visibility_status_check;

ALTER TABLE timers ADD CONSTRAINT timers_kind_check
    CHECK (kind IN ('user_timer', 'wf_timeout', 'wt_timeout', 'wt_retry',
                    'act_s2c', 'act_s2s', 'act_stc', 'act_hb', 'act_retry'))
    NOT VALID;
ALTER TABLE timers VALIDATE CONSTRAINT timers_kind_check;

ALTER TABLE task_backlog ADD CONSTRAINT task_backlog_kind_check
    CHECK (kind IN ('workflow', 'activity'))
    NOT VALID;
ALTER TABLE task_backlog VALIDATE CONSTRAINT task_backlog_kind_check;

-- executions is read by run id (its primary key), by shard for undispatched runs
-- (executions_undispatched) and by shard and close time for retention (executions_closed);
-- no query filters or orders it by (namespace, workflow_id) or (namespace, status): the
-- lists read the visibility table.
DROP INDEX IF EXISTS executions_by_workflow;
DROP INDEX IF EXISTS executions_open;

-- The run summary history writes beside its snapshot for the frontend
-- (services/history/summary.py): the frontend reads it and the row's columns, never the
-- snapshot, whose layout is history's own (services/history/snapshot.py).
ALTER TABLE executions ADD COLUMN summary bytea;

-- The summary of every row written before, taken from its snapshot once, here.
UPDATE executions e SET summary = convert_to(jsonb_build_object(
        'status', e.status,
        'result', s.j->'result',
        'failure', s.j->'failure',
        'new_run_id', s.j->'new_run_id',
        'cancel_details', s.j->'cancel_details',
        'memo', s.j->'memo',
        'history_size_bytes', COALESCE(s.j->'history_size_bytes', '0'::jsonb),
        'reset_from_run_id', s.j->'reset_from_run_id',
        'first_task_completed', COALESCE((s.j->>'last_completed_wt_scheduled_id')::bigint, 0) <> 0,
        'activities', COALESCE(s.j->'activities', '{}'::jsonb),
        'timers', COALESCE((SELECT jsonb_object_agg(t.key, t.value || jsonb_build_object('timer_id', t.key))
                            FROM jsonb_each(s.j->'timers') AS t), '{}'::jsonb),
        'children', COALESCE(s.j->'children', '{}'::jsonb),
        'update_requests', COALESCE((SELECT jsonb_agg(jsonb_build_object('update_id', r.key, 'name', r.value->'name',
                                                                         'input', r.value->'input')
                                                      ORDER BY COALESCE((r.value->>'seq')::bigint, 0), r.key)
                                     FROM jsonb_each(s.j->'update_requests') AS r
                                     WHERE r.value->>'stage' = 'requested'), '[]'::jsonb)
    )::text, 'UTF8')
FROM (SELECT run_id, convert_from(state, 'UTF8')::jsonb AS j FROM executions) AS s
WHERE s.run_id = e.run_id;

-- kadence_commit_batch of 0003, writing the summary with the snapshot.
CREATE OR REPLACE FUNCTION kadence_commit_batch(
    p_shard_id      integer,
    p_range_id      bigint,
    p_offset        bigint,                 -- next kadence.requests offset; NULL keeps the stored one
    p_executions    executions[],
    p_current       current_executions[],
    p_events        history_events[],
    p_outbox        outbox[],
    p_timer_deletes text[],                 -- timer keys of this shard
    p_closed_runs   text[],                 -- runs whose every timer goes
    p_timers        timers[],
    p_heartbeats    activity_heartbeats[],
    p_notify        text[]                  -- run ids for NOTIFY kadence_closed
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
    IF cardinality(p_outbox) > 0 THEN
        INSERT INTO outbox SELECT * FROM unnest(p_outbox);
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
