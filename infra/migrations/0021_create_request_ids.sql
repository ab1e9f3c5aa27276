-- The request id of the create that made a namespace or a schedule (NULL: none given, or
-- made before this column): a create sent again with the same id, its first answer lost, is
-- answered as its first was rather than "already exists" (services/frontend/admin.py).
-- Older builds insert by column name and ignore it.
ALTER TABLE namespaces ADD COLUMN create_request_id text;
ALTER TABLE schedules ADD COLUMN create_request_id text;

-- A schedule deleted with a request id leaves that id here for a day: the delete sent again
-- (its first answer lost; HTTP clients also resend a DELETE on a dropped keep-alive
-- connection on their own) is answered ok, not 404. Older builds never read it.
CREATE TABLE deleted_schedules (
    namespace   text        NOT NULL,
    schedule_id text        NOT NULL,
    request_id  text        NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, schedule_id, request_id)
);
