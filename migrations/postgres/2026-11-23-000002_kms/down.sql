DROP TABLE api_keys;
DROP TABLE revoked_tokens;
DROP TABLE refresh_tokens;
DROP TABLE signing_keys;
DROP TABLE users;
DROP TABLE instance_meta;
