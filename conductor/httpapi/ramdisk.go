package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/labstack/echo/v5"

	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/shared/api"
)

// AgentConfig is what lookup tells agents besides their token.
type AgentConfig struct {
	HeartbeatTimeout int  // seconds
	MD5Allowed       bool // agent_md5_checksum_enable
}

func (s *Server) ramdiskRoutes(v1 *echo.Group) {
	v1.GET("/lookup", s.lookup)
	v1.POST("/heartbeat/:node", s.heartbeat)
	v1.POST("/continue_inspection", s.continueInspection)
}

// lookup answers GET /v1/lookup?addresses=…&node_uuid=… (API 1.22+);
// from 1.62 it hands out the node's agent token, once.
func (s *Server) lookup(c *echo.Context) error {
	minor := minorOf(c)
	if minor < 22 {
		return node.Errorf(node.ErrNotFound, "The resource could not be found.")
	}
	q := c.QueryParams()
	var macs []string
	for _, a := range strings.Split(q.Get("addresses"), ",") {
		if mac, err := engine.NormalizeMAC(strings.TrimSpace(a)); err == nil {
			macs = append(macs, mac)
		}
	}
	uuid := q.Get("node_uuid")
	if uuid != "" && !engine.IsUUID(uuid) {
		return badRequest("Expected a UUID for node_uuid but received %s.", uuid)
	}
	if len(macs) == 0 && uuid == "" {
		return badRequest("Incomplete lookup request: at least one valid MAC address in 'addresses' or a 'node_uuid' is required.")
	}
	res, err := s.engine.Lookup(c.Request().Context(), macs, uuid, minor >= 62)
	if err != nil {
		return err
	}
	n := res.Node
	var token any
	if minor >= 62 {
		token = res.Token
	}
	body := map[string]any{
		"node": map[string]any{
			"uuid":                 n.UUID,
			"properties":           orEmpty(n.Properties),
			"instance_info":        orEmpty(maskKeys(maskSecrets(n.InstanceInfo), "configdrive", "image_url")),
			"driver_internal_info": orEmpty(maskKeys(n.DriverInternalInfo, "agent_secret_token")),
			"links":                links(s.baseURL(c), "nodes", n.UUID),
		},
		"config": map[string]any{
			"heartbeat_timeout":              s.opts.Agent.HeartbeatTimeout,
			"agent_token":                    token,
			"agent_token_required":           true,
			"agent_md5_checksum_enable":      s.opts.Agent.MD5Allowed,
			"disable_deep_image_inspection":  false,
			"permitted_image_formats":        []string{"raw", "qcow2", "iso"},
			"enable_bios_bootloader_install": false,
			"agent_skip_bmc_detect":          false,
			"metrics":                        map[string]any{"backend": "noop", "prepend_host": false, "prepend_uuid": false, "prepend_host_reverse": true, "global_prefix": nil},
			"metrics_statsd":                 map[string]any{"statsd_host": "localhost", "statsd_port": 8125},
		},
	}
	return c.JSON(http.StatusOK, body)
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// heartbeatFieldMinor is the version each heartbeat field arrived in.
var heartbeatFieldMinor = map[string]int{"callback_url": 22, "agent_token": 62, "agent_version": 36,
	"agent_verify_ca": 68, "agent_status": 72, "agent_status_message": 72}

// heartbeat answers POST /v1/heartbeat/{node} (API 1.22+) with 202 and
// lets the engine act on it.
func (s *Server) heartbeat(c *echo.Context) error {
	minor := minorOf(c)
	if minor < 22 {
		return node.Errorf(node.ErrNotFound, "The resource could not be found.")
	}
	body, err := decodeObject(c, DefaultBodyLimit)
	if err != nil {
		return err
	}
	var hb api.HeartbeatRequest
	for k, raw := range body {
		since, known := heartbeatFieldMinor[k]
		if !known || (minor < since && k != "agent_token") {
			return badRequest("Field \"%s\" not recognised.", k)
		}
		var v string
		if !isNull(raw) {
			if err := json.Unmarshal(raw, &v); err != nil {
				return typeError(k, raw, "str")
			}
		}
		switch k {
		case "callback_url":
			hb.CallbackURL = v
		case "agent_token":
			hb.AgentToken = v
		case "agent_version":
			hb.AgentVersion = v
		case "agent_verify_ca":
			hb.AgentVerifyCA = v
		case "agent_status":
			hb.AgentStatus = v
		case "agent_status_message":
			hb.AgentStatusMessage = v
		}
	}
	if _, ok := body["callback_url"]; !ok {
		return badRequest("Mandatory field missing: callback_url")
	}
	if err := s.engine.Heartbeat(c.Request().Context(), c.Param("node"), hb); err != nil {
		return err
	}
	return c.NoContent(http.StatusAccepted)
}
