-- +goose Up
CREATE TABLE nodes (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid                   TEXT NOT NULL UNIQUE,
    name                   TEXT UNIQUE,
    driver                 TEXT NOT NULL,
    interfaces             TEXT NOT NULL,
    driver_info            TEXT,
    driver_internal_info   TEXT,
    instance_info          TEXT,
    properties             TEXT,
    extra                  TEXT,
    network_data           TEXT,
    deploy_step            TEXT,
    clean_step             TEXT,
    raid_config            TEXT,
    target_raid_config     TEXT,
    traits                 TEXT,
    instance_uuid          TEXT UNIQUE,
    resource_class         TEXT,
    conductor_group        TEXT NOT NULL DEFAULT '',
    description            TEXT,
    owner                  TEXT,
    lessee                 TEXT,
    chassis_uuid           TEXT,
    shard                  TEXT,
    provision_state        TEXT NOT NULL,
    target_provision_state TEXT,
    provision_updated_at   TEXT,
    last_error             TEXT,
    power_state            TEXT,
    target_power_state     TEXT,
    maintenance            BOOLEAN NOT NULL DEFAULT FALSE,
    maintenance_reason     TEXT,
    fault                  TEXT,
    protected              BOOLEAN NOT NULL DEFAULT FALSE,
    protected_reason       TEXT,
    retired                BOOLEAN NOT NULL DEFAULT FALSE,
    retired_reason         TEXT,
    automated_clean        BOOLEAN,
    console_enabled        BOOLEAN NOT NULL DEFAULT FALSE,
    boot_mode              TEXT,
    secure_boot            BOOLEAN,
    inspection_started_at  TEXT,
    inspection_finished_at TEXT,
    reservation            TEXT,
    conductor              TEXT,
    created_at             TEXT NOT NULL,
    updated_at             TEXT,
    version                INTEGER NOT NULL
);
CREATE INDEX nodes_provision_state ON nodes (provision_state);
CREATE INDEX nodes_reservation ON nodes (reservation);

CREATE TABLE ports (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid                  TEXT NOT NULL UNIQUE,
    address               TEXT NOT NULL UNIQUE,
    node_uuid             TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    pxe_enabled           BOOLEAN NOT NULL DEFAULT TRUE,
    local_link_connection TEXT,
    physical_network      TEXT,
    extra                 TEXT,
    internal_info         TEXT,
    is_smartnic           BOOLEAN NOT NULL DEFAULT FALSE,
    name                  TEXT UNIQUE,
    created_at            TEXT NOT NULL,
    updated_at            TEXT,
    version               INTEGER NOT NULL
);
CREATE INDEX ports_node_uuid ON ports (node_uuid);

CREATE TABLE conductors (
    hostname        TEXT PRIMARY KEY,
    conductor_group TEXT NOT NULL DEFAULT '',
    drivers         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

-- +goose Down
DROP TABLE conductors;
DROP TABLE ports;
DROP TABLE nodes;
