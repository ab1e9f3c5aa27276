-- Visibility rows carry the run's memo (set by its start) since the projection fills it in;
-- rows projected before then get it from their run's mutable state, where it is kept as
-- JSON text. A memo that is not a JSON object is left out, as the projection does (CASE:
-- the text is cast only once known to be JSON).
UPDATE visibility v
SET memo = m.memo
FROM (
    SELECT run_id, CASE WHEN pg_input_is_valid(t.text, 'jsonb') THEN t.text::jsonb END AS memo
    FROM (SELECT run_id, convert_from(state, 'UTF8')::jsonb ->> 'memo' AS text FROM executions) AS t
    WHERE t.text IS NOT NULL
) AS m
WHERE m.run_id = v.run_id AND v.memo IS NULL AND jsonb_typeof(m.memo) = 'object';
