-- Per-namespace limits of the frontend (services/frontend/quotas.py): a namespace's own request
-- rate, open long polls and visibility query rate, each per frontend process. NULL: the
-- cluster's default (KADENCE_NAMESPACE_RPS, ...). Older builds read namespaces with SELECT *
-- and by column name, so the added columns do not disturb them during a rolling upgrade.
ALTER TABLE namespaces
    ADD COLUMN rps_limit double precision CHECK (rps_limit > 0),
    ADD COLUMN concurrent_poll_limit integer CHECK (concurrent_poll_limit > 0),
    ADD COLUMN visibility_rps_limit double precision CHECK (visibility_rps_limit > 0);
