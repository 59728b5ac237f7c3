package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
)

const nodeColumns = `id, uuid, name, driver, interfaces, driver_info, driver_internal_info, instance_info,
properties, extra, network_data, deploy_step, clean_step, raid_config, target_raid_config, traits,
instance_uuid, resource_class, conductor_group, description, owner, lessee, chassis_uuid, shard,
provision_state, target_provision_state, provision_updated_at, last_error, power_state, target_power_state,
maintenance, maintenance_reason, fault, protected, protected_reason, retired, retired_reason,
automated_clean, console_enabled, boot_mode, secure_boot, inspection_started_at, inspection_finished_at,
reservation, conductor, created_at, updated_at, version`

// nodeWriteColumns are the columns UpdateNode sets (all but id, uuid,
// created_at).
var nodeWriteColumns = []string{"name", "driver", "interfaces", "driver_info", "driver_internal_info",
	"instance_info", "properties", "extra", "network_data", "deploy_step", "clean_step", "raid_config",
	"target_raid_config", "traits", "instance_uuid", "resource_class", "conductor_group", "description",
	"owner", "lessee", "chassis_uuid", "shard", "provision_state", "target_provision_state",
	"provision_updated_at", "last_error", "power_state", "target_power_state", "maintenance",
	"maintenance_reason", "fault", "protected", "protected_reason", "retired", "retired_reason",
	"automated_clean", "console_enabled", "boot_mode", "secure_boot", "inspection_started_at",
	"inspection_finished_at", "reservation", "conductor", "updated_at", "version"}

type interfacesJSON struct {
	Bios       string `json:"bios,omitempty"`
	Boot       string `json:"boot,omitempty"`
	Console    string `json:"console,omitempty"`
	Deploy     string `json:"deploy,omitempty"`
	Inspect    string `json:"inspect,omitempty"`
	Management string `json:"management,omitempty"`
	Network    string `json:"network,omitempty"`
	Power      string `json:"power,omitempty"`
	Raid       string `json:"raid,omitempty"`
	Rescue     string `json:"rescue,omitempty"`
	Storage    string `json:"storage,omitempty"`
	Vendor     string `json:"vendor,omitempty"`
}

func encMap(m map[string]any) (sql.NullString, error) {
	if len(m) == 0 {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return sql.NullString{}, fmt.Errorf("encode json column: %w", err)
	}
	return sql.NullString{String: string(b), Valid: true}, nil
}

func decMap(s sql.NullString) (map[string]any, error) {
	if !s.Valid || s.String == "" || s.String == "{}" || s.String == "null" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s.String), &m); err != nil {
		return nil, fmt.Errorf("decode json column: %w", err)
	}
	return m, nil
}

// nodeArgs returns the values of nodeWriteColumns for n.
func nodeArgs(n *node.Node) ([]any, error) {
	ifs, err := json.Marshal(interfacesJSON(n.Interfaces))
	if err != nil {
		return nil, err
	}
	maps := []map[string]any{n.DriverInfo, n.DriverInternalInfo, n.InstanceInfo, n.Properties, n.Extra,
		n.NetworkData, n.DeployStep, n.CleanStep, n.RaidConfig, n.TargetRaidConfig}
	enc := make([]any, len(maps))
	for i, m := range maps {
		if enc[i], err = encMap(m); err != nil {
			return nil, err
		}
	}
	traits := sql.NullString{}
	if len(n.Traits) > 0 {
		b, _ := json.Marshal(n.Traits)
		traits = sql.NullString{String: string(b), Valid: true}
	}
	args := []any{nullStr(n.Name), n.Driver, string(ifs)}
	args = append(args, enc...)
	args = append(args, traits, nullStr(n.InstanceUUID), nullStr(n.ResourceClass), n.ConductorGroup,
		nullStr(n.Description), nullStr(n.Owner), nullStr(n.Lessee), nullStr(n.ChassisUUID), nullStr(n.Shard),
		string(n.ProvisionState), nullStr(string(n.TargetProvisionState)), fmtTime(n.ProvisionUpdatedAt),
		nullStr(n.LastError), nullStr(string(n.PowerState)), nullStr(string(n.TargetPowerState)),
		n.Maintenance, nullStr(n.MaintenanceReason), nullStr(n.Fault), n.Protected, nullStr(n.ProtectedReason),
		n.Retired, nullStr(n.RetiredReason), nullBool(n.AutomatedClean), n.ConsoleEnabled, nullStr(n.BootMode),
		nullBool(n.SecureBoot), fmtTime(n.InspectionStartedAt), fmtTime(n.InspectionFinishedAt),
		nullStr(n.Reservation), nullStr(n.Conductor), fmtTime(n.UpdatedAt), n.Version)
	return args, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanNode(r scanner) (*node.Node, error) {
	var (
		n                                                                    node.Node
		name, instUUID, rc, desc, owner, lessee, chassis, shard, tps, le, ps sql.NullString
		tpws, mr, fault, pr, rr, bm, resv, cond, traits                      sql.NullString
		pua, isa, ifa, ca, ua                                                sql.NullString
		ifs                                                                  string
		ac, sb                                                               sql.NullBool
		di, dii, ii, props, extra, nd, ds, cs, raid, traid                   sql.NullString
	)
	err := r.Scan(&n.ID, &n.UUID, &name, &n.Driver, &ifs, &di, &dii, &ii, &props, &extra, &nd, &ds, &cs,
		&raid, &traid, &traits, &instUUID, &rc, &n.ConductorGroup, &desc, &owner, &lessee, &chassis, &shard,
		&n.ProvisionState, &tps, &pua, &le, &ps, &tpws, &n.Maintenance, &mr, &fault, &n.Protected, &pr,
		&n.Retired, &rr, &ac, &n.ConsoleEnabled, &bm, &sb, &isa, &ifa, &resv, &cond, &ca, &ua, &n.Version)
	if err != nil {
		return nil, err
	}
	var ij interfacesJSON
	if err := json.Unmarshal([]byte(ifs), &ij); err != nil {
		return nil, fmt.Errorf("decode interfaces of node %s: %w", n.UUID, err)
	}
	n.Interfaces = node.Interfaces(ij)
	n.Name, n.InstanceUUID, n.ResourceClass, n.Description = name.String, instUUID.String, rc.String, desc.String
	n.Owner, n.Lessee, n.ChassisUUID, n.Shard = owner.String, lessee.String, chassis.String, shard.String
	n.TargetProvisionState, n.LastError = node.State(tps.String), le.String
	n.PowerState, n.TargetPowerState = node.PowerState(ps.String), node.PowerState(tpws.String)
	n.MaintenanceReason, n.Fault, n.ProtectedReason, n.RetiredReason = mr.String, fault.String, pr.String, rr.String
	n.BootMode, n.Reservation, n.Conductor = bm.String, resv.String, cond.String
	n.AutomatedClean, n.SecureBoot = boolPtr(ac), boolPtr(sb)
	dst := []*map[string]any{&n.DriverInfo, &n.DriverInternalInfo, &n.InstanceInfo, &n.Properties, &n.Extra,
		&n.NetworkData, &n.DeployStep, &n.CleanStep, &n.RaidConfig, &n.TargetRaidConfig}
	for i, src := range []sql.NullString{di, dii, ii, props, extra, nd, ds, cs, raid, traid} {
		m, err := decMap(src)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.UUID, err)
		}
		*dst[i] = m
	}
	if traits.Valid && traits.String != "" {
		if err := json.Unmarshal([]byte(traits.String), &n.Traits); err != nil {
			return nil, fmt.Errorf("decode traits of node %s: %w", n.UUID, err)
		}
	}
	tdst := []*time.Time{&n.ProvisionUpdatedAt, &n.InspectionStartedAt, &n.InspectionFinishedAt, &n.CreatedAt, &n.UpdatedAt}
	for i, s := range []sql.NullString{pua, isa, ifa, ca, ua} {
		t, err := parseTime(s)
		if err != nil {
			return nil, err
		}
		*tdst[i] = t
	}
	return &n, nil
}

// CreateNode inserts n, filling its ID, CreatedAt and Version. A duplicate
// UUID, name or instance UUID is an error wrapping node.ErrDuplicate.
func (d *DB) CreateNode(ctx context.Context, n *node.Node) error {
	n.CreatedAt = d.now()
	n.UpdatedAt = time.Time{} // null on a fresh node, as in Ironic
	n.Version = 1
	args, err := nodeArgs(n)
	if err != nil {
		return err
	}
	cols := append([]string{"uuid", "created_at"}, nodeWriteColumns...)
	args = append([]any{n.UUID, fmtTime(n.CreatedAt)}, args...)
	q := "INSERT INTO nodes (" + strings.Join(cols, ", ") + ") VALUES (" + placeholders(len(cols)) + ") RETURNING id"
	if err := d.sql.QueryRowContext(ctx, d.rebind(q), args...).Scan(&n.ID); err != nil {
		if isUnique(err) {
			return duplicateNodeError(err, n)
		}
		return fmt.Errorf("insert node %s: %w", n.UUID, err)
	}
	return nil
}

func duplicateNodeError(err error, n *node.Node) error {
	s := err.Error()
	switch {
	case strings.Contains(s, "name"):
		return node.Errorf(node.ErrDuplicate, "A node with name %s already exists.", n.Name)
	case strings.Contains(s, "instance_uuid"):
		return node.Errorf(node.ErrDuplicate, "Instance %s is already associated with a node.", n.InstanceUUID)
	}
	return node.Errorf(node.ErrDuplicate, "A node with UUID %s already exists.", n.UUID)
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)

// IsUUID reports whether s looks like a UUID (Ironic's is_uuid_like).
func IsUUID(s string) bool { return uuidRE.MatchString(s) }

// GetNode returns the node whose UUID or name is ident.
func (d *DB) GetNode(ctx context.Context, ident string) (*node.Node, error) {
	col := "name"
	if IsUUID(ident) {
		col = "uuid"
		ident = strings.ToLower(ident)
	}
	rows, err := d.queryPrepared(ctx, "SELECT "+nodeColumns+" FROM nodes WHERE "+col+" = ?", ident)
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", ident, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("get node %s: %w", ident, err)
		}
		return nil, notFound("Node", ident)
	}
	n, err := scanNode(rows)
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", ident, err)
	}
	return n, rows.Close()
}

// NodeQuery filters and pages ListNodes. Zero fields do not filter.
type NodeQuery struct {
	ProvisionState node.State
	Maintenance    *bool
	Associated     *bool
	Driver         string
	ResourceClass  string
	ConductorGroup *string
	Fault          string
	Owner          string
	Lessee         string
	InstanceUUID   string
	Reserved       *bool
	UUIDs          []string

	Limit   int    // 0: no limit
	Marker  string // UUID of the last node of the previous page
	SortKey string // column; "id" if empty
	SortDir string // "asc" (default) or "desc"
}

// SortableNodeKeys are the node fields the list can be sorted by.
func SortableNodeKeys() []string {
	return []string{"id", "uuid", "name", "created_at", "updated_at", "provision_state", "power_state",
		"driver", "maintenance", "provision_updated_at", "instance_uuid", "resource_class",
		"conductor_group", "owner", "lessee", "reservation", "conductor", "target_provision_state"}
}

// ListNodes returns the nodes matching q, in sort order.
func (d *DB) ListNodes(ctx context.Context, q NodeQuery) ([]*node.Node, error) {
	where, args := []string{}, []any{}
	add := func(cond string, v ...any) { where = append(where, cond); args = append(args, v...) }
	if q.ProvisionState != "" {
		add("provision_state = ?", string(q.ProvisionState))
	}
	if q.Maintenance != nil {
		add("maintenance = ?", *q.Maintenance)
	}
	if q.Associated != nil {
		if *q.Associated {
			add("instance_uuid IS NOT NULL")
		} else {
			add("instance_uuid IS NULL")
		}
	}
	if q.Reserved != nil {
		if *q.Reserved {
			add("reservation IS NOT NULL")
		} else {
			add("reservation IS NULL")
		}
	}
	if q.Driver != "" {
		add("driver = ?", q.Driver)
	}
	if q.ResourceClass != "" {
		add("resource_class = ?", q.ResourceClass)
	}
	if q.ConductorGroup != nil {
		add("conductor_group = ?", strings.ToLower(*q.ConductorGroup))
	}
	if q.Fault != "" {
		add("fault = ?", q.Fault)
	}
	if q.Owner != "" {
		add("owner = ?", q.Owner)
	}
	if q.Lessee != "" {
		add("lessee = ?", q.Lessee)
	}
	if q.InstanceUUID != "" {
		add("instance_uuid = ?", q.InstanceUUID)
	}
	if len(q.UUIDs) > 0 {
		ph := placeholders(len(q.UUIDs))
		vals := make([]any, len(q.UUIDs))
		for i, u := range q.UUIDs {
			vals[i] = u
		}
		add("uuid IN ("+ph+")", vals...)
	}
	key, dir, err := sortSpec(q.SortKey, q.SortDir, SortableNodeKeys())
	if err != nil {
		return nil, err
	}
	if q.Marker != "" {
		cond, margs, err := d.markerCond(ctx, "nodes", key, dir, q.Marker)
		if err != nil {
			return nil, err
		}
		add(cond, margs...)
	}
	stmt := "SELECT " + nodeColumns + " FROM nodes"
	if len(where) > 0 {
		stmt += " WHERE " + strings.Join(where, " AND ")
	}
	stmt += orderBy(key, dir)
	if q.Limit > 0 {
		stmt += fmt.Sprintf(" LIMIT %d", q.Limit)
	}
	return collect(ctx, d, "list nodes", stmt, args, scanNode)
}

func sortSpec(key, dir string, allowed []string) (string, string, error) {
	if key == "" {
		key = "id"
	}
	ok := false
	for _, a := range allowed {
		ok = ok || a == key
	}
	if !ok {
		return "", "", node.Errorf(node.ErrInvalid, "The sort_key value %s is an invalid field for sorting", key)
	}
	switch dir {
	case "", "asc":
		dir = "asc"
	case "desc":
	default:
		return "", "", node.Errorf(node.ErrInvalid, "Invalid sort direction: %s. Acceptable values are 'asc' or 'desc'", dir)
	}
	return key, dir, nil
}

func orderBy(key, dir string) string {
	if key == "id" {
		return " ORDER BY id " + dir
	}
	// NULLs first in both dialects, then id as the tie-breaker.
	return fmt.Sprintf(" ORDER BY (%s IS NOT NULL) %s, %s %s, id %s", key, dir, key, dir, dir)
}

// markerCond builds the keyset condition for rows after the marker row.
func (d *DB) markerCond(ctx context.Context, table, key, dir, marker string) (string, []any, error) {
	var id int64
	var val sql.NullString
	q := fmt.Sprintf("SELECT id, CAST(%s AS TEXT) FROM %s WHERE uuid = ?", key, table)
	if err := d.sql.QueryRowContext(ctx, d.rebind(q), strings.ToLower(marker)).Scan(&id, &val); err != nil {
		if isNoRows(err) {
			return "", nil, node.Errorf(node.ErrInvalid, "Invalid marker: %s", marker)
		}
		return "", nil, fmt.Errorf("resolve marker %s: %w", marker, err)
	}
	op := ">"
	if dir == "desc" {
		op = "<"
	}
	if key == "id" {
		return "id " + op + " ?", []any{id}, nil
	}
	cast := fmt.Sprintf("CAST(%s AS TEXT)", key)
	if !val.Valid {
		// Marker sorts among the NULLs: later NULLs by id, then all non-NULLs.
		if dir == "asc" {
			return fmt.Sprintf("((%s IS NULL AND id > ?) OR %s IS NOT NULL)", key, key), []any{id}, nil
		}
		return fmt.Sprintf("(%s IS NULL AND id < ?)", key), []any{id}, nil
	}
	if dir == "asc" {
		return fmt.Sprintf("(%s IS NOT NULL AND (%s > ? OR (%s = ? AND id > ?)))", key, cast, cast), []any{val.String, val.String, id}, nil
	}
	return fmt.Sprintf("(%s IS NULL OR %s < ? OR (%s = ? AND id < ?))", key, cast, cast), []any{val.String, val.String, id}, nil
}

// UpdateNode writes n if the stored version still equals n.Version, then
// bumps n.Version and n.UpdatedAt. A moved version is node.ErrConflict; a
// missing node is node.ErrNotFound.
func (d *DB) UpdateNode(ctx context.Context, n *node.Node) error {
	prev, prevUpdated := n.Version, n.UpdatedAt
	n.Version++
	n.UpdatedAt = d.now()
	args, err := nodeArgs(n)
	if err != nil {
		n.Version, n.UpdatedAt = prev, prevUpdated
		return err
	}
	set := make([]string, len(nodeWriteColumns))
	for i, c := range nodeWriteColumns {
		set[i] = c + " = ?"
	}
	args = append(args, n.UUID, prev)
	res, err := d.execPrepared(ctx, "UPDATE nodes SET "+strings.Join(set, ", ")+" WHERE uuid = ? AND version = ?", args...)
	if err == nil {
		var cnt int64
		if cnt, err = res.RowsAffected(); err == nil && cnt == 0 {
			err = d.missingOrConflict(ctx, "nodes", "Node", n.UUID)
		}
	} else if isUnique(err) {
		err = duplicateNodeError(err, n)
	} else {
		err = fmt.Errorf("update node %s: %w", n.UUID, err)
	}
	if err != nil {
		n.Version, n.UpdatedAt = prev, prevUpdated
	}
	return err
}

func (d *DB) missingOrConflict(ctx context.Context, table, kind, uuid string) error {
	var one int
	err := d.sql.QueryRowContext(ctx, d.rebind("SELECT 1 FROM "+table+" WHERE uuid = ?"), uuid).Scan(&one)
	if isNoRows(err) {
		return notFound(kind, uuid)
	}
	if err != nil {
		return fmt.Errorf("check %s %s: %w", kind, uuid, err)
	}
	return node.Errorf(node.ErrConflict, "%s %s was changed concurrently, retry the request.", kind, uuid)
}

// DeleteNode removes the node (its ports and inventory too) if its version is still
// version.
func (d *DB) DeleteNode(ctx context.Context, uuid string, version int64) error {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete node %s: %w", uuid, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, d.rebind("DELETE FROM ports WHERE node_uuid = ?"), uuid); err != nil {
		return fmt.Errorf("delete ports of node %s: %w", uuid, err)
	}
	if _, err := tx.ExecContext(ctx, d.rebind("DELETE FROM node_inventory WHERE node_uuid = ?"), uuid); err != nil {
		return fmt.Errorf("delete inventory of node %s: %w", uuid, err)
	}
	res, err := tx.ExecContext(ctx, d.rebind("DELETE FROM nodes WHERE uuid = ? AND version = ?"), uuid, version)
	if err != nil {
		return fmt.Errorf("delete node %s: %w", uuid, err)
	}
	if cnt, _ := res.RowsAffected(); cnt == 0 {
		return d.missingOrConflict(ctx, "nodes", "Node", uuid)
	}
	return tx.Commit()
}

// ReleaseReservations clears every reservation held by holder (a conductor
// restarting after a crash) and returns how many nodes it freed.
func (d *DB) ReleaseReservations(ctx context.Context, holder string) (int64, error) {
	res, err := d.exec(ctx, "UPDATE nodes SET reservation = NULL, version = version + 1 WHERE reservation = ?", holder)
	if err != nil {
		return 0, fmt.Errorf("release reservations of %s: %w", holder, err)
	}
	return res.RowsAffected()
}

// CountNodes returns the number of nodes.
func (d *DB) CountNodes(ctx context.Context) (int, error) {
	var n int
	err := d.sql.QueryRowContext(ctx, "SELECT COUNT(*) FROM nodes").Scan(&n)
	return n, err
}

// NodesInStates returns the nodes whose provision state is one of states.
func (d *DB) NodesInStates(ctx context.Context, states ...node.State) ([]*node.Node, error) {
	if len(states) == 0 {
		return nil, nil
	}
	args := make([]any, len(states))
	for i, s := range states {
		args[i] = string(s)
	}
	return collect(ctx, d, "list nodes by state",
		"SELECT "+nodeColumns+" FROM nodes WHERE provision_state IN ("+placeholders(len(states))+") ORDER BY id", args, scanNode)
}

// SetReservation sets (holder != "") or clears the node's reservation if
// its version is still n.Version. Reservations are bookkeeping, not
// changes an operator made, so updated_at stays as it is.
func (d *DB) SetReservation(ctx context.Context, n *node.Node, holder string) error {
	res, err := d.execPrepared(ctx, "UPDATE nodes SET reservation = ?, version = version + 1 WHERE uuid = ? AND version = ?",
		nullStr(holder), n.UUID, n.Version)
	if err != nil {
		return fmt.Errorf("reserve node %s: %w", n.UUID, err)
	}
	if cnt, _ := res.RowsAffected(); cnt == 0 {
		return d.missingOrConflict(ctx, "nodes", "Node", n.UUID)
	}
	n.Version++
	n.Reservation = holder
	return nil
}

// UpdateNodeInternal writes only n's driver_internal_info and
// provision_updated_at, if its version is unchanged: the cheap write of a
// heartbeat that records an agent's progress.
func (d *DB) UpdateNodeInternal(ctx context.Context, n *node.Node) error {
	dii, err := encMap(n.DriverInternalInfo)
	if err != nil {
		return err
	}
	now := d.now()
	res, err := d.execPrepared(ctx, "UPDATE nodes SET driver_internal_info = ?, provision_updated_at = ?, updated_at = ?, version = version + 1 WHERE uuid = ? AND version = ?",
		dii, fmtTime(n.ProvisionUpdatedAt), fmtTime(now), n.UUID, n.Version)
	if err != nil {
		return fmt.Errorf("update node %s: %w", n.UUID, err)
	}
	if cnt, _ := res.RowsAffected(); cnt == 0 {
		return d.missingOrConflict(ctx, "nodes", "Node", n.UUID)
	}
	n.Version++
	n.UpdatedAt = now
	return nil
}
