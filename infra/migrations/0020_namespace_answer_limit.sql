-- A namespace's own rate of worker answers (task answers, heartbeats, query answers) on each
-- frontend process (services/frontend/quotas.py). NULL: the cluster's default
-- (KADENCE_NAMESPACE_ANSWER_RPS). Older builds read namespaces by column name and ignore it.
ALTER TABLE namespaces
    ADD COLUMN answer_rps_limit double precision CHECK (answer_rps_limit > 0);
