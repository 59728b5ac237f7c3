package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
)

const portColumns = `id, uuid, address, node_uuid, pxe_enabled, local_link_connection, physical_network,
extra, internal_info, is_smartnic, name, created_at, updated_at, version`

func scanPort(r scanner) (*node.Port, error) {
	var (
		p                     node.Port
		llc, pn, ex, ii, name sql.NullString
		ca, ua                sql.NullString
	)
	if err := r.Scan(&p.ID, &p.UUID, &p.Address, &p.NodeUUID, &p.PXEEnabled, &llc, &pn, &ex, &ii,
		&p.IsSmartNIC, &name, &ca, &ua, &p.Version); err != nil {
		return nil, err
	}
	p.PhysicalNetwork, p.Name = pn.String, name.String
	var err error
	if p.LocalLinkConnection, err = decMap(llc); err != nil {
		return nil, err
	}
	if p.Extra, err = decMap(ex); err != nil {
		return nil, err
	}
	if p.InternalInfo, err = decMap(ii); err != nil {
		return nil, err
	}
	if p.CreatedAt, err = parseTime(ca); err != nil {
		return nil, err
	}
	if p.UpdatedAt, err = parseTime(ua); err != nil {
		return nil, err
	}
	return &p, nil
}

func portArgs(p *node.Port) ([]any, error) {
	llc, err := encMap(p.LocalLinkConnection)
	if err != nil {
		return nil, err
	}
	ex, err := encMap(p.Extra)
	if err != nil {
		return nil, err
	}
	ii, err := encMap(p.InternalInfo)
	if err != nil {
		return nil, err
	}
	return []any{p.Address, p.NodeUUID, p.PXEEnabled, llc, nullStr(p.PhysicalNetwork), ex, ii, p.IsSmartNIC,
		nullStr(p.Name), fmtTime(p.UpdatedAt), p.Version}, nil
}

var portWriteColumns = []string{"address", "node_uuid", "pxe_enabled", "local_link_connection",
	"physical_network", "extra", "internal_info", "is_smartnic", "name", "updated_at", "version"}

func duplicatePortError(err error, p *node.Port) error {
	s := err.Error()
	switch {
	case strings.Contains(s, "address"):
		return node.Errorf(node.ErrDuplicate, "A port with MAC address %s already exists.", p.Address)
	case strings.Contains(s, "name"):
		return node.Errorf(node.ErrDuplicate, "A port with name %s already exists.", p.Name)
	}
	return node.Errorf(node.ErrDuplicate, "A port with UUID %s already exists.", p.UUID)
}

// CreatePort inserts p. A duplicate MAC address, UUID or name wraps
// node.ErrDuplicate; an unknown node wraps node.ErrNotFound.
func (d *DB) CreatePort(ctx context.Context, p *node.Port) error {
	p.CreatedAt = d.now()
	p.UpdatedAt = time.Time{}
	p.Version = 1
	args, err := portArgs(p)
	if err != nil {
		return err
	}
	cols := append([]string{"uuid", "created_at"}, portWriteColumns...)
	args = append([]any{p.UUID, fmtTime(p.CreatedAt)}, args...)
	q := "INSERT INTO ports (" + strings.Join(cols, ", ") + ") VALUES (" + placeholders(len(cols)) + ") RETURNING id"
	if err := d.sql.QueryRowContext(ctx, d.rebind(q), args...).Scan(&p.ID); err != nil {
		if isUnique(err) {
			return duplicatePortError(err, p)
		}
		if strings.Contains(err.Error(), "FOREIGN KEY") || strings.Contains(err.Error(), "SQLSTATE 23503") {
			return notFound("Node", p.NodeUUID)
		}
		return fmt.Errorf("insert port %s: %w", p.UUID, err)
	}
	return nil
}

// GetPort returns the port with the given UUID.
func (d *DB) GetPort(ctx context.Context, uuid string) (*node.Port, error) {
	return d.getPort(ctx, "uuid", strings.ToLower(uuid), "Port")
}

// GetPortByAddress returns the port with the given MAC address.
func (d *DB) GetPortByAddress(ctx context.Context, mac string) (*node.Port, error) {
	return d.getPort(ctx, "address", strings.ToLower(mac), "Port")
}

func (d *DB) getPort(ctx context.Context, col, val, kind string) (*node.Port, error) {
	row := d.sql.QueryRowContext(ctx, d.rebind("SELECT "+portColumns+" FROM ports WHERE "+col+" = ?"), val)
	p, err := scanPort(row)
	if isNoRows(err) {
		return nil, notFound(kind, val)
	}
	if err != nil {
		return nil, fmt.Errorf("get port %s: %w", val, err)
	}
	return p, nil
}

// PortQuery filters and pages ListPorts.
type PortQuery struct {
	NodeUUID  string
	Addresses []string
	Limit     int
	Marker    string
	SortKey   string
	SortDir   string
}

// SortablePortKeys are the port fields the list can be sorted by.
func SortablePortKeys() []string {
	return []string{"id", "uuid", "address", "created_at", "updated_at", "node_uuid", "name", "physical_network"}
}

// ListPorts returns the ports matching q.
func (d *DB) ListPorts(ctx context.Context, q PortQuery) ([]*node.Port, error) {
	where, args := []string{}, []any{}
	if q.NodeUUID != "" {
		where, args = append(where, "node_uuid = ?"), append(args, q.NodeUUID)
	}
	if len(q.Addresses) > 0 {
		where = append(where, "address IN ("+placeholders(len(q.Addresses))+")")
		for _, a := range q.Addresses {
			args = append(args, strings.ToLower(a))
		}
	}
	key, dir, err := sortSpec(q.SortKey, q.SortDir, SortablePortKeys())
	if err != nil {
		return nil, err
	}
	if q.Marker != "" {
		cond, margs, err := d.markerCond(ctx, "ports", key, dir, q.Marker)
		if err != nil {
			return nil, err
		}
		where, args = append(where, cond), append(args, margs...)
	}
	stmt := "SELECT " + portColumns + " FROM ports"
	if len(where) > 0 {
		stmt += " WHERE " + strings.Join(where, " AND ")
	}
	stmt += orderBy(key, dir)
	if q.Limit > 0 {
		stmt += fmt.Sprintf(" LIMIT %d", q.Limit)
	}
	return collect(ctx, d, "list ports", stmt, args, scanPort)
}

// UpdatePort writes p if its version is unchanged, then bumps it.
func (d *DB) UpdatePort(ctx context.Context, p *node.Port) error {
	prev, prevUpdated := p.Version, p.UpdatedAt
	p.Version++
	p.UpdatedAt = d.now()
	args, err := portArgs(p)
	if err == nil {
		set := make([]string, len(portWriteColumns))
		for i, c := range portWriteColumns {
			set[i] = c + " = ?"
		}
		var res sql.Result
		res, err = d.exec(ctx, "UPDATE ports SET "+strings.Join(set, ", ")+" WHERE uuid = ? AND version = ?",
			append(args, p.UUID, prev)...)
		switch {
		case err != nil && isUnique(err):
			err = duplicatePortError(err, p)
		case err != nil:
			err = fmt.Errorf("update port %s: %w", p.UUID, err)
		default:
			if cnt, _ := res.RowsAffected(); cnt == 0 {
				err = d.missingOrConflict(ctx, "ports", "Port", p.UUID)
			}
		}
	}
	if err != nil {
		p.Version, p.UpdatedAt = prev, prevUpdated
	}
	return err
}

// DeletePort removes a port.
func (d *DB) DeletePort(ctx context.Context, uuid string) error {
	res, err := d.exec(ctx, "DELETE FROM ports WHERE uuid = ?", strings.ToLower(uuid))
	if err != nil {
		return fmt.Errorf("delete port %s: %w", uuid, err)
	}
	if cnt, _ := res.RowsAffected(); cnt == 0 {
		return notFound("Port", uuid)
	}
	return nil
}

// RegisterConductor records (or refreshes) a running conductor.
func (d *DB) RegisterConductor(ctx context.Context, c node.Conductor) error {
	drivers, _ := json.Marshal(c.Drivers)
	now := fmtTime(d.now())
	_, err := d.exec(ctx, `INSERT INTO conductors (hostname, conductor_group, drivers, created_at, updated_at)
VALUES (?, ?, ?, ?, ?) ON CONFLICT (hostname) DO UPDATE SET conductor_group = excluded.conductor_group,
drivers = excluded.drivers, updated_at = excluded.updated_at`, c.Hostname, c.ConductorGroup, string(drivers), now, now)
	if err != nil {
		return fmt.Errorf("register conductor %s: %w", c.Hostname, err)
	}
	return nil
}

// TouchConductor refreshes a conductor's liveness timestamp.
func (d *DB) TouchConductor(ctx context.Context, hostname string) error {
	_, err := d.exec(ctx, "UPDATE conductors SET updated_at = ? WHERE hostname = ?", fmtTime(d.now()), hostname)
	if err != nil {
		return fmt.Errorf("touch conductor %s: %w", hostname, err)
	}
	return nil
}

// UnregisterConductor removes a conductor that shuts down cleanly.
func (d *DB) UnregisterConductor(ctx context.Context, hostname string) error {
	_, err := d.exec(ctx, "DELETE FROM conductors WHERE hostname = ?", hostname)
	if err != nil {
		return fmt.Errorf("unregister conductor %s: %w", hostname, err)
	}
	return nil
}

// ListConductors returns every registered conductor, by hostname.
func (d *DB) ListConductors(ctx context.Context) ([]node.Conductor, error) {
	rows, err := d.query(ctx, "SELECT hostname, conductor_group, drivers, created_at, updated_at FROM conductors ORDER BY hostname")
	if err != nil {
		return nil, fmt.Errorf("list conductors: %w", err)
	}
	defer rows.Close()
	var out []node.Conductor
	for rows.Next() {
		var c node.Conductor
		var drivers string
		var ca, ua sql.NullString
		if err := rows.Scan(&c.Hostname, &c.ConductorGroup, &drivers, &ca, &ua); err != nil {
			return nil, fmt.Errorf("list conductors: %w", err)
		}
		if err := json.Unmarshal([]byte(drivers), &c.Drivers); err != nil {
			return nil, fmt.Errorf("decode drivers of conductor %s: %w", c.Hostname, err)
		}
		if c.CreatedAt, err = parseTime(ca); err != nil {
			return nil, err
		}
		if c.UpdatedAt, err = parseTime(ua); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// PortsOfNode returns a node's ports in creation order.
func (d *DB) PortsOfNode(ctx context.Context, nodeUUID string) ([]*node.Port, error) {
	return d.ListPorts(ctx, PortQuery{NodeUUID: nodeUUID})
}

// KeepAlive registers c and refreshes its liveness record every interval
// until ctx ends, then removes it.
func (d *DB) KeepAlive(ctx context.Context, c node.Conductor, every time.Duration) error {
	if err := d.RegisterConductor(ctx, c); err != nil {
		return err
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return d.UnregisterConductor(context.WithoutCancel(ctx), c.Hostname)
		case <-t.C:
			if err := d.TouchConductor(ctx, c.Hostname); err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}

// NodeByMACs returns the node one of whose ports has one of the MAC
// addresses, as Ironic's lookup does.
func (d *DB) NodeByMACs(ctx context.Context, macs []string) (*node.Node, error) {
	if len(macs) == 0 {
		return nil, notFound("Node", "with no MAC address")
	}
	args := make([]any, len(macs))
	for i, m := range macs {
		args[i] = strings.ToLower(m)
	}
	var uuid string
	err := d.sql.QueryRowContext(ctx, d.rebind("SELECT node_uuid FROM ports WHERE address IN ("+placeholders(len(macs))+") ORDER BY id LIMIT 1"), args...).Scan(&uuid)
	if isNoRows(err) {
		return nil, notFound("Node", "with addresses "+strings.Join(macs, ","))
	}
	if err != nil {
		return nil, fmt.Errorf("look up node by MAC: %w", err)
	}
	return d.GetNode(ctx, uuid)
}
