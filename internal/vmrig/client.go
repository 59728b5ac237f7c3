package vmrig

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Client is a small client of the conductor's Ironic-compatible API, for
// the rig's users to enroll and drive nodes (tests also drive it with the
// real baremetal CLI).
type Client struct {
	URL  string
	HTTP *http.Client
}

// APIVersion is the microversion the client asks for (the CLI's).
const APIVersion = "1.78"

// NodeState is what the rig's users watch of a node.
type NodeState struct {
	UUID               string         `json:"uuid"`
	Name               string         `json:"name"`
	ProvisionState     string         `json:"provision_state"`
	TargetProvision    *string        `json:"target_provision_state"`
	PowerState         *string        `json:"power_state"`
	LastError          *string        `json:"last_error"`
	Maintenance        bool           `json:"maintenance"`
	MaintenanceReason  *string        `json:"maintenance_reason"`
	Fault              *string        `json:"fault"`
	DriverInternalInfo map[string]any `json:"driver_internal_info"`
	InstanceInfo       map[string]any `json:"instance_info"`
}

// Error returns the node's last error, or "".
func (n NodeState) Error() string {
	if n.LastError == nil {
		return ""
	}
	return *n.LastError
}

// Do sends a request with a JSON body (when body is not nil) and decodes
// a JSON answer into out (when not nil). A status of 400 or more is an
// error carrying Ironic's error message.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	return c.DoVersion(ctx, APIVersion, method, path, body, out)
}

// Inventory decodes what inspection stored for a node (GET
// /v1/nodes/{node}/inventory, API 1.81) into out.
func (c *Client) Inventory(ctx context.Context, ident string, out any) error {
	return c.DoVersion(ctx, "1.81", http.MethodGet, "/v1/nodes/"+ident+"/inventory", nil, out)
}

// DoVersion is Do at another API microversion.
func (c *Client) DoVersion(ctx context.Context, version, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-OpenStack-Ironic-API-Version", version)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		var env struct {
			ErrorMessage string `json:"error_message"`
		}
		msg := string(data)
		if json.Unmarshal(data, &env) == nil && env.ErrorMessage != "" {
			var inner struct {
				Faultstring string `json:"faultstring"`
			}
			msg = env.ErrorMessage
			if json.Unmarshal([]byte(env.ErrorMessage), &inner) == nil && inner.Faultstring != "" {
				msg = inner.Faultstring
			}
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// CreateNode creates a node and returns its UUID.
func (c *Client) CreateNode(ctx context.Context, fields map[string]any) (string, error) {
	var n NodeState
	if err := c.Do(ctx, http.MethodPost, "/v1/nodes", fields, &n); err != nil {
		return "", err
	}
	return n.UUID, nil
}

// CreatePort registers a PXE-enabled NIC of the node.
func (c *Client) CreatePort(ctx context.Context, node, mac string) error {
	return c.Do(ctx, http.MethodPost, "/v1/ports", map[string]any{"node_uuid": node, "address": mac, "pxe_enabled": true}, nil)
}

// Node reads a node.
func (c *Client) Node(ctx context.Context, ident string) (NodeState, error) {
	var n NodeState
	err := c.Do(ctx, http.MethodGet, "/v1/nodes/"+ident, nil, &n)
	return n, err
}

// Patch applies JSON patch operations to a node.
func (c *Client) Patch(ctx context.Context, ident string, ops ...map[string]any) error {
	return c.Do(ctx, http.MethodPatch, "/v1/nodes/"+ident, ops, nil)
}

// Provision asks for a provision state change ("manage", "provide",
// "active", "deleted", ...).
func (c *Client) Provision(ctx context.Context, ident, target string) error {
	return c.Do(ctx, http.MethodPut, "/v1/nodes/"+ident+"/states/provision", map[string]any{"target": target}, nil)
}

// Power asks for a power state change ("power on", "power off", "reboot").
func (c *Client) Power(ctx context.Context, ident, target string) error {
	return c.Do(ctx, http.MethodPut, "/v1/nodes/"+ident+"/states/power", map[string]any{"target": target}, nil)
}

// Wait polls the node until its provision state is one of want (and no
// transition is pending), calling seen on every change. Reaching a state
// in fail, or ctx ending, is an error naming the node's last error.
func (c *Client) Wait(ctx context.Context, ident string, want, fail []string, seen func(NodeState)) (NodeState, error) {
	var last NodeState
	first := true
	for {
		n, err := c.Node(ctx, ident)
		if err != nil {
			if ctx.Err() != nil {
				return last, err
			}
			time.Sleep(200 * time.Millisecond) // the conductor may be busy; keep polling
			continue
		}
		if seen != nil && (first || changed(last, n)) {
			seen(n)
		}
		first, last = false, n
		// A failed state keeps its target (Ironic's "deploy failed" still
		// targets "active"), so only a stable state's target means pending.
		pending := n.TargetProvision != nil && *n.TargetProvision != "" && !strings.HasSuffix(n.ProvisionState, "failed")
		if slices.Contains(want, n.ProvisionState) && !pending {
			return n, nil
		}
		if slices.Contains(fail, n.ProvisionState) {
			return n, fmt.Errorf("node %s: %s: %s", ident, n.ProvisionState, n.Error())
		}
		select {
		case <-ctx.Done():
			return n, fmt.Errorf("node %s: waiting for %v in %s: %w", ident, want, n.ProvisionState, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func changed(a, b NodeState) bool {
	pa, pb := fmt.Sprint(a.DriverInternalInfo["deploy_progress"]), fmt.Sprint(b.DriverInternalInfo["deploy_progress"])
	return a.ProvisionState != b.ProvisionState || deref(a.PowerState) != deref(b.PowerState) || pa != pb ||
		a.Error() != b.Error()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
