// Command rsschild is a helper for imagestream's memory test and
// benchmark, built without the race detector and run as a child process
// so that the peak RSS it reports is the streamer's own.
//
//	rsschild serve -seed 1 -size 268435456 [-window 33554432] -dir /tmp/cache
//	    generates (or reuses) a zstd-compressed test image, serves it on
//	    loopback and prints {"url", "sha256", "bytes"} as one JSON line;
//	    it exits when its standard input closes.
//	rsschild stream -url URL -sha256 HEX -out FILE
//	    streams the image into FILE with imagestream.Stream's defaults and
//	    prints {"written", "format", "seconds", "vmhwm_bytes"}.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/imagestream"
	"github.com/ingot-dev/ingot/shared/imagestream/internal/testimage"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rsschild serve|stream [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		seed := fs.Uint64("seed", 1, "image seed")
		size := fs.Int64("size", 256<<20, "image size in bytes")
		dir := fs.String("dir", os.TempDir(), "cache directory")
		window := fs.Int("window", 0, "zstd window size (0: the encoder's default, 8 MiB)")
		fs.Parse(os.Args[2:])
		err = serve(*seed, *size, *window, *dir)
	case "stream":
		fs := flag.NewFlagSet("stream", flag.ExitOnError)
		url := fs.String("url", "", "image URL")
		sum := fs.String("sha256", "", "sha256 of the served bytes")
		out := fs.String("out", "", "file to write")
		fs.Parse(os.Args[2:])
		err = stream(*url, *sum, *out)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rsschild:", err)
		os.Exit(1)
	}
}

// serve makes sure the compressed image is in dir, serves it and prints
// where.
func serve(seed uint64, size int64, window int, dir string) error {
	path, sum, err := cached(seed, size, window, dir)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "image.raw.zst", st.ModTime(), io.NewSectionReader(f, 0, st.Size()))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	if err := json.NewEncoder(os.Stdout).Encode(map[string]any{
		"url": "http://" + ln.Addr().String() + "/image.raw.zst", "sha256": sum, "bytes": st.Size(),
	}); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

// cached returns the path and sha256 of the zstd-compressed image, making
// it once per (generator version, seed, size, window).
func cached(seed uint64, size int64, window int, dir string) (string, string, error) {
	name := fmt.Sprintf("ingot-testimage-v%d-s%d-n%d-w%d.raw.zst", testimage.Version, seed, size, window)
	path := filepath.Join(dir, name)
	if b, err := os.ReadFile(path + ".sha256"); err == nil {
		if _, err := os.Stat(path); err == nil {
			return path, strings.TrimSpace(string(b)), nil
		}
	}
	tmp, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return "", "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(tmp, h), 1<<20)
	opts := []zstd.EOption{zstd.WithEncoderConcurrency(runtime.NumCPU())}
	if window > 0 {
		opts = append(opts, zstd.WithWindowSize(window))
	}
	zw, err := zstd.NewWriter(bw, opts...)
	if err != nil {
		return "", "", err
	}
	if err := testimage.Write(zw, seed, size); err != nil {
		return "", "", err
	}
	if err := zw.Close(); err != nil {
		return "", "", err
	}
	if err := bw.Flush(); err != nil {
		return "", "", err
	}
	if err := tmp.Close(); err != nil {
		return "", "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", "", err
	}
	return path, sum, os.WriteFile(path+".sha256", []byte(sum+"\n"), 0o644)
}

func stream(url, sum, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	info := api.ImageInfo{ID: "rss", URLs: []string{url}, OSHashAlgo: "sha256", OSHashValue: sum}
	res, err := imagestream.Stream(context.Background(), info, f, imagestream.Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	hwm, err := vmHWM()
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"written": res.Written, "format": res.Format, "seconds": res.Duration.Seconds(), "vmhwm_bytes": hwm,
	})
}

// vmHWM reads the peak resident set size from /proc/self/status.
func vmHWM() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
