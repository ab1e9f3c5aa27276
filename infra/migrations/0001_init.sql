-- Kadence system of record. History owns shards, executions, history_events,
-- outbox, timers; matching owns task_backlog and matching_owners.

CREATE TABLE shards (
    shard_id      integer PRIMARY KEY,
    range_id      bigint  NOT NULL DEFAULT 0,   -- bumped by every new owner; every write checks it
    kafka_offset  bigint  NOT NULL DEFAULT 0,   -- next kadence.requests offset to consume
    owner         text    NOT NULL DEFAULT '',
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per workflow id: the run that is open or ran last.
CREATE TABLE current_executions (
    namespace        text NOT NULL,
    workflow_id      text NOT NULL,
    run_id           text NOT NULL,
    shard_id         integer NOT NULL,
    status           text NOT NULL,
    start_request_id text NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, workflow_id)
);

CREATE TABLE executions (
    namespace      text NOT NULL,
    workflow_id    text NOT NULL,
    run_id         text NOT NULL,
    shard_id       integer NOT NULL,
    workflow_type  text NOT NULL,
    task_queue     text NOT NULL,
    status         text NOT NULL,
    start_time     bigint NOT NULL,            -- ms since the epoch
    close_time     bigint,
    next_event_id  bigint NOT NULL,
    state          bytea NOT NULL,             -- the mutable-state snapshot (JSON)
    undispatched   boolean NOT NULL DEFAULT false, -- has scheduled tasks no worker has started
    PRIMARY KEY (run_id)
);
CREATE INDEX executions_by_workflow ON executions (namespace, workflow_id, start_time DESC);
CREATE INDEX executions_undispatched ON executions (shard_id) WHERE undispatched;
CREATE INDEX executions_open ON executions (namespace, status, start_time DESC);

CREATE TABLE history_events (
    run_id     text   NOT NULL,
    event_id   bigint NOT NULL,
    data       bytea  NOT NULL,                -- kadence.HistoryEvent, single-object encoded
    PRIMARY KEY (run_id, event_id)
);

CREATE TABLE outbox (
    shard_id  integer NOT NULL,
    id        bigint  NOT NULL,                -- dense per shard, publication order
    topic     text    NOT NULL,
    key       bytea,
    value     bytea   NOT NULL,
    headers   bytea,                           -- JSON list of [name, value-hex] pairs
    PRIMARY KEY (shard_id, id)
);

CREATE TABLE timers (
    shard_id    integer NOT NULL,
    timer_key   text    NOT NULL,              -- run_id/kind/ref, unique per run
    fire_at     bigint  NOT NULL,              -- ms since the epoch
    namespace   text    NOT NULL,
    workflow_id text    NOT NULL,
    run_id      text    NOT NULL,
    kind        text    NOT NULL,
    ref         bigint  NOT NULL,
    attempt     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (shard_id, timer_key)
);
CREATE INDEX timers_due ON timers (shard_id, fire_at);
CREATE INDEX timers_by_run ON timers (run_id);

CREATE TABLE activity_heartbeats (
    run_id             text    NOT NULL,
    scheduled_event_id bigint  NOT NULL,
    attempt            integer NOT NULL,
    details            text,
    heartbeat_time     bigint  NOT NULL,
    PRIMARY KEY (run_id, scheduled_event_id)
);

CREATE TABLE task_backlog (
    task_id     text    NOT NULL PRIMARY KEY,
    partition   integer NOT NULL,
    namespace   text    NOT NULL,
    task_queue  text    NOT NULL,
    kind        text    NOT NULL,              -- 'workflow' or 'activity'
    payload     bytea   NOT NULL,              -- kadence.WorkflowTask / kadence.ActivityTask
    created_at  timestamptz NOT NULL DEFAULT now(),
    seq         bigserial
);
CREATE INDEX task_backlog_queue ON task_backlog (namespace, task_queue, kind, seq);

CREATE TABLE matching_owners (
    partition  integer PRIMARY KEY,
    address    text    NOT NULL,               -- http://host:port of the owning matching instance
    owner      text    NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
