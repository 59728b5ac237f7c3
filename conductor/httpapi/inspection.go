package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v5"

	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/node"
)

// continueInspection answers POST /v1/continue_inspection: an agent's
// inspection data. Ironic serves it from 1.84 and, for agents written for
// ironic-inspector, at exactly 1.1 (no version header), answering
// {"uuid": ...} as Inspector did; Ingot's maximum is below 1.84, so only
// the Inspector-compatible form is served.
func (s *Server) continueInspection(c *echo.Context) error {
	if minor := minorOf(c); minor != 1 {
		return node.Errorf(node.ErrNotFound, "The resource could not be found.")
	}
	body, err := decodeObject(c, InspectionBodyLimit)
	if err != nil {
		return err
	}
	d, err := parseInspection(body)
	if err != nil {
		return err
	}
	uuid := c.QueryParam("node_uuid")
	if uuid != "" && !engine.IsUUID(uuid) {
		return badRequest("Expected a UUID for node_uuid but received %s.", uuid)
	}
	n, err := s.engine.ContinueInspection(c.Request().Context(), uuid, d)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"uuid": n.UUID})
}

// nodeInventory answers GET /v1/nodes/{node}/inventory (1.81+): what
// inspection stored.
func (s *Server) nodeInventory(c *echo.Context) error {
	if minorOf(c) < 81 {
		return node.Errorf(node.ErrNotFound, "The resource could not be found.")
	}
	inv, pd, err := s.engine.Inventory(c.Request().Context(), c.Param("node"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]json.RawMessage{"inventory": inv, "plugin_data": pd})
}

// parseInspection checks inspection data against Ironic's minimal schema
// (an inventory with at least one interface, each with a MAC; BMC
// addresses strings or null) and decodes it. The data comes from an
// unauthenticated endpoint: it is fuzzed.
func parseInspection(body map[string]json.RawMessage) (engine.InspectionData, error) {
	var d engine.InspectionData
	raw, ok := body["inventory"]
	if !ok || isNull(raw) {
		return d, badRequest("Invalid inspection data: 'inventory' is a required property")
	}
	var inv struct {
		Interfaces []map[string]any `json:"interfaces"`
		BMC        any              `json:"bmc_address"`
		BMCv6      any              `json:"bmc_v6address"`
	}
	if err := json.Unmarshal(raw, &inv); err != nil {
		return d, badRequest("Invalid inspection data: 'inventory' must be an object with an 'interfaces' list: %v", err)
	}
	if len(inv.Interfaces) == 0 {
		return d, badRequest("Invalid inspection data: inventory.interfaces must list at least one interface")
	}
	for i, ifc := range inv.Interfaces {
		if mac, _ := ifc["mac_address"].(string); mac == "" {
			return d, badRequest("Invalid inspection data: inventory.interfaces[%d] has no 'mac_address' string", i)
		}
	}
	for name, v := range map[string]any{"bmc_address": inv.BMC, "bmc_v6address": inv.BMCv6} {
		if _, isString := v.(string); v != nil && !isString {
			return d, badRequest("Invalid inspection data: inventory.%s must be a string or null", name)
		}
	}
	d.Raw = body
	if err := json.Unmarshal(raw, &d.Inventory); err != nil {
		return d, badRequest("Invalid inspection data: %v", err)
	}
	return d, nil
}
