// Package httpapi serves the conductor's Ironic-compatible REST API (v1):
// version discovery and microversion negotiation, nodes, ports, node
// states, power, boot device, maintenance, validation, drivers and
// conductors, with Ironic's JSON shapes, status codes and error envelope.
//
// It is the only package that imports echo. Reads go to a Reader (the
// store); every change goes through the engine. Errors become HTTP statuses
// in one function, errorStatus.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v5"
	"github.com/labstack/echo/v5/middleware"

	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/store"
)

// Reader is the read side the API needs.
type Reader interface {
	GetNode(ctx context.Context, ident string) (*node.Node, error)
	ListNodes(ctx context.Context, q store.NodeQuery) ([]*node.Node, error)
	GetPort(ctx context.Context, uuid string) (*node.Port, error)
	ListPorts(ctx context.Context, q store.PortQuery) ([]*node.Port, error)
	ListConductors(ctx context.Context) ([]node.Conductor, error)
}

// Microversions this API implements: the minimum is Ironic's, the maximum
// the one Ironic 21.4 (2023.1) serves.
const (
	MinMinor = 1
	MaxMinor = 82
)

// Limits on request bodies. Provision requests may carry a config drive.
const (
	DefaultBodyLimit   = 1 << 20
	ProvisionBodyLimit = 96 << 20
	// InspectionBodyLimit bounds inspection data (Ironic's
	// [api]max_json_body_size_inspection is 1 MiB too, but collectors
	// such as logs make bodies larger).
	InspectionBodyLimit = 16 << 20
)

// Options configure the API server.
type Options struct {
	// PublicURL is the base of links in responses (scheme://host:port);
	// derived from each request when empty.
	PublicURL string
	// MaxLimit caps page sizes (Ironic's [api]max_limit, 1000).
	MaxLimit int
	// ConductorTimeout: conductors silent for longer are reported dead
	// (Ironic's [conductor]heartbeat_timeout, 60 s).
	ConductorTimeout time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Agent is the configuration lookup hands to agents.
	Agent AgentConfig
	// Images, when set, serves the conductor's image cache under /images/.
	Images http.Handler
}

// Server is the API's HTTP handler.
type Server struct {
	echo   *echo.Echo
	engine *engine.Engine
	reader Reader
	log    *slog.Logger
	opts   Options
}

// New builds the API server.
func New(eng *engine.Engine, reader Reader, log *slog.Logger, opts Options) *Server {
	if opts.MaxLimit == 0 {
		opts.MaxLimit = 1000
	}
	if opts.ConductorTimeout == 0 {
		opts.ConductorTimeout = 60 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Agent.HeartbeatTimeout == 0 {
		opts.Agent.HeartbeatTimeout = 300
	}
	opts.PublicURL = strings.TrimSuffix(opts.PublicURL, "/")
	s := &Server{engine: eng, reader: reader, log: log, opts: opts}
	e := echo.NewWithConfig(echo.Config{Logger: log, HTTPErrorHandler: s.handleError, NoGroupAutoRegister404Routes: true})
	e.Pre(middleware.RemoveTrailingSlash())
	e.Use(middleware.Recover(), s.requestID, s.logRequests)
	s.echo = e
	s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

func (s *Server) routes() {
	e := s.echo
	e.GET("/", s.root)
	v1 := e.Group("/v1", s.negotiate)
	v1.GET("", s.v1Root)

	v1.GET("/nodes", s.listNodes(false))
	v1.GET("/nodes/detail", s.listNodes(true))
	v1.POST("/nodes", s.createNode)
	v1.GET("/nodes/:node", s.showNode)
	v1.PATCH("/nodes/:node", s.patchNode)
	v1.DELETE("/nodes/:node", s.deleteNode)
	v1.GET("/nodes/:node/ports", s.nodePorts(false))
	v1.GET("/nodes/:node/ports/detail", s.nodePorts(true))
	v1.GET("/nodes/:node/states", s.nodeStates)
	v1.PUT("/nodes/:node/states/provision", s.setProvision)
	v1.PUT("/nodes/:node/states/power", s.setPower)
	v1.GET("/nodes/:node/management/boot_device", s.getBootDevice)
	v1.PUT("/nodes/:node/management/boot_device", s.setBootDevice)
	v1.GET("/nodes/:node/management/boot_device/supported", s.supportedBootDevices)
	v1.PUT("/nodes/:node/maintenance", s.setMaintenance(true))
	v1.DELETE("/nodes/:node/maintenance", s.setMaintenance(false))
	v1.GET("/nodes/:node/validate", s.validateNode)
	v1.GET("/nodes/:node/inventory", s.nodeInventory)

	v1.GET("/ports", s.listPorts(false))
	v1.GET("/ports/detail", s.listPorts(true))
	v1.POST("/ports", s.createPort)
	v1.GET("/ports/:port", s.showPort)
	v1.PATCH("/ports/:port", s.patchPort)
	v1.DELETE("/ports/:port", s.deletePort)

	v1.GET("/drivers", s.listDrivers)
	v1.GET("/drivers/:driver", s.showDriver)
	v1.GET("/drivers/:driver/properties", s.driverProperties)
	v1.GET("/conductors", s.listConductors)
	v1.GET("/conductors/:hostname", s.showConductor)
	s.ramdiskRoutes(v1)

	if s.opts.Images != nil {
		h := echo.WrapHandler(s.opts.Images)
		e.GET("/images/*", h)
		e.HEAD("/images/*", h)
	}
	e.RouteNotFound("/*", func(c *echo.Context) error {
		return node.Errorf(node.ErrNotFound, "The resource could not be found.")
	})
}

// --- microversions ---------------------------------------------------------

const (
	hdrVersion    = "X-OpenStack-Ironic-API-Version"
	hdrMinVersion = "X-OpenStack-Ironic-API-Minimum-Version"
	hdrMaxVersion = "X-OpenStack-Ironic-API-Maximum-Version"
	hdrStdVersion = "OpenStack-API-Version"
)

func versionString(minor int) string { return "1." + strconv.Itoa(minor) }

// ParseVersion reads the requested microversion from headers: Ironic's own
// header, or the standard "OpenStack-API-Version: baremetal 1.x". No header
// means the minimum; "latest" the maximum.
func ParseVersion(h http.Header) (minor int, err error) {
	v := strings.TrimSpace(h.Get(hdrVersion))
	if v == "" {
		if std := strings.Fields(h.Get(hdrStdVersion)); len(std) == 2 && strings.EqualFold(std[0], "baremetal") {
			v = std[1]
		}
	}
	switch strings.ToLower(v) {
	case "":
		return MinMinor, nil
	case "latest":
		return MaxMinor, nil
	}
	major, min, ok := strings.Cut(v, ".")
	if !ok || major != "1" {
		return 0, fmt.Errorf("Invalid value for %s header: %q; expected 1.<minor>", hdrVersion, v)
	}
	m, err := strconv.Atoi(min)
	if err != nil || m < 0 || strconv.Itoa(m) != min {
		return 0, fmt.Errorf("Invalid value for %s header: %q; expected 1.<minor>", hdrVersion, v)
	}
	if m < MinMinor || m > MaxMinor {
		return 0, fmt.Errorf("Version %s was requested but the minor version is not supported by this service. The supported version range is: [%s, %s].",
			v, versionString(MinMinor), versionString(MaxMinor))
	}
	return m, nil
}

const ctxMinor = "ironic.minor"

// negotiate resolves the microversion of a /v1 request and sets Ironic's
// version headers on every response, errors included.
func (s *Server) negotiate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		h := c.Response().Header()
		h.Set(hdrMinVersion, versionString(MinMinor))
		h.Set(hdrMaxVersion, versionString(MaxMinor))
		minor, err := ParseVersion(c.Request().Header)
		if err != nil {
			return notAcceptable(err.Error())
		}
		h.Set(hdrVersion, versionString(minor))
		c.Set(ctxMinor, minor)
		return next(c)
	}
}

func minorOf(c *echo.Context) int {
	if m, ok := c.Get(ctxMinor).(int); ok {
		return m
	}
	return MinMinor
}

// --- errors ----------------------------------------------------------------

// apiError carries an explicit status for errors raised by this package.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func notAcceptable(msg string) error { return &apiError{http.StatusNotAcceptable, msg} }

func tooLarge(limit int64) error {
	return &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf("Request entity too large: the body exceeds %d bytes.", limit)}
}

// errorStatus is the one place domain errors become HTTP statuses.
func errorStatus(err error) (int, string) {
	var ae *apiError
	var he *echo.HTTPError
	var coder echo.HTTPStatusCoder
	switch {
	case errors.As(err, &ae):
		return ae.status, ae.msg
	case errors.Is(err, node.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, node.ErrLocked), errors.Is(err, node.ErrConflict), errors.Is(err, node.ErrDuplicate):
		return http.StatusConflict, err.Error()
	case errors.Is(err, node.ErrInvalidTransition), errors.Is(err, node.ErrInvalid), errors.Is(err, node.ErrUnsupported):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, engine.ErrBusy):
		return http.StatusServiceUnavailable, err.Error()
	case errors.As(err, &he):
		return he.Code, he.Message
	case errors.As(err, &coder) && coder.StatusCode() != 0:
		return coder.StatusCode(), http.StatusText(coder.StatusCode())
	}
	return http.StatusInternalServerError, err.Error()
}

// handleError writes Ironic's error envelope: a JSON object whose
// "error_message" is itself a JSON string with faultstring, faultcode and
// debuginfo (406 uses code/title/description, as Ironic's does).
func (s *Server) handleError(c *echo.Context, err error) {
	if r, _ := echo.UnwrapResponse(c.Response()); r != nil && r.Committed {
		return
	}
	status, msg := errorStatus(err)
	var inner any
	switch {
	case status == http.StatusNotAcceptable:
		inner = map[string]any{"code": status, "title": "Not Acceptable", "description": msg}
	default:
		code := "Client"
		if status >= 500 {
			code = "Server"
			s.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
		}
		inner = map[string]any{"faultstring": msg, "faultcode": code, "debuginfo": nil}
	}
	b, _ := json.Marshal(inner)
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, map[string]string{"error_message": string(b)})
}

// --- middleware ------------------------------------------------------------

func (s *Server) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		id := "req-" + uuid.NewString()
		c.Response().Header().Set("Openstack-Request-Id", id)
		c.Set("request_id", id)
		return next(c)
	}
}

// logRequests logs each request at debug level: method, path (no query
// string, which may carry tokens), status and latency. Bodies are never
// logged.
func (s *Server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		start := time.Now()
		err := next(c)
		status := http.StatusOK
		if r, _ := echo.UnwrapResponse(c.Response()); r != nil && r.Status != 0 {
			status = r.Status
		}
		if err != nil {
			status, _ = errorStatus(err)
		}
		s.log.Debug("api request", "method", c.Request().Method, "path", c.Request().URL.Path,
			"status", status, "latency", time.Since(start), "request_id", c.Get("request_id"))
		return err
	}
}

// readBody reads a request body up to limit bytes.
func readBody(c *echo.Context, limit int64) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, badRequest("Could not read the request body: %v", err)
	}
	if int64(len(b)) > limit {
		return nil, tooLarge(limit)
	}
	return b, nil
}

// decodeObject reads a JSON object body into its raw fields.
func decodeObject(c *echo.Context, limit int64) (map[string]json.RawMessage, error) {
	b, err := readBody(c, limit)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, badRequest("The request body is empty; a JSON object is required.")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, badRequest("Malformed JSON in the request body: %v", jsonErr(err))
	}
	if m == nil {
		return nil, badRequest("The request body must be a JSON object, not null.")
	}
	return m, nil
}

func jsonErr(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("expected a JSON %s", strings.TrimPrefix(te.Type.String(), "map[string]json."))
	}
	return err.Error()
}

// baseURL is the scheme://host prefix for links.
func (s *Server) baseURL(c *echo.Context) string {
	if s.opts.PublicURL != "" {
		return s.opts.PublicURL
	}
	return c.Scheme() + "://" + c.Request().Host
}

func links(base, kind, id string) []map[string]string {
	return []map[string]string{
		{"href": base + "/v1/" + kind + "/" + id, "rel": "self"},
		{"href": base + "/" + kind + "/" + id, "rel": "bookmark"},
	}
}

// writeJSON writes pre-encoded JSON.
func writeJSON(c *echo.Context, status int, b []byte) error {
	return c.JSONBlob(status, b)
}
