-- Shared audit trail: who did what, when and from where. Never holds a secret value.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    occurred_at TIMESTAMP NOT NULL,
    role        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    source_addr TEXT,
    request_id  TEXT,
    details     TEXT
);
CREATE INDEX audit_log_role_id ON audit_log (role, id);
CREATE INDEX audit_log_actor_id ON audit_log (actor, id);
