DELETE FROM instance_meta WHERE name = 'audit_chain_legacy_max_id';
DROP TABLE audit_chain_head;
DROP INDEX audit_log_role_chain_seq;
ALTER TABLE audit_log DROP COLUMN hash;
ALTER TABLE audit_log DROP COLUMN prev_hash;
ALTER TABLE audit_log DROP COLUMN chain_seq;
