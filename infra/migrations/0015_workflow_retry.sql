-- The workflow retry policy (services/history/retry.py): a retried run's first workflow
-- task waits out the backoff on a durable timer of kind 'wf_backoff'.
ALTER TABLE timers DROP CONSTRAINT timers_kind_check;
ALTER TABLE timers ADD CONSTRAINT timers_kind_check
    CHECK (kind IN ('user_timer', 'wf_timeout', 'wt_timeout', 'wt_retry', 'wf_backoff',
                    'act_s2c', 'act_s2s', 'act_stc', 'act_hb', 'act_retry'))
    NOT VALID;
ALTER TABLE timers VALIDATE CONSTRAINT timers_kind_check;
