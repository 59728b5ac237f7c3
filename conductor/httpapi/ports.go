package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"

	"github.com/labstack/echo/v5"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/store"
)

var portSettable = map[string]settable{
	"uuid":                  {1, true, false, false},
	"address":               {1, true, true, false},
	"node_uuid":             {1, true, true, false},
	"extra":                 {1, true, true, true},
	"pxe_enabled":           {19, true, true, false},
	"local_link_connection": {19, true, true, true},
	"portgroup_uuid":        {24, true, true, false},
	"physical_network":      {34, true, true, false},
	"is_smartnic":           {53, true, true, false},
}

var portInternal = []string{"uuid", "created_at", "updated_at", "internal_info", "links"}

func setPortField(p *node.Port, name string, raw json.RawMessage) error {
	var err error
	switch name {
	case "uuid":
		p.UUID, err = decString(name, raw)
	case "address":
		p.Address, err = decString(name, raw)
	case "node_uuid":
		p.NodeUUID, err = decString(name, raw)
	case "extra":
		p.Extra, err = decDict(name, raw)
	case "local_link_connection":
		p.LocalLinkConnection, err = decDict(name, raw)
	case "physical_network":
		p.PhysicalNetwork, err = decString(name, raw)
	case "pxe_enabled":
		var b *bool
		if b, err = decBool(name, raw); err == nil {
			p.PXEEnabled = b == nil || *b
		}
	case "is_smartnic":
		var b *bool
		if b, err = decBool(name, raw); err == nil {
			p.IsSmartNIC = b != nil && *b
		}
	case "portgroup_uuid":
		var pg string
		if pg, err = decString(name, raw); err == nil && pg != "" {
			err = node.Errorf(node.ErrInvalid, "Portgroup %s could not be found.", pg)
		}
	default:
		return badRequest("Unknown attribute for argument port: %s", name)
	}
	return err
}

func (s *Server) createPort(c *echo.Context) error {
	body, err := decodeObject(c, DefaultBodyLimit)
	if err != nil {
		return err
	}
	minor := minorOf(c)
	p := &node.Port{PXEEnabled: true}
	names := make([]string, 0, len(body))
	for k := range body {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		st, ok := portSettable[k]
		if !ok || !st.create {
			return badRequest("Additional properties are not allowed ('%s' was unexpected)", k)
		}
		if st.minor > minor {
			return notAcceptable("Field \"" + k + "\" requires API version " + versionString(st.minor) + " or later.")
		}
		if err := setPortField(p, k, body[k]); err != nil {
			return err
		}
	}
	if p.Address == "" {
		return badRequest("Mandatory field missing: address")
	}
	if p.NodeUUID == "" {
		return badRequest("Mandatory field missing: node_uuid")
	}
	p, err = s.engine.CreatePort(c.Request().Context(), p)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Location", s.baseURL(c)+"/v1/ports/"+p.UUID)
	var b bytes.Buffer
	writePort(&b, s.baseURL(c), p, minor, nil)
	return writeJSON(c, http.StatusCreated, b.Bytes())
}

func (s *Server) listPorts(detail bool) echo.HandlerFunc {
	return func(c *echo.Context) error {
		q := c.QueryParams()
		var pq store.PortQuery
		ident := q.Get("node")
		if ident == "" {
			ident = q.Get("node_uuid")
		}
		if ident != "" {
			n, err := s.reader.GetNode(c.Request().Context(), ident)
			if err != nil {
				return err
			}
			pq.NodeUUID = n.UUID
		}
		if a := q.Get("address"); a != "" {
			pq.Addresses = []string{a}
		}
		return s.portList(c, detail, pq)
	}
}

func (s *Server) portList(c *echo.Context, detail bool, pq store.PortQuery) error {
	q := c.QueryParams()
	minor := minorOf(c)
	if d, err := boolParam(q, "detail"); err != nil {
		return err
	} else if d != nil {
		if minor < 43 {
			return notAcceptable("The detail parameter requires API version 1.43 or later.")
		}
		detail = *d
	}
	fields, err := parseFields(q, minor, portFieldMinor)
	if err != nil {
		return err
	}
	if fields != nil && detail {
		return badRequest("Can not specify ?detail=True and fields in the same request.")
	}
	if pq.Limit, pq.Marker, pq.SortKey, pq.SortDir, err = s.pageParams(q); err != nil {
		return err
	}
	ports, err := s.reader.ListPorts(c.Request().Context(), pq)
	if err != nil {
		return err
	}
	if fields == nil && !detail {
		fields = map[string]bool{}
		for _, f := range portListFields {
			fields[f] = true
		}
	}
	base := s.baseURL(c)
	var b bytes.Buffer
	b.WriteString(`{"ports":[`)
	for i, p := range ports {
		if i > 0 {
			b.WriteByte(',')
		}
		writePort(&b, base, p, minor, fields)
	}
	b.WriteByte(']')
	if len(ports) == pq.Limit && len(ports) > 0 {
		writeNext(&b, "ports", nextURL(base, c.Request().URL.Path, q, pq.Limit, ports[len(ports)-1].UUID))
	}
	b.WriteByte('}')
	return writeJSON(c, http.StatusOK, b.Bytes())
}

func (s *Server) showPort(c *echo.Context) error {
	minor := minorOf(c)
	fields, err := parseFields(c.QueryParams(), minor, portFieldMinor)
	if err != nil {
		return err
	}
	p, err := s.reader.GetPort(c.Request().Context(), c.Param("port"))
	if err != nil {
		return err
	}
	var b bytes.Buffer
	writePort(&b, s.baseURL(c), p, minor, fields)
	return writeJSON(c, http.StatusOK, b.Bytes())
}

func portPatchDoc(p *node.Port) map[string]any {
	obj := func(m map[string]any) map[string]any {
		if m == nil {
			return map[string]any{}
		}
		return m
	}
	var pn any
	if p.PhysicalNetwork != "" {
		pn = p.PhysicalNetwork
	}
	return map[string]any{
		"address": p.Address, "node_uuid": p.NodeUUID, "extra": obj(p.Extra), "pxe_enabled": p.PXEEnabled,
		"local_link_connection": obj(p.LocalLinkConnection), "physical_network": pn,
		"is_smartnic": p.IsSmartNIC, "portgroup_uuid": nil,
	}
}

func (s *Server) patchPort(c *echo.Context) error {
	b, err := readBody(c, DefaultBodyLimit)
	if err != nil {
		return err
	}
	minor := minorOf(c)
	settableOf := func(f string) (settable, bool) { st, ok := portSettable[f]; return st, ok }
	patch, err := decodePatch(b, minor, settableOf, portInternal)
	if err != nil {
		return err
	}
	p, err := s.engine.UpdatePort(c.Request().Context(), c.Param("port"), func(p *node.Port) error {
		doc := portPatchDoc(p)
		fields, err := applyPatch(doc, patch)
		if err != nil {
			return err
		}
		for name := range doc {
			raw, ok := fields[name]
			if !ok {
				raw = json.RawMessage("null")
			}
			if err := setPortField(p, name, raw); err != nil {
				return err
			}
		}
		if p.Address == "" || p.NodeUUID == "" {
			return badRequest("address and node_uuid can not be removed")
		}
		return nil
	})
	if err != nil {
		return err
	}
	var out bytes.Buffer
	writePort(&out, s.baseURL(c), p, minor, nil)
	return writeJSON(c, http.StatusOK, out.Bytes())
}

func (s *Server) deletePort(c *echo.Context) error {
	if err := s.engine.DeletePort(c.Request().Context(), c.Param("port")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
