-- A service's secret set: which version is current, and whether it is (softly) deleted.
CREATE TABLE secret_sets (
    service_name    TEXT PRIMARY KEY,
    current_version INTEGER NOT NULL,
    deleted_at      TIMESTAMP,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);

-- Every version's name/value map, sealed with the master key (bound to service and version).
CREATE TABLE secret_versions (
    service_name  TEXT NOT NULL,
    version       INTEGER NOT NULL,
    sealed_values TEXT NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    created_by    TEXT NOT NULL,
    PRIMARY KEY (service_name, version)
);
