DROP TABLE secret_versions;
DROP TABLE secret_sets;
