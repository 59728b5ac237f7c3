// Package imagecache is the conductor's image cache: it fetches an image
// once (from HTTP(S), verifying the checksum the operator gave, or from a
// local file), stores it content-addressed by the SHA-256 of its bytes,
// serves it to agents over HTTP with Range support, and evicts the least
// recently used images when the cache outgrows its size bound.
//
// Images are stored as served (a zstd-compressed image stays compressed:
// the agent decompresses while writing). The cache survives restarts: it
// rescans its directory on start.
package imagecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
)

// Downloader fetches the image described by info into dst, verifying the
// checksum info names, and returns the algorithm and digest it verified.
// It writes the bytes as served (no decompression).
type Downloader func(ctx context.Context, info api.ImageInfo, dst *os.File) (algo, digest string, err error)

// Options configure a Cache.
type Options struct {
	// Dir holds the cached images.
	Dir string
	// MaxBytes bounds the cache's size; the least recently used images go
	// first. An image larger than the bound is refused.
	MaxBytes int64
	// BaseURL is where agents reach Handler, e.g. http://10.0.0.1:6385.
	BaseURL string
	// Download fetches http(s) images.
	Download Downloader
	Log      *slog.Logger
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Cache is the image cache.
type Cache struct {
	opts Options

	mu       sync.Mutex
	entries  map[string]*entry // by sha256
	bySource map[string]string // source|expected digest -> sha256
	inflight map[string]*flight
}

type entry struct {
	digest string
	size   int64
	used   time.Time
}

type flight struct {
	done chan struct{}
	info api.ImageInfo
	err  error
}

var digestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// New opens the cache in opts.Dir, creating it, and indexes what is
// already there (leftover partial downloads are removed).
func New(opts Options) (*Cache, error) {
	if opts.Dir == "" || opts.MaxBytes <= 0 || opts.BaseURL == "" {
		return nil, errors.New("image cache: Dir, MaxBytes and BaseURL are required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.BaseURL = strings.TrimRight(opts.BaseURL, "/")
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("create image cache: %w", err)
	}
	c := &Cache{opts: opts, entries: map[string]*entry{}, bySource: map[string]string{}, inflight: map[string]*flight{}}
	des, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("read image cache: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".partial-") {
			os.Remove(filepath.Join(opts.Dir, name))
			continue
		}
		if !digestRE.MatchString(name) || !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue
		}
		c.entries[name] = &entry{digest: name, size: fi.Size(), used: fi.ModTime()}
	}
	return c, nil
}

// Prepare makes the image at source available from the cache and returns
// image_info for the agent: the cache's URL and the SHA-256 of the bytes it
// will serve. http(s) sources are verified against want's checksum; file://
// sources against it when given. Concurrent calls for one image share one
// download.
func (c *Cache) Prepare(ctx context.Context, source string, want api.ImageInfo) (api.ImageInfo, error) {
	u, err := url.Parse(source)
	if err != nil {
		return api.ImageInfo{}, fmt.Errorf("image source %q: %w", source, err)
	}
	name := path.Base(u.Path)
	if name == "." || name == "/" || name == "" {
		name = "image"
	}
	key := source + "|" + want.OSHashAlgo + ":" + want.OSHashValue + "|" + want.Checksum
	c.mu.Lock()
	if want.OSHashAlgo == "sha256" && digestRE.MatchString(strings.ToLower(want.OSHashValue)) {
		// The operator's digest is our key: a cached copy needs no download.
		if e, ok := c.entries[strings.ToLower(want.OSHashValue)]; ok {
			c.touchLocked(e)
			c.mu.Unlock()
			return c.infoFor(e.digest, name, want), nil
		}
	}
	if d, ok := c.bySource[key]; ok {
		if e, ok := c.entries[d]; ok {
			c.touchLocked(e)
			c.mu.Unlock()
			return c.infoFor(d, name, want), nil
		}
	}
	if f, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.info, f.err
		case <-ctx.Done():
			return api.ImageInfo{}, ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	c.inflight[key] = f
	c.mu.Unlock()

	f.info, f.err = c.fetch(ctx, u, source, name, want, key)
	c.mu.Lock()
	delete(c.inflight, key)
	c.mu.Unlock()
	close(f.done)
	return f.info, f.err
}

func (c *Cache) infoFor(digest, name string, want api.ImageInfo) api.ImageInfo {
	info := want
	info.URLs = []string{c.opts.BaseURL + "/images/" + digest + "/" + url.PathEscape(name)}
	info.OSHashAlgo, info.OSHashValue, info.Checksum = "sha256", digest, ""
	return info
}

// fetch brings an image into the cache.
func (c *Cache) fetch(ctx context.Context, u *url.URL, source, name string, want api.ImageInfo, key string) (api.ImageInfo, error) {
	tmp, err := os.CreateTemp(c.opts.Dir, ".partial-*")
	if err != nil {
		return api.ImageInfo{}, fmt.Errorf("cache image: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name()) // a no-op once renamed into place
	}()
	var algo, digest string
	switch u.Scheme {
	case "http", "https":
		if c.opts.Download == nil {
			return api.ImageInfo{}, errors.New("cache image: no downloader configured")
		}
		info := want
		info.URLs = []string{source}
		if info.ID == "" {
			info.ID = name
		}
		algo, digest, err = c.opts.Download(ctx, info, tmp)
	case "file":
		algo, digest, err = copyLocal(ctx, u.Path, tmp, want)
	default:
		return api.ImageInfo{}, fmt.Errorf("image source %q: unsupported scheme %q", source, u.Scheme)
	}
	if err != nil {
		return api.ImageInfo{}, fmt.Errorf("cache image %s: %w", source, err)
	}
	if err := tmp.Sync(); err != nil {
		return api.ImageInfo{}, fmt.Errorf("cache image %s: %w", source, err)
	}
	sha := digest
	if algo != "sha256" {
		if sha, err = fileSHA256(ctx, tmp); err != nil {
			return api.ImageInfo{}, fmt.Errorf("hash cached image %s: %w", source, err)
		}
	}
	fi, err := tmp.Stat()
	if err != nil {
		return api.ImageInfo{}, err
	}
	if fi.Size() > c.opts.MaxBytes {
		return api.ImageInfo{}, fmt.Errorf("cache image %s: %d bytes exceed the cache size of %d bytes", source, fi.Size(), c.opts.MaxBytes)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evictLocked(fi.Size(), sha)
	if err := os.Rename(tmp.Name(), filepath.Join(c.opts.Dir, sha)); err != nil {
		return api.ImageInfo{}, fmt.Errorf("cache image %s: %w", source, err)
	}
	e := &entry{digest: sha, size: fi.Size()}
	c.entries[sha] = e
	c.touchLocked(e)
	c.bySource[key] = sha
	c.opts.Log.Info("image cached", "image", source, "bytes", fi.Size(), "sha256", sha)
	return c.infoFor(sha, name, want), nil
}

// copyLocal copies a local image into dst, verifying want's checksum when
// one is given.
func copyLocal(ctx context.Context, p string, dst *os.File, want api.ImageInfo) (string, string, error) {
	src, err := os.Open(p)
	if err != nil {
		return "", "", err
	}
	defer src.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(dst, h), ctxReader{ctx, src}); err != nil {
		return "", "", err
	}
	digest := hex.EncodeToString(h.Sum(nil))
	switch {
	case want.OSHashAlgo == "sha256" && want.OSHashValue != "":
		if !strings.EqualFold(want.OSHashValue, digest) {
			return "", "", fmt.Errorf("checksum mismatch: expected sha256 %s, got %s", strings.ToLower(want.OSHashValue), digest)
		}
	case len(want.Checksum) == 64:
		if !strings.EqualFold(want.Checksum, digest) {
			return "", "", fmt.Errorf("checksum mismatch: expected sha256 %s, got %s", strings.ToLower(want.Checksum), digest)
		}
	case want.OSHashValue != "" || want.Checksum != "":
		return "", "", errors.New("local images can be verified against a SHA-256 checksum only")
	}
	return "sha256", digest, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func fileSHA256(ctx context.Context, f *os.File) (string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (c *Cache) touchLocked(e *entry) {
	e.used = c.opts.Now()
	os.Chtimes(filepath.Join(c.opts.Dir, e.digest), e.used, e.used)
}

// evictLocked removes least recently used images until room bytes fit,
// never the image keep. An image being served stays readable: the open
// file outlives its name.
func (c *Cache) evictLocked(room int64, keep string) {
	var total int64
	list := make([]*entry, 0, len(c.entries))
	for _, e := range c.entries {
		total += e.size
		list = append(list, e)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].used.Before(list[j].used) })
	for _, e := range list {
		if total+room <= c.opts.MaxBytes {
			return
		}
		if e.digest == keep {
			continue
		}
		os.Remove(filepath.Join(c.opts.Dir, e.digest))
		delete(c.entries, e.digest)
		for k, d := range c.bySource {
			if d == e.digest {
				delete(c.bySource, k)
			}
		}
		total -= e.size
		c.opts.Log.Info("image evicted", "sha256", e.digest, "bytes", e.size)
	}
}

// Size returns the bytes the cache holds and how many images.
func (c *Cache) Size() (int64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var total int64
	for _, e := range c.entries {
		total += e.size
	}
	return total, len(c.entries)
}

// Handler serves GET and HEAD /images/<sha256>/<name> with Range support.
func (c *Cache) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		rest, ok := strings.CutPrefix(r.URL.Path, "/images/")
		digest, name, _ := strings.Cut(rest, "/")
		if !ok || !digestRE.MatchString(digest) {
			http.NotFound(w, r)
			return
		}
		c.mu.Lock()
		e, known := c.entries[digest]
		if known {
			c.touchLocked(e)
		}
		c.mu.Unlock()
		if !known {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(filepath.Join(c.opts.Dir, digest))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			http.Error(w, "stat failed", http.StatusInternalServerError)
			return
		}
		w.Header().Set("ETag", `"`+digest+`"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, name, fi.ModTime(), f)
	})
}
