package httpapi

import (
	"net/http"
	"slices"

	"github.com/labstack/echo/v5"

	"github.com/ingot-dev/ingot/conductor/node"
)

func (s *Server) versionInfo(c *echo.Context) map[string]any {
	return map[string]any{
		"id":          "v1",
		"links":       []map[string]string{{"href": s.baseURL(c) + "/v1/", "rel": "self"}},
		"status":      "CURRENT",
		"min_version": versionString(MinMinor),
		"version":     versionString(MaxMinor),
	}
}

func (s *Server) root(c *echo.Context) error {
	v := s.versionInfo(c)
	return c.JSON(http.StatusOK, map[string]any{
		"name":            "OpenStack Ironic API",
		"description":     "Ingot: an Ironic-compatible bare-metal provisioning service.",
		"versions":        []any{v},
		"default_version": v,
	})
}

func (s *Server) v1Root(c *echo.Context) error {
	base := s.baseURL(c)
	res := func(kind string) []map[string]string {
		return []map[string]string{{"href": base + "/v1/" + kind + "/", "rel": "self"}, {"href": base + "/" + kind + "/", "rel": "bookmark"}}
	}
	out := map[string]any{
		"id": "v1",
		"links": []map[string]string{
			{"href": base + "/v1/", "rel": "self"},
			{"href": "https://docs.openstack.org/ironic/latest/contributor/webapi.html", "rel": "describedby", "type": "text/html"},
		},
		"media_types": []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"}},
		"chassis":     res("chassis"),
		"nodes":       res("nodes"),
		"ports":       res("ports"),
		"drivers":     res("drivers"),
		"version":     s.versionInfo(c),
	}
	minor := minorOf(c)
	if minor >= 22 {
		out["lookup"] = res("lookup")
		out["heartbeat"] = res("heartbeat")
	}
	if minor >= 49 {
		out["conductors"] = res("conductors")
	}
	return c.JSON(http.StatusOK, out)
}

// aliveConductors returns the conductors that heartbeated recently.
func (s *Server) aliveConductors(c *echo.Context) ([]node.Conductor, error) {
	all, err := s.reader.ListConductors(c.Request().Context())
	if err != nil {
		return nil, err
	}
	now := s.opts.Now()
	var out []node.Conductor
	for _, cd := range all {
		if now.Sub(cd.UpdatedAt) <= s.opts.ConductorTimeout {
			out = append(out, cd)
		}
	}
	return out, nil
}

func (s *Server) driverJSON(c *echo.Context, hw node.HardwareType, hosts []string, detail bool) map[string]any {
	base := s.baseURL(c)
	d := map[string]any{
		"name":       hw.Name,
		"hosts":      hosts,
		"links":      links(base, "drivers", hw.Name),
		"properties": links(base, "drivers", hw.Name+"/properties"),
	}
	minor := minorOf(c)
	if minor >= 30 {
		d["type"] = "dynamic"
	}
	if detail && minor >= 30 {
		for _, k := range node.InterfaceKinds() {
			d["default_"+k+"_interface"] = hw.Supported[k][0]
			d["enabled_"+k+"_interfaces"] = hw.Supported[k]
		}
	}
	return d
}

func (s *Server) driverHosts(c *echo.Context) (map[string][]string, error) {
	cds, err := s.aliveConductors(c)
	if err != nil {
		return nil, err
	}
	hosts := map[string][]string{}
	for _, cd := range cds {
		for _, d := range cd.Drivers {
			hosts[d] = append(hosts[d], cd.Hostname)
		}
	}
	return hosts, nil
}

func (s *Server) listDrivers(c *echo.Context) error {
	hosts, err := s.driverHosts(c)
	if err != nil {
		return err
	}
	if t := c.QueryParam("type"); t != "" && t != "dynamic" && t != "classic" {
		return badRequest("Invalid driver type %q: allowed are classic and dynamic", t)
	}
	detail, err := boolParam(c.QueryParams(), "detail")
	if err != nil {
		return err
	}
	out := []any{}
	if c.QueryParam("type") != "classic" {
		for _, hw := range node.HardwareTypes() {
			if h, ok := hosts[hw.Name]; ok {
				out = append(out, s.driverJSON(c, hw, h, detail != nil && *detail))
			}
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"drivers": out})
}

func (s *Server) showDriver(c *echo.Context) error {
	hosts, err := s.driverHosts(c)
	if err != nil {
		return err
	}
	hw, ok := node.LookupHardwareType(c.Param("driver"))
	if !ok || hosts[hw.Name] == nil {
		return node.Errorf(node.ErrNotFound, "Could not find the following driver(s) or hardware type(s): %s.", c.Param("driver"))
	}
	return c.JSON(http.StatusOK, s.driverJSON(c, hw, hosts[hw.Name], true))
}

// driverProperties documents the driver_info keys each hardware type reads.
func (s *Server) driverProperties(c *echo.Context) error {
	hw, ok := node.LookupHardwareType(c.Param("driver"))
	if !ok {
		return node.Errorf(node.ErrNotFound, "Could not find the following driver(s) or hardware type(s): %s.", c.Param("driver"))
	}
	props := map[string]string{
		"deploy_kernel":  "URL or path of the deploy kernel. Required for network boot unless the conductor has a default.",
		"deploy_ramdisk": "URL or path of the deploy ramdisk. Required for network boot unless the conductor has a default.",
	}
	if slices.Contains(hw.Supported[node.KindPower], "ipmitool") {
		props["ipmi_address"] = "IP address or hostname of the node's BMC. Required."
		props["ipmi_username"] = "Username of the BMC. Optional."
		props["ipmi_password"] = "Password of the BMC. Optional."
		props["ipmi_port"] = "Remote IPMI RMCP port. Optional (623)."
		props["ipmi_priv_level"] = "Privilege level: ADMINISTRATOR (default), OPERATOR, USER, CALLBACK."
		props["ipmi_cipher_suite"] = "IPMI v2 cipher suite to use (e.g. 3 or 17). Optional; pinning one avoids a slow negotiation."
		props["ipmi_protocol_version"] = "IPMI protocol version: 2.0 (lanplus, default) or 1.5 (lan)."
	}
	return c.JSON(http.StatusOK, props)
}

func (s *Server) conductorJSON(c *echo.Context, cd node.Conductor, alive, detail bool) map[string]any {
	out := map[string]any{
		"hostname":        cd.Hostname,
		"conductor_group": cd.ConductorGroup,
		"alive":           alive,
		"links":           links(s.baseURL(c), "conductors", cd.Hostname),
	}
	if detail {
		out["drivers"] = cd.Drivers
		out["created_at"] = FormatTime(cd.CreatedAt)
		out["updated_at"] = FormatTime(cd.UpdatedAt)
	}
	return out
}

func (s *Server) listConductors(c *echo.Context) error {
	if minorOf(c) < 49 {
		return node.Errorf(node.ErrNotFound, "The resource could not be found.")
	}
	all, err := s.reader.ListConductors(c.Request().Context())
	if err != nil {
		return err
	}
	detail, err := boolParam(c.QueryParams(), "detail")
	if err != nil {
		return err
	}
	now := s.opts.Now()
	out := []any{}
	for _, cd := range all {
		out = append(out, s.conductorJSON(c, cd, now.Sub(cd.UpdatedAt) <= s.opts.ConductorTimeout, detail != nil && *detail))
	}
	return c.JSON(http.StatusOK, map[string]any{"conductors": out})
}

func (s *Server) showConductor(c *echo.Context) error {
	if minorOf(c) < 49 {
		return node.Errorf(node.ErrNotFound, "The resource could not be found.")
	}
	all, err := s.reader.ListConductors(c.Request().Context())
	if err != nil {
		return err
	}
	for _, cd := range all {
		if cd.Hostname == c.Param("hostname") {
			return c.JSON(http.StatusOK, s.conductorJSON(c, cd, s.opts.Now().Sub(cd.UpdatedAt) <= s.opts.ConductorTimeout, true))
		}
	}
	return node.Errorf(node.ErrNotFound, "Conductor %s could not be found.", c.Param("hostname"))
}
