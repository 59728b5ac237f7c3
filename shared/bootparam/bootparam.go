// Package bootparam is the kernel command line contract between the
// conductor, which renders it into iPXE scripts, and the agent, which reads
// it from /proc/cmdline. It speaks ironic-python-agent's parameters
// (ipa-api-url, BOOTIF, ipa-insecure, ...) so Ironic's own PXE templates boot
// Ingot's agent unchanged, plus Ingot's own under the "ingot." prefix.
//
// Parse and Format are pure and round-trip: Parse(Format(p)) == p for every
// valid p.
package bootparam

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Params are the agent's boot parameters. The zero value of a field means
// "not given"; Defaults fills IPA's defaults.
type Params struct {
	// APIURLs are Ironic API endpoints (ipa-api-url, comma-separated), tried
	// in order.
	APIURLs []string
	// BootIF is the MAC of the NIC the machine PXE-booted from (BOOTIF,
	// "01-aa-bb-cc-dd-ee-ff" on the wire), lower-case with colons.
	BootIF string
	// Insecure skips TLS verification towards Ironic and image servers.
	Insecure bool
	// Debug turns on debug logging.
	Debug bool

	LookupTimeout  time.Duration // ipa-lookup-timeout (seconds)
	LookupInterval time.Duration // ipa-lookup-interval (seconds)

	ListenHost        string // ipa-listen-host
	ListenPort        int    // ipa-listen-port
	AdvertiseHost     string // ipa-advertise-host
	AdvertisePort     int    // ipa-advertise-port
	AdvertiseProtocol string // ipa-advertise-protocol: http or https

	// AgentToken is a pre-generated token (virtual media boots).
	AgentToken string

	HTTPRequestTimeout             time.Duration // ipa-http-request-timeout
	ImageDownloadConnectionTimeout time.Duration // ipa-image-download-connection-timeout
	ImageDownloadRetries           int           // ipa-image-download-connection-retries
	ImageDownloadRetryInterval     time.Duration // ipa-image-download-connection-retry-interval

	IronicAPIVersion string // ipa-ironic-api-version
	GlobalRequestID  string // ipa-global-request-id

	// InspectionCallbackURL is where the agent posts its inventory before
	// looking up (ipa-inspection-callback-url): Ironic's
	// <api>/v1/continue_inspection, or an ironic-inspector's /v1/continue.
	InspectionCallbackURL string

	// Ingot's own parameters.

	// Interface pins the NIC to bring up by name (ingot.interface), for
	// machines whose BOOTIF is not passed.
	Interface string
	// TLS selects the command API's transport (ingot.tls): "auto" generates
	// a self-signed certificate sent as agent_verify_ca, "off" serves plain
	// HTTP.
	TLS string
	// Disk is a block device or image file to treat as the only disk
	// (ingot.disk), for tests and special hardware.
	Disk string
	// Modules are extra kernel modules to load, in order (ingot.modules).
	Modules []string
}

// Defaults returns IPA's defaults.
func Defaults() Params {
	return Params{
		LookupTimeout:                  600 * time.Second,
		LookupInterval:                 time.Second,
		ListenPort:                     9999,
		AdvertisePort:                  9999,
		AdvertiseProtocol:              "http",
		HTTPRequestTimeout:             30 * time.Second,
		ImageDownloadConnectionTimeout: 60 * time.Second,
		ImageDownloadRetries:           9,
		ImageDownloadRetryInterval:     10 * time.Second,
		TLS:                            "off",
	}
}

// WithDefaults returns p with every unset field taken from Defaults.
func (p Params) WithDefaults() Params {
	d := Defaults()
	if p.LookupTimeout == 0 {
		p.LookupTimeout = d.LookupTimeout
	}
	if p.LookupInterval == 0 {
		p.LookupInterval = d.LookupInterval
	}
	if p.ListenPort == 0 {
		p.ListenPort = d.ListenPort
	}
	if p.AdvertisePort == 0 {
		p.AdvertisePort = p.ListenPort
	}
	if p.AdvertiseProtocol == "" {
		p.AdvertiseProtocol = d.AdvertiseProtocol
	}
	if p.HTTPRequestTimeout == 0 {
		p.HTTPRequestTimeout = d.HTTPRequestTimeout
	}
	if p.ImageDownloadConnectionTimeout == 0 {
		p.ImageDownloadConnectionTimeout = d.ImageDownloadConnectionTimeout
	}
	if p.ImageDownloadRetries == 0 {
		p.ImageDownloadRetries = d.ImageDownloadRetries
	}
	if p.ImageDownloadRetryInterval == 0 {
		p.ImageDownloadRetryInterval = d.ImageDownloadRetryInterval
	}
	if p.TLS == "" {
		p.TLS = d.TLS
	}
	return p
}

// Parameter names.
const (
	keyAPIURL          = "ipa-api-url"
	keyBootIF          = "BOOTIF"
	keyInsecure        = "ipa-insecure"
	keyDebug           = "ipa-debug"
	keyLookupTimeout   = "ipa-lookup-timeout"
	keyLookupInterval  = "ipa-lookup-interval"
	keyListenHost      = "ipa-listen-host"
	keyListenPort      = "ipa-listen-port"
	keyAdvertiseHost   = "ipa-advertise-host"
	keyAdvertisePort   = "ipa-advertise-port"
	keyAdvertiseProto  = "ipa-advertise-protocol"
	keyAgentToken      = "ipa-agent-token"
	keyHTTPTimeout     = "ipa-http-request-timeout"
	keyDLTimeout       = "ipa-image-download-connection-timeout"
	keyDLRetries       = "ipa-image-download-connection-retries"
	keyDLRetryInterval = "ipa-image-download-connection-retry-interval"
	keyAPIVersion      = "ipa-ironic-api-version"
	keyRequestID       = "ipa-global-request-id"
	keyInspection      = "ipa-inspection-callback-url"
	keyInterface       = "ingot.interface"
	keyTLS             = "ingot.tls"
	keyDisk            = "ingot.disk"
	keyModules         = "ingot.modules"
)

// Split breaks a kernel command line into words, honouring double quotes
// as the kernel does ("a=b c" is one word).
func Split(cmdline string) []string {
	var words []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		words = append(words, cur.String())
	}
	return words
}

// Parse reads the agent's parameters from a kernel command line. Unknown
// words are ignored (the command line belongs to the kernel too); a known
// parameter with an invalid value is an error naming it, and all such
// errors are reported together. The last occurrence of a parameter wins.
func Parse(cmdline string) (Params, error) {
	var p Params
	var errs []error
	bad := func(k, v, why string) { errs = append(errs, fmt.Errorf("%s=%q: %s", k, v, why)) }
	seconds := func(k, v string, dst *time.Duration) {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n <= 0 || n > 1e7 {
			bad(k, v, "want a positive number of seconds")
			return
		}
		*dst = time.Duration(n * float64(time.Second))
	}
	port := func(k, v string, dst *int) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			bad(k, v, "want a port number 1-65535")
			return
		}
		*dst = n
	}
	flag := func(k, v string, dst *bool) {
		b, ok := parseBool(v)
		if !ok {
			bad(k, v, "want a boolean (1/0, true/false)")
			return
		}
		*dst = b
	}
	for _, w := range Split(cmdline) {
		k, v, hasValue := strings.Cut(w, "=")
		switch k {
		case keyAPIURL:
			p.APIURLs = nil
			for _, u := range strings.Split(v, ",") {
				u = strings.TrimRight(strings.TrimSpace(u), "/")
				if u == "" {
					continue
				}
				pu, err := url.Parse(u)
				if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
					bad(k, u, "want http(s)://host[:port]")
					continue
				}
				p.APIURLs = append(p.APIURLs, u)
			}
		case keyBootIF:
			mac, err := ParseBootIF(v)
			if err != nil {
				bad(k, v, err.Error())
				continue
			}
			p.BootIF = mac
		case keyInsecure:
			if !hasValue {
				v = "1"
			}
			flag(k, v, &p.Insecure)
		case keyDebug:
			if !hasValue {
				v = "1"
			}
			flag(k, v, &p.Debug)
		case keyLookupTimeout:
			seconds(k, v, &p.LookupTimeout)
		case keyLookupInterval:
			seconds(k, v, &p.LookupInterval)
		case keyListenHost:
			if v != "" && net.ParseIP(strings.Trim(v, "[]")) == nil {
				bad(k, v, "want an IP address")
				continue
			}
			p.ListenHost = strings.Trim(v, "[]")
		case keyListenPort:
			port(k, v, &p.ListenPort)
		case keyAdvertiseHost:
			if v == "" || strings.ContainsAny(v, "/ ") {
				bad(k, v, "want a host name or IP address")
				continue
			}
			p.AdvertiseHost = strings.Trim(v, "[]")
		case keyAdvertisePort:
			port(k, v, &p.AdvertisePort)
		case keyAdvertiseProto:
			if v != "http" && v != "https" {
				bad(k, v, "want http or https")
				continue
			}
			p.AdvertiseProtocol = v
		case keyAgentToken:
			p.AgentToken = v
		case keyHTTPTimeout:
			seconds(k, v, &p.HTTPRequestTimeout)
		case keyDLTimeout:
			seconds(k, v, &p.ImageDownloadConnectionTimeout)
		case keyDLRetries:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1000 {
				bad(k, v, "want a retry count 0-1000")
				continue
			}
			p.ImageDownloadRetries = n
		case keyDLRetryInterval:
			seconds(k, v, &p.ImageDownloadRetryInterval)
		case keyAPIVersion:
			p.IronicAPIVersion = v
		case keyRequestID:
			p.GlobalRequestID = v
		case keyInspection:
			pu, err := url.Parse(v)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				bad(k, v, "want an http(s) URL")
				continue
			}
			p.InspectionCallbackURL = v
		case keyInterface:
			if v == "" || strings.ContainsAny(v, "/ ") || len(v) > 15 {
				bad(k, v, "want an interface name")
				continue
			}
			p.Interface = v
		case keyTLS:
			if v != "auto" && v != "off" {
				bad(k, v, "want auto or off")
				continue
			}
			p.TLS = v
		case keyDisk:
			if !strings.HasPrefix(v, "/") {
				bad(k, v, "want an absolute path")
				continue
			}
			p.Disk = v
		case keyModules:
			p.Modules = nil
			for _, m := range strings.Split(v, ",") {
				if m = strings.TrimSpace(m); m != "" {
					p.Modules = append(p.Modules, m)
				}
			}
		}
	}
	return p, errors.Join(errs...)
}

// ParseBootIF reads a BOOTIF value: the PXE hardware type ("01-") followed
// by the MAC with dashes, or a plain MAC.
func ParseBootIF(v string) (string, error) {
	s := strings.ToLower(v)
	if len(s) == 20 && strings.HasPrefix(s, "01-") {
		s = s[3:]
	}
	s = strings.ReplaceAll(s, "-", ":")
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", errors.New("want 01-aa-bb-cc-dd-ee-ff")
	}
	return hw.String(), nil
}

func parseBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on", "y", "t":
		return true, true
	case "0", "false", "no", "off", "n", "f":
		return false, true
	}
	return false, false
}

func secs(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

func quote(v string) string {
	if strings.ContainsAny(v, " \t\n\r") {
		return `"` + v + `"`
	}
	return v
}

// Format renders p as kernel command line words in a fixed order,
// omitting fields left at their zero value. Values are not re-validated:
// callers format parameters they built themselves.
func Format(p Params) string {
	var w []string
	add := func(k, v string) { w = append(w, k+"="+quote(v)) }
	if len(p.APIURLs) > 0 {
		add(keyAPIURL, strings.Join(p.APIURLs, ","))
	}
	if p.BootIF != "" {
		add(keyBootIF, "01-"+strings.ReplaceAll(p.BootIF, ":", "-"))
	}
	if p.Insecure {
		add(keyInsecure, "1")
	}
	if p.Debug {
		add(keyDebug, "1")
	}
	if p.LookupTimeout != 0 {
		add(keyLookupTimeout, secs(p.LookupTimeout))
	}
	if p.LookupInterval != 0 {
		add(keyLookupInterval, secs(p.LookupInterval))
	}
	if p.ListenHost != "" {
		add(keyListenHost, p.ListenHost)
	}
	if p.ListenPort != 0 {
		add(keyListenPort, strconv.Itoa(p.ListenPort))
	}
	if p.AdvertiseHost != "" {
		add(keyAdvertiseHost, p.AdvertiseHost)
	}
	if p.AdvertisePort != 0 {
		add(keyAdvertisePort, strconv.Itoa(p.AdvertisePort))
	}
	if p.AdvertiseProtocol != "" {
		add(keyAdvertiseProto, p.AdvertiseProtocol)
	}
	if p.AgentToken != "" {
		add(keyAgentToken, p.AgentToken)
	}
	if p.HTTPRequestTimeout != 0 {
		add(keyHTTPTimeout, secs(p.HTTPRequestTimeout))
	}
	if p.ImageDownloadConnectionTimeout != 0 {
		add(keyDLTimeout, secs(p.ImageDownloadConnectionTimeout))
	}
	if p.ImageDownloadRetries != 0 {
		add(keyDLRetries, strconv.Itoa(p.ImageDownloadRetries))
	}
	if p.ImageDownloadRetryInterval != 0 {
		add(keyDLRetryInterval, secs(p.ImageDownloadRetryInterval))
	}
	if p.IronicAPIVersion != "" {
		add(keyAPIVersion, p.IronicAPIVersion)
	}
	if p.GlobalRequestID != "" {
		add(keyRequestID, p.GlobalRequestID)
	}
	if p.InspectionCallbackURL != "" {
		add(keyInspection, p.InspectionCallbackURL)
	}
	if p.Interface != "" {
		add(keyInterface, p.Interface)
	}
	if p.TLS != "" {
		add(keyTLS, p.TLS)
	}
	if p.Disk != "" {
		add(keyDisk, p.Disk)
	}
	if len(p.Modules) > 0 {
		add(keyModules, strings.Join(p.Modules, ","))
	}
	return strings.Join(w, " ")
}

// Names lists every parameter this package understands, for documentation.
func Names() []string {
	n := []string{keyAPIURL, keyBootIF, keyInsecure, keyDebug, keyLookupTimeout, keyLookupInterval,
		keyListenHost, keyListenPort, keyAdvertiseHost, keyAdvertisePort, keyAdvertiseProto, keyAgentToken,
		keyHTTPTimeout, keyDLTimeout, keyDLRetries, keyDLRetryInterval, keyAPIVersion, keyRequestID,
		keyInterface, keyTLS, keyDisk, keyModules}
	slices.Sort(n)
	return n
}
