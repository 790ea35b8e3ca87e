-- A user's token epoch: every access token carries the epoch it was issued under, and a change
-- of roles or enabled state raises it, so every older token of the account is refused at once.
ALTER TABLE users ADD COLUMN token_epoch BIGINT NOT NULL DEFAULT 0;
