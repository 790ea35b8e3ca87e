DROP TABLE sequence_outbox;
DROP TABLE sequence_versions;
DROP TABLE sequence_elements;
