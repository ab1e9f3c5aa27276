-- The W3C trace context of a backlogged task (matching's dispatch span), so a task that
-- waited in the backlog still reaches the worker inside its workflow's trace. NULL when
-- tracing was off.
ALTER TABLE task_backlog ADD COLUMN traceparent text;
