-- One second factor per account: the TOTP secret sealed with the master key (bound to the
-- account), a pending secret while (re-)enrolling, the last accepted time step (a code works
-- once) and the failures in a row behind the lockout.
CREATE TABLE twofa_factors (
    username       TEXT PRIMARY KEY,
    uid            BIGINT NOT NULL,
    active_secret  TEXT,
    pending_secret TEXT,
    last_step      BIGINT NOT NULL,
    failures       INTEGER NOT NULL,
    locked_until   TIMESTAMP,
    activated_at   TIMESTAMP,
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL
);

-- One-time recovery codes, stored only as keyed hashes.
CREATE TABLE twofa_recovery_codes (
    username  TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    used_at   TIMESTAMP,
    PRIMARY KEY (username, code_hash)
);
