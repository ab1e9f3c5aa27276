-- Commands that target a workflow rather than one of its runs (start, signal,
-- signal-with-start, terminate) are applied at most once per workflow, whatever run is
-- current when a copy comes again (a client retry, a redelivery, an operator rewind):
-- each applied request id is kept here, written in the batch's transaction, and trimmed
-- by age (KADENCE_REQUEST_ID_RETENTION_S).
CREATE TABLE request_ids (
    namespace   text        NOT NULL,
    workflow_id text        NOT NULL,
    request_id  text        NOT NULL,
    run_id      text        NOT NULL,           -- the run the request applied to (its answer)
    shard_id    integer     NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, workflow_id, request_id)
);
CREATE INDEX request_ids_age ON request_ids (shard_id, applied_at);

-- Per workflow, the kadence.requests offset its current run started at (the offset of
-- the command that created it): a command without run id read at a lower offset was
-- accepted before that run existed and is not applied to it (see docs/architecture.md).
CREATE TABLE run_start_offsets (
    namespace    text    NOT NULL,
    workflow_id  text    NOT NULL,
    run_id       text    NOT NULL,
    shard_id     integer NOT NULL,
    kafka_offset bigint  NOT NULL,
    PRIMARY KEY (namespace, workflow_id)
);

-- Records below this offset were read before an operator rewind (the stored offset the
-- rewind left): while the shard reads them again, it checks each against run_start_offsets.
ALTER TABLE shards ADD COLUMN replay_until bigint NOT NULL DEFAULT 0;

-- kadence_commit_packed_batch (0004) and then the batch's request ids and run starts, in
-- the statement's own transaction; a stale range_id writes nothing.
CREATE FUNCTION kadence_commit_ledger_batch(
    p_shard_id      integer,
    p_range_id      bigint,
    p_offset        bigint,
    p_executions    executions[],
    p_current       current_executions[],
    p_events        history_events[],
    p_outbox_id     bigint,
    p_topics        text[],
    p_keys          bytea[],
    p_payloads      bytea[],
    p_headers       bytea[],
    p_timer_deletes text[],
    p_closed_runs   text[],
    p_timers        timers[],
    p_heartbeats    activity_heartbeats[],
    p_notify        text[],
    p_req_ns        text[],                 -- request ids applied: namespace, workflow id, id, run
    p_req_wf        text[],
    p_req_ids       text[],
    p_req_runs      text[],
    p_start_ns      text[],                 -- runs started: namespace, workflow id, run, offset
    p_start_wf      text[],
    p_start_runs    text[],
    p_start_offsets bigint[]
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT kadence_commit_packed_batch(p_shard_id, p_range_id, p_offset, p_executions, p_current, p_events,
                                       p_outbox_id, p_topics, p_keys, p_payloads, p_headers, p_timer_deletes,
                                       p_closed_runs, p_timers, p_heartbeats, p_notify) THEN
        RETURN false;
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
    RETURN true;
END
$$;
