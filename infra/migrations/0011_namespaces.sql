-- Namespaces (registered, each with a retention period for its closed runs) and schedules
-- (the workflows a namespace starts by cron or interval). See README "Namespaces",
-- "Retention" and "Schedules", and docs/protocol.md.

CREATE TABLE namespaces (
    name         text        PRIMARY KEY,
    description  text        NOT NULL DEFAULT '',
    owner_email  text        NOT NULL DEFAULT '',
    retention_ms bigint      NOT NULL CHECK (retention_ms > 0),  -- closed runs older than this are deleted
    state        text        NOT NULL DEFAULT 'Registered',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Every cluster has the default namespace; a cluster created before this migration keeps
-- every namespace it already holds runs of (30 days of retention, like the default).
INSERT INTO namespaces (name, description, retention_ms)
VALUES ('default', 'The namespace every cluster starts with', 30 * 86400000::bigint);
INSERT INTO namespaces (name, description, retention_ms)
SELECT DISTINCT namespace, 'Registered when namespaces were introduced', 30 * 86400000::bigint
FROM current_executions
ON CONFLICT (name) DO NOTHING;

-- The retention job's scan: a shard's closed runs by close time.
CREATE INDEX executions_closed ON executions (shard_id, close_time) WHERE close_time IS NOT NULL;

CREATE TABLE schedules (
    namespace         text        NOT NULL,
    schedule_id       text        NOT NULL,
    shard_id          integer     NOT NULL,           -- the history shard whose owner fires it
    spec              jsonb       NOT NULL,           -- cron or interval, jitter, time zone
    action            jsonb       NOT NULL,           -- the workflow each firing starts
    overlap           text        NOT NULL,           -- OverlapPolicy value
    catchup_window_ms bigint      NOT NULL,
    paused            boolean     NOT NULL DEFAULT false,
    note              text        NOT NULL DEFAULT '',
    next_nominal      bigint,                         -- next scheduled time, ms (NULL: none left)
    next_fire_at      bigint,                         -- next_nominal plus its jitter
    buffered          bigint,                         -- the firing the buffer_one policy holds back
    triggers          bigint[]    NOT NULL DEFAULT '{}',  -- triggered times not fired yet, in order
    last_workflow_id  text,                           -- the latest workflow started (overlap looks at it)
    recent            jsonb       NOT NULL DEFAULT '[]',  -- the latest firings, for describe
    fired             bigint      NOT NULL DEFAULT 0,
    skipped           bigint      NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, schedule_id)
);
CREATE INDEX schedules_due ON schedules (shard_id, next_fire_at);
