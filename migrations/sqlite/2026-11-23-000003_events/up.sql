-- Durable events. A role publishes by inserting here in the same transaction as the change
-- that caused the event, so an event exists exactly when its change committed; the notify role
-- delivers them (webhooks, live stream, replay).
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT NOT NULL,
    payload    TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX events_topic_id ON events (topic, id);
