-- The audit's stored status: each verification of kadence.history against PostgreSQL
-- (`kadence audit --dsn ...`) and the divergences it found, for the web UI's audit page
-- and a run page's last verdict. See README "Audit replay" and services/audit/status.py.

CREATE TABLE audit_verifications (
    id              bigserial   PRIMARY KEY,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    scope           text        NOT NULL,            -- 'topic' (all of it) or 'from-time'
    from_time       timestamptz,                     -- with scope 'from-time'
    by_whom         text        NOT NULL DEFAULT '', -- who ran it (user@host of the command)
    partitions      jsonb       NOT NULL DEFAULT '[]'::jsonb,  -- [{partition, start, end}] offsets read
    records         bigint      NOT NULL,            -- HistoryRecords read
    runs            bigint      NOT NULL,            -- runs verified
    duplicates      bigint      NOT NULL DEFAULT 0,  -- harmless repeated deliveries
    unreadable      bigint      NOT NULL DEFAULT 0,  -- records that are not HistoryRecords
    divergences     bigint      NOT NULL,            -- found (all of them, even beyond those stored)
    chain_breaks    bigint      NOT NULL,            -- of them, hash-chain breaks (topic or PostgreSQL)
    compared_with_postgres boolean NOT NULL          -- false: the topic alone was checked
);

CREATE TABLE audit_divergences (
    verification_id bigint  NOT NULL REFERENCES audit_verifications (id) ON DELETE CASCADE,
    seq             integer NOT NULL,                -- its order in the report
    namespace       text    NOT NULL,
    workflow_id     text    NOT NULL,
    run_id          text    NOT NULL,
    kind            text    NOT NULL,                -- services/audit/replay.py's kinds
    event_id        bigint,
    detail          text    NOT NULL,
    PRIMARY KEY (verification_id, seq)
);

-- A run page's question: what did the latest verifications say about this run?
CREATE INDEX audit_divergences_run ON audit_divergences (run_id, verification_id);
