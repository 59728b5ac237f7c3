package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
)

// PutInventory stores (or replaces) what inspection found on a node: the
// agent's inventory and the rest of its data, as JSON.
func (d *DB) PutInventory(ctx context.Context, uuid string, inventory, pluginData []byte, at time.Time) error {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store inventory of node %s: %w", uuid, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, d.rebind("DELETE FROM node_inventory WHERE node_uuid = ?"), uuid); err != nil {
		return fmt.Errorf("store inventory of node %s: %w", uuid, err)
	}
	if _, err := tx.ExecContext(ctx, d.rebind("INSERT INTO node_inventory (node_uuid, inventory, plugin_data, created_at) VALUES (?, ?, ?, ?)"),
		uuid, string(inventory), string(pluginData), fmtTime(at)); err != nil {
		return fmt.Errorf("store inventory of node %s: %w", uuid, err)
	}
	return tx.Commit()
}

// Inventory returns a node's stored inventory and plugin data; an error
// of kind node.ErrNotFound when inspection never stored any.
func (d *DB) Inventory(ctx context.Context, uuid string) (inventory, pluginData []byte, err error) {
	var inv, pd string
	err = d.sql.QueryRowContext(ctx, d.rebind("SELECT inventory, plugin_data FROM node_inventory WHERE node_uuid = ?"), uuid).Scan(&inv, &pd)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, node.Errorf(node.ErrNotFound, "Inventory for node %s was not found.", uuid)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read inventory of node %s: %w", uuid, err)
	}
	return []byte(inv), []byte(pd), nil
}
