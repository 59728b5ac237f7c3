package imagestream

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
)

// newDefaultClient builds the client Stream uses when Options.Client is
// nil: bounded dial, TLS handshake and response header waits (no overall
// timeout: an image may take hours), no transparent gzip (the bytes must
// stay as served), the image's proxies.
func newDefaultClient(info api.ImageInfo, insecure bool) *http.Client {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 proxyFunc(info.Proxies, info.NoProxy),
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          4,
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
		ReadBufferSize:        64 << 10,
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12}, //nolint:gosec // ipa-insecure
	}
	return &http.Client{Transport: tr}
}

// proxyFunc routes requests through image_info's proxies ({"http": url,
// "https": url}, requests-style) except for hosts listed in noProxy
// (comma-separated host names, domain suffixes, "*"). Without proxies it
// falls back to the environment (HTTP_PROXY, ...).
func proxyFunc(proxies map[string]string, noProxy string) func(*http.Request) (*url.URL, error) {
	if len(proxies) == 0 {
		return http.ProxyFromEnvironment
	}
	return func(r *http.Request) (*url.URL, error) {
		if bypassProxy(r.URL, noProxy) {
			return nil, nil
		}
		p, ok := proxies[r.URL.Scheme]
		if !ok || p == "" {
			return nil, nil
		}
		return url.Parse(p)
	}
}

// bypassProxy reports whether u's host is listed in noProxy.
func bypassProxy(u *url.URL, noProxy string) bool {
	host := strings.ToLower(u.Hostname())
	for e := range strings.SplitSeq(noProxy, ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "":
		case e == "*":
			return true
		case strings.Contains(e, ":") && e == strings.ToLower(u.Host):
			return true
		default:
			e = strings.TrimPrefix(e, ".")
			if host == e || strings.HasSuffix(host, "."+e) {
				return true
			}
		}
	}
	return false
}

// redactURL hides what an image URL may carry as credentials: the
// password of its userinfo and every query value (signed URLs put their
// signature there). The result is for logs and errors only.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable url>"
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		u.RawQuery = q.Encode()
	}
	u.Fragment, u.RawFragment = "", ""
	return u.Redacted()
}

// HTTPClient returns the client Stream uses for info: opts.Client, or the
// default built from info's proxies and opts.Insecure. Small downloads
// that belong to an image (a config drive URL) use it too.
func (o Options) HTTPClient(info api.ImageInfo) *http.Client {
	if o.Client != nil {
		return o.Client
	}
	return newDefaultClient(info, o.Insecure)
}
