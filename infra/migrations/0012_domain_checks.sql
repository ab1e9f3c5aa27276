-- The typed domain (issue 16) in the schema: the status and kind columns take only the
-- values of their enums in kadence_protocol/enums.py (RunStatus, TimerKind, TaskKind;
-- tests/unit/test_domain_migration.py keeps the lists equal), and two indexes no query uses
-- are dropped.
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
