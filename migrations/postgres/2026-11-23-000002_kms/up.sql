-- Facts about this installation, e.g. the master-key check value.
CREATE TABLE instance_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);

-- Ed25519 signing keys: the private half sealed with the master key.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    private_key   TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    retired_at    TIMESTAMP,
    publish_until TIMESTAMP
);

-- Refresh tokens are stored only as keyed hashes; a family is one login session.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL,
    username   TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at    TIMESTAMP,
    revoked_at TIMESTAMP
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_username ON refresh_tokens (username);

-- Access-token ids revoked before they expire (logout).
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at TIMESTAMP NOT NULL
);

-- API keys: keyed hash for O(1) verification, sealed copy for retrieval by its owner.
CREATE TABLE api_keys (
    id           BIGSERIAL PRIMARY KEY,
    service_name TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    sealed_key   TEXT NOT NULL,
    key_prefix   TEXT NOT NULL,
    state        TEXT NOT NULL,
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   TIMESTAMP NOT NULL,
    expires_at   TIMESTAMP,
    valid_until  TIMESTAMP,
    revoked_at   TIMESTAMP
);
CREATE UNIQUE INDEX api_keys_one_active ON api_keys (service_name) WHERE state = 'active';
CREATE INDEX api_keys_service ON api_keys (service_name);
