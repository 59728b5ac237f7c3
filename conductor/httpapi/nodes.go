package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v5"

	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/store"
)

// pageParams reads limit, marker, sort_key and sort_dir.
func (s *Server) pageParams(q url.Values) (limit int, marker, key, dir string, err error) {
	limit = s.opts.MaxLimit
	if v := q.Get("limit"); v != "" {
		l, perr := strconv.Atoi(v)
		if perr != nil || l <= 0 {
			return 0, "", "", "", badRequest("Limit must be positive integer: %s", v)
		}
		limit = min(l, s.opts.MaxLimit)
	}
	return limit, q.Get("marker"), q.Get("sort_key"), q.Get("sort_dir"), nil
}

// nextURL is the link to the page after the one that ended with marker.
func nextURL(base, path string, q url.Values, limit int, marker string) string {
	n := url.Values{}
	for k, v := range q {
		n[k] = v
	}
	n.Set("limit", strconv.Itoa(limit))
	n.Set("marker", marker)
	return base + path + "?" + n.Encode()
}

// writeNext adds the link to the next page twice: as Ironic's "next" and as
// "<kind>_links", which gophercloud follows (gophercloud issue #2431: against
// real Ironic it silently stops after the first page).
func writeNext(b *bytes.Buffer, kind, next string) {
	b.WriteString(`,"next":`)
	appendString(b, next)
	b.WriteString(`,"` + kind + `_links":[{"href":`)
	appendString(b, next)
	b.WriteString(`,"rel":"next"}]`)
}

func boolParam(q url.Values, name string) (*bool, error) {
	v, ok := q[name]
	if !ok || len(v) == 0 {
		return nil, nil
	}
	b, ok := parseBool(v[0])
	if !ok {
		return nil, badRequest("Invalid value for %s: %q is not a boolean", name, v[0])
	}
	return &b, nil
}

// gated rejects a query parameter used below the version that added it.
func gated(q url.Values, minor int, param string, since int) error {
	if q.Has(param) && minor < since {
		return notAcceptable("Request not acceptable. The minimal required API version should be " + versionString(since))
	}
	return nil
}

func (s *Server) listNodes(detailPath bool) echo.HandlerFunc {
	return func(c *echo.Context) error {
		minor := minorOf(c)
		q := c.QueryParams()
		detail := detailPath
		if d, err := boolParam(q, "detail"); err != nil {
			return err
		} else if d != nil {
			if detailPath {
				return badRequest("Cannot specify detail on the /detail resource")
			}
			if minor < 43 {
				return notAcceptable("The detail parameter requires API version 1.43 or later.")
			}
			detail = *d
		}
		fields, err := parseFields(q, minor, nodeFieldMinor)
		if err != nil {
			return err
		}
		if fields != nil && detail {
			return badRequest("Can not specify ?detail=True and fields in the same request.")
		}
		for param, since := range map[string]int{"provision_state": 9, "driver": 16, "resource_class": 21,
			"fault": 42, "conductor_group": 46, "owner": 50, "lessee": 65, "shard": 82} {
			if err := gated(q, minor, param, since); err != nil {
				return err
			}
		}
		nq := store.NodeQuery{
			ProvisionState: node.State(q.Get("provision_state")),
			Driver:         q.Get("driver"),
			ResourceClass:  q.Get("resource_class"),
			Fault:          q.Get("fault"),
			Owner:          q.Get("owner"),
			Lessee:         q.Get("lessee"),
			InstanceUUID:   q.Get("instance_uuid"),
		}
		if nq.ProvisionState != "" && !nq.ProvisionState.Valid() {
			return badRequest("Provision state \"%s\" is not valid", nq.ProvisionState)
		}
		if q.Has("conductor_group") {
			g := q.Get("conductor_group")
			nq.ConductorGroup = &g
		}
		if nq.Maintenance, err = boolParam(q, "maintenance"); err != nil {
			return err
		}
		if nq.Associated, err = boolParam(q, "associated"); err != nil {
			return err
		}
		if nq.Limit, nq.Marker, nq.SortKey, nq.SortDir, err = s.pageParams(q); err != nil {
			return err
		}
		nodes, err := s.reader.ListNodes(c.Request().Context(), nq)
		if err != nil {
			return err
		}
		if fields == nil && !detail {
			fields = map[string]bool{}
			for _, f := range nodeListFields {
				fields[f] = true
			}
		}
		base := s.baseURL(c)
		var b bytes.Buffer
		if detail {
			b.Grow(len(nodes) * 3072)
		} else {
			b.Grow(len(nodes) * 256)
		}
		b.WriteString(`{"nodes":[`)
		for i, n := range nodes {
			if i > 0 {
				b.WriteByte(',')
			}
			writeNode(&b, base, n, minor, fields, detail)
		}
		b.WriteByte(']')
		if len(nodes) == nq.Limit && len(nodes) > 0 {
			writeNext(&b, "nodes", nextURL(base, c.Request().URL.Path, q, nq.Limit, nodes[len(nodes)-1].UUID))
		}
		b.WriteByte('}')
		return writeJSON(c, http.StatusOK, b.Bytes())
	}
}

func (s *Server) renderNode(c *echo.Context, status int, n *node.Node, fields map[string]bool) error {
	var b bytes.Buffer
	writeNode(&b, s.baseURL(c), n, minorOf(c), fields, fields == nil)
	return writeJSON(c, status, b.Bytes())
}

func (s *Server) showNode(c *echo.Context) error {
	fields, err := parseFields(c.QueryParams(), minorOf(c), nodeFieldMinor)
	if err != nil {
		return err
	}
	n, err := s.reader.GetNode(c.Request().Context(), c.Param("node"))
	if err != nil {
		return err
	}
	return s.renderNode(c, http.StatusOK, n, fields)
}

func (s *Server) createNode(c *echo.Context) error {
	body, err := decodeObject(c, DefaultBodyLimit)
	if err != nil {
		return err
	}
	minor := minorOf(c)
	n, err := nodeCreateFromBody(body, minor)
	if err != nil {
		return err
	}
	opts := engine.CreateOptions{}
	if minor < 11 {
		opts.InitialState = node.StateAvailable
	}
	n, err = s.engine.CreateNode(c.Request().Context(), n, opts)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Location", s.baseURL(c)+"/v1/nodes/"+n.UUID)
	return s.renderNode(c, http.StatusCreated, n, nil)
}

func (s *Server) patchNode(c *echo.Context) error {
	b, err := readBody(c, DefaultBodyLimit)
	if err != nil {
		return err
	}
	settableOf := func(f string) (settable, bool) { st, ok := nodeSettable[f]; return st, ok }
	patch, err := decodePatch(b, minorOf(c), settableOf, nodeInternal)
	if err != nil {
		return err
	}
	n, err := s.engine.UpdateNode(c.Request().Context(), c.Param("node"), func(n *node.Node) error {
		return applyNodePatch(n, patch)
	})
	if err != nil {
		return err
	}
	return s.renderNode(c, http.StatusOK, n, nil)
}

func (s *Server) deleteNode(c *echo.Context) error {
	if err := s.engine.DeleteNode(c.Request().Context(), c.Param("node")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) nodePorts(detail bool) echo.HandlerFunc {
	return func(c *echo.Context) error {
		n, err := s.reader.GetNode(c.Request().Context(), c.Param("node"))
		if err != nil {
			return err
		}
		return s.portList(c, detail, store.PortQuery{NodeUUID: n.UUID})
	}
}

func (s *Server) nodeStates(c *echo.Context) error {
	n, err := s.reader.GetNode(c.Request().Context(), c.Param("node"))
	if err != nil {
		return err
	}
	minor := minorOf(c)
	var b bytes.Buffer
	o := newObj(&b)
	o.nstr("power_state", string(n.PowerState))
	o.nstr("target_power_state", string(n.TargetPowerState))
	o.nstr("provision_state", visibleState(n.ProvisionState, minor))
	o.nstr("target_provision_state", visibleState(n.TargetProvisionState, minor))
	o.time("provision_updated_at", n.ProvisionUpdatedAt)
	o.nstr("last_error", n.LastError)
	o.boolean("console_enabled", n.ConsoleEnabled)
	if minor >= 12 {
		o.value("raid_config", n.RaidConfig)
		o.value("target_raid_config", n.TargetRaidConfig)
	}
	if minor >= 75 {
		o.nstr("boot_mode", n.BootMode)
		o.nbool("secure_boot", n.SecureBoot)
	}
	o.end()
	return writeJSON(c, http.StatusOK, b.Bytes())
}

// verbMinor is the version that introduced each provision verb.
var verbMinor = map[string]int{"manage": 4, "provide": 4, "inspect": 6, "abort": 13, "clean": 15,
	"adopt": 17, "deploy": 73, "undeploy": 73}

func (s *Server) setProvision(c *echo.Context) error {
	body, err := decodeObject(c, ProvisionBodyLimit)
	if err != nil {
		return err
	}
	minor := minorOf(c)
	var req engine.ProvisionRequest
	for k, raw := range body {
		switch k {
		case "target":
			if req.Target, err = decString(k, raw); err != nil {
				return err
			}
		case "configdrive":
			if isNull(raw) {
				continue
			}
			var cd any
			_ = json.Unmarshal(raw, &cd)
			switch v := cd.(type) {
			case string:
				req.ConfigDrive = v
			case map[string]any:
				if minor < 56 {
					return badRequest("Providing a JSON object for configdrive is only supported starting with API version 1.56")
				}
				for ck := range v {
					if ck != "meta_data" && ck != "network_data" && ck != "user_data" && ck != "vendor_data" {
						return badRequest("Invalid configdrive format: additional property %q is not allowed", ck)
					}
				}
				if _, ok := v["vendor_data"]; ok && minor < 59 {
					return badRequest("Providing vendor_data in configdrive is only supported starting with API version 1.59")
				}
				req.ConfigDrive = v
			default:
				return badRequest("Invalid configdrive format: it is neither a JSON object, nor a URL, nor a base64 string")
			}
		case "clean_steps", "deploy_steps":
			if k == "deploy_steps" && minor < 69 {
				return notAcceptable("deploy_steps requires API version 1.69 or later.")
			}
			if isNull(raw) {
				continue
			}
			var steps []map[string]any
			if err := json.Unmarshal(raw, &steps); err != nil {
				return typeError(k, raw, "list")
			}
			if k == "clean_steps" {
				req.CleanSteps = steps
			} else {
				if err := engine.ValidateSteps("deploy", steps); err != nil {
					return err
				}
				req.DeploySteps = steps
			}
		case "rescue_password", "disable_ramdisk":
			return badRequest("%s is not supported: Ingot does not implement rescue or ramdisk-less cleaning", k)
		default:
			return badRequest("Unknown attribute for argument provision: %s", k)
		}
	}
	if req.Target == "" {
		return badRequest("Mandatory field missing: target")
	}
	if _, ok := engine.VerbEvent(req.Target); !ok {
		return badRequest("The requested action \"%s\" could not be understood.", req.Target)
	}
	if m, ok := verbMinor[req.Target]; ok && minor < m {
		return notAcceptable("The \"" + req.Target + "\" verb requires API version " + versionString(m) + " or later.")
	}
	if req.ConfigDrive != nil && req.Target != "active" && req.Target != "deploy" && req.Target != "rebuild" {
		return badRequest("Adding a config drive is only supported when setting provision state to active, rebuild")
	}
	if req.Target == "clean" && len(req.CleanSteps) == 0 {
		return badRequest("clean_steps is required when setting target provision state to clean")
	}
	if req.CleanSteps != nil && req.Target != "clean" {
		return badRequest("\"clean_steps\" is only valid when setting target provision state to clean")
	}
	if err := s.engine.Provision(c.Request().Context(), c.Param("node"), req); err != nil {
		return err
	}
	c.Response().Header().Set("Location", s.baseURL(c)+"/v1/nodes/"+c.Param("node")+"/states")
	return c.NoContent(http.StatusAccepted)
}

func (s *Server) setPower(c *echo.Context) error {
	body, err := decodeObject(c, DefaultBodyLimit)
	if err != nil {
		return err
	}
	minor := minorOf(c)
	var req engine.PowerRequest
	for k, raw := range body {
		switch k {
		case "target":
			t, err := decString(k, raw)
			if err != nil {
				return err
			}
			req.Target = node.PowerState(t)
		case "timeout":
			if minor < 27 {
				return notAcceptable("timeout requires API version 1.27 or later.")
			}
			if isNull(raw) {
				continue
			}
			var secs int
			if err := json.Unmarshal(raw, &secs); err != nil || secs < 1 {
				return badRequest("Invalid timeout %s: a positive integer number of seconds is required", string(raw))
			}
			req.Timeout = time.Duration(secs) * time.Second
		default:
			return badRequest("Unknown attribute for argument power: %s", k)
		}
	}
	switch req.Target {
	case node.PowerOn, node.PowerOff, node.PowerReboot:
	case node.PowerSoftOff, node.PowerSoftReboot:
		if minor < 27 {
			return notAcceptable("Soft power actions require API version 1.27 or later.")
		}
	case "":
		return badRequest("Mandatory field missing: target")
	default:
		return badRequest("Invalid power target %q. Allowed: power on, power off, rebooting, soft power off, soft rebooting", req.Target)
	}
	if err := s.engine.SetPower(c.Request().Context(), c.Param("node"), req); err != nil {
		return err
	}
	c.Response().Header().Set("Location", s.baseURL(c)+"/v1/nodes/"+c.Param("node")+"/states")
	return c.NoContent(http.StatusAccepted)
}

func (s *Server) getBootDevice(c *echo.Context) error {
	dev, err := s.engine.GetBootDevice(c.Request().Context(), c.Param("node"))
	if err != nil {
		return err
	}
	if dev == nil {
		return c.JSON(http.StatusOK, map[string]any{"boot_device": nil, "persistent": nil})
	}
	return c.JSON(http.StatusOK, dev)
}

func (s *Server) setBootDevice(c *echo.Context) error {
	body, err := decodeObject(c, DefaultBodyLimit)
	if err != nil {
		return err
	}
	var dev engine.BootDevice
	for k, raw := range body {
		switch k {
		case "boot_device":
			if dev.Device, err = decString(k, raw); err != nil {
				return err
			}
		case "persistent":
			p, err := decBool(k, raw)
			if err != nil {
				return err
			}
			dev.Persistent = p != nil && *p
		default:
			return badRequest("Unknown attribute for argument boot_device: %s", k)
		}
	}
	if dev.Device == "" {
		return badRequest("Mandatory field missing: boot_device")
	}
	if err := s.engine.SetBootDevice(c.Request().Context(), c.Param("node"), dev); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) supportedBootDevices(c *echo.Context) error {
	devs, err := s.engine.SupportedBootDevices(c.Request().Context(), c.Param("node"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"supported_boot_devices": devs})
}

func (s *Server) setMaintenance(on bool) echo.HandlerFunc {
	return func(c *echo.Context) error {
		reason := ""
		if on {
			b, err := readBody(c, DefaultBodyLimit)
			if err != nil {
				return err
			}
			if len(bytes.TrimSpace(b)) > 0 {
				var body map[string]json.RawMessage
				if err := json.Unmarshal(b, &body); err != nil {
					return badRequest("Malformed JSON in the request body: %v", jsonErr(err))
				}
				for k, raw := range body {
					if k != "reason" {
						return badRequest("Unknown attribute for argument maintenance: %s", k)
					}
					if reason, err = decString(k, raw); err != nil {
						return err
					}
				}
			}
		}
		if _, err := s.engine.SetMaintenance(c.Request().Context(), c.Param("node"), on, strings.TrimSpace(reason)); err != nil {
			return err
		}
		return c.NoContent(http.StatusAccepted)
	}
}

func (s *Server) validateNode(c *echo.Context) error {
	res, err := s.engine.Validate(c.Request().Context(), c.Param("node"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}
