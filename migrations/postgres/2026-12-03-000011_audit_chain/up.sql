-- A hash chain per role over the audit trail: every record carries its place in its role's
-- chain, the MAC of the record before it and its own MAC (keyed from the master key, so a
-- database alone cannot recompute a chain after an edit). NULL in records written before.
ALTER TABLE audit_log
    ADD COLUMN chain_seq BIGINT,
    ADD COLUMN prev_hash TEXT,
    ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_log_role_chain_seq ON audit_log (role, chain_seq);

-- The last link of each role's chain, updated in the transaction that appends a record.
CREATE TABLE audit_chain_head (
    role      TEXT PRIMARY KEY,
    last_seq  BIGINT NOT NULL,
    last_hash TEXT NOT NULL
);

-- Records up to this id were written before chaining: they are chained once, when their
-- role's head is created. An unchained record above it is never sealed: it is a finding.
INSERT INTO instance_meta (name, value)
SELECT 'audit_chain_legacy_max_id', CAST(COALESCE(MAX(id), 0) AS TEXT) FROM audit_log;
