-- Webhook subscriptions. The signing secret is sealed with the master key.
CREATE TABLE subscriptions (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    topics        TEXT NOT NULL,
    callback_url  TEXT NOT NULL,
    sealed_secret TEXT NOT NULL,
    -- Only events after this id are delivered: a subscription starts at its creation.
    after_event_id BIGINT NOT NULL DEFAULT 0,
    created_at    TIMESTAMP NOT NULL
);

-- One row per (subscription, event): at-least-once delivery with retries and dead-lettering.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL,
    event_id        BIGINT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error      TEXT,
    created_at      TIMESTAMP NOT NULL,
    delivered_at    TIMESTAMP,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
