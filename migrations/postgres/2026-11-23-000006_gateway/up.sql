-- The gateway's live service registry: instances register themselves with a TTL and heartbeat.
CREATE TABLE registry (
    service       TEXT NOT NULL,
    url           TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    expires_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (service, url)
);
CREATE INDEX registry_expiry ON registry (expires_at);
