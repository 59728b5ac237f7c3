package pxe

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ingot-dev/ingot/conductor/ipxe"
)

// Handler serves network boot over HTTP:
//
//	GET /boot.ipxe              entry script: chains to the booted MAC's script
//	GET /ipxe/{mac}             the MAC's node script, or the unknown-MAC script
//	GET /nodes/{uuid}/{image}   deploy_kernel, deploy_ramdisk (local images; Range supported)
//	GET /firmware/{file}        iPXE binaries, for UEFI HTTP boot
//
// Every request is logged with its status and size.
func (b *Booter) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot.ipxe", b.serveChain)
	mux.HandleFunc("GET /ipxe/{mac}", b.serveScript)
	mux.HandleFunc("GET /nodes/{uuid}/{image}", b.serveImage)
	mux.HandleFunc("GET /firmware/{file}", b.serveFirmware)
	return b.logged(mux)
}

func (b *Booter) serveChain(w http.ResponseWriter, r *http.Request) {
	script, err := ipxe.RenderChain(ipxe.Chain{ScriptURL: b.opts.HTTPURL + "/ipxe/" + ipxe.MACVar})
	if err != nil {
		http.Error(w, "cannot render the entry script", http.StatusInternalServerError)
		b.log.Error("render entry script", "err", err)
		return
	}
	serveScript(w, r, script)
}

func (b *Booter) serveScript(w http.ResponseWriter, r *http.Request) {
	mac, err := ParseMAC(r.PathValue("mac"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if uuid, ok := b.nodeOf(mac); ok {
		script, err := os.ReadFile(b.path("nodes", uuid, "boot.ipxe"))
		if err == nil {
			b.log.Info("boot script served", "mac", mac, "node", uuid)
			serveScript(w, r, script)
			return
		}
		if !errors.Is(err, os.ErrNotExist) {
			b.log.Error("read boot script", "mac", mac, "node", uuid, "err", err)
			http.Error(w, "cannot read the boot script", http.StatusInternalServerError)
			return
		}
		// A link left without its node (removed meanwhile): unknown.
	}
	script, err := ipxe.RenderUnknown(ipxe.Unknown{Retry: b.opts.Unknown == UnknownRetry,
		RetryDelay: b.opts.UnknownRetryDelay, ScriptURL: b.ScriptURL(mac)})
	if err != nil {
		b.log.Error("render unknown-MAC script", "err", err)
		http.Error(w, "cannot render the boot script", http.StatusInternalServerError)
		return
	}
	b.log.Info("boot script served for an unknown MAC", "mac", mac, "behaviour", b.opts.Unknown)
	serveScript(w, r, script)
}

func serveScript(w http.ResponseWriter, r *http.Request, script []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(script))
}

func (b *Booter) serveImage(w http.ResponseWriter, r *http.Request) {
	uuid, image := r.PathValue("uuid"), r.PathValue("image")
	rec, err := b.readRecord(uuid)
	if err != nil || rec.Mode != modeAgent || (image != kernelName && image != ramdiskName) {
		http.NotFound(w, r)
		return
	}
	src := rec.Kernel
	if image == ramdiskName {
		src = rec.Ramdisk
	}
	if src == nil || src.Path == "" {
		http.NotFound(w, r) // the node fetches this image from its URL
		return
	}
	serveFile(w, r, src.Path)
}

func (b *Booter) serveFirmware(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if !slices.Contains(firmwareFiles, file) {
		http.NotFound(w, r)
		return
	}
	serveFile(w, r, filepath.Join(b.TFTPRoot(), file))
}

// serveFile serves a regular file with Range and conditional requests.
func serveFile(w http.ResponseWriter, r *http.Request, name string) {
	f, err := os.Open(name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// logged logs every request: method, path, status, bytes and time.
func (b *Booter) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(cw, r)
		b.log.Info("boot http", "method", r.Method, "path", r.URL.Path, "status", cw.status, "bytes", cw.n,
			"range", r.Header.Get("Range"), "client", r.RemoteAddr, "duration", time.Since(start).Round(time.Millisecond))
	})
}

type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadFrom keeps the server's sendfile path for http.ServeContent.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(r)
		c.n += n
		return n, err
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
