-- Screenplay elements. A sequence number is unique per element type (the constraint, not the
-- code, guarantees it: concurrent writers that pick the same number retry).
CREATE TABLE sequence_elements (
    element_type    TEXT NOT NULL,
    element_id      BIGINT NOT NULL,
    sequence_number BIGINT NOT NULL,
    current_version INTEGER NOT NULL,
    comment         TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (element_type, element_id),
    UNIQUE (element_type, sequence_number)
);
-- Finds the types an element id names (reorder without elementType).
CREATE INDEX sequence_elements_by_id ON sequence_elements (element_id);

-- Every version of an element; version 1 is the element's creation (no data).
CREATE TABLE sequence_versions (
    element_type   TEXT NOT NULL,
    element_id     BIGINT NOT NULL,
    version_number INTEGER NOT NULL,
    comment        TEXT NOT NULL,
    data           TEXT,
    created_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (element_type, element_id, version_number)
);

-- The transactional outbox towards search: written in the transaction of the change, delivered
-- in id order per element, deleted once search has it. `failed` rows were refused for good.
CREATE TABLE sequence_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    element_type    TEXT NOT NULL,
    element_id      BIGINT NOT NULL,
    operation       TEXT NOT NULL,
    document        TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    lease_until     TIMESTAMP,
    last_error      TEXT,
    created_at      TIMESTAMP NOT NULL
);
CREATE INDEX sequence_outbox_pending ON sequence_outbox (status, element_type, element_id, id);
