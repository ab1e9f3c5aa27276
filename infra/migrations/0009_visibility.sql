-- Visibility: one row per workflow run, a projection of kadence.history kept by the
-- visibility consumer (services/visibility). Never written by history: it is rebuilt from
-- the topic, and lags it a little. Times are ms since the epoch, as in executions.
CREATE TABLE visibility (
    namespace          text   NOT NULL,
    workflow_id        text   NOT NULL,
    run_id             text   NOT NULL,
    workflow_type      text,                       -- NULL: the run was first seen mid-history
    task_queue         text,
    status             text   NOT NULL,
    start_time         bigint,
    execution_time     bigint,
    close_time         bigint,
    history_length     bigint NOT NULL DEFAULT 0,
    last_event_id      bigint NOT NULL,            -- the newest event applied: redelivered ones are skipped
    parent_workflow_id text,                       -- for child workflows, later
    parent_run_id      text,
    memo               jsonb,
    search_attributes  jsonb,                      -- custom attributes, typed by search_attributes
    PRIMARY KEY (namespace, run_id)
);
-- The list orders and filters users ask for most; the run id breaks ties in keyset paging.
-- Lists sort a NULL time as the largest bigint (services/visibility/sql.py), hence the
-- expressions.
CREATE INDEX visibility_by_start ON visibility
    (namespace, (COALESCE(start_time, 9223372036854775807)) DESC, run_id DESC);
CREATE INDEX visibility_by_status ON visibility
    (namespace, status, (COALESCE(start_time, 9223372036854775807)) DESC, run_id DESC);
CREATE INDEX visibility_by_type ON visibility
    (namespace, workflow_type, (COALESCE(start_time, 9223372036854775807)) DESC, run_id DESC);
CREATE INDEX visibility_by_close ON visibility
    (namespace, (COALESCE(close_time, 9223372036854775807)) DESC, run_id DESC);
CREATE INDEX visibility_by_workflow ON visibility (namespace, workflow_id);
CREATE INDEX visibility_attributes ON visibility USING gin (search_attributes jsonb_path_ops);

-- Custom search attributes registered per namespace, with their type. The built-in ones
-- (WorkflowId, RunId, WorkflowType, TaskQueue, ExecutionStatus, StartTime, CloseTime,
-- ExecutionTime, HistoryLength) are columns above and never rows here.
CREATE TABLE search_attributes (
    namespace  text NOT NULL,
    name       text NOT NULL,
    type       text NOT NULL CHECK (type IN ('keyword', 'text', 'int', 'double', 'bool', 'datetime',
                                             'keyword_list')),
    PRIMARY KEY (namespace, name)
);
