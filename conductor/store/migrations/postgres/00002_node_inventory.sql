-- +goose Up
-- What in-band inspection found, as Ironic keeps it (GET /v1/nodes/{node}/inventory).
CREATE TABLE node_inventory (
    node_uuid   TEXT PRIMARY KEY REFERENCES nodes (uuid) ON DELETE CASCADE,
    inventory   TEXT NOT NULL,
    plugin_data TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- +goose Down
DROP TABLE node_inventory;
