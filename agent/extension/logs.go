package extension

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/ingot-dev/ingot/agent/cmdapi"
	"github.com/ingot-dev/ingot/shared/api"
)

// LogSources are what log.collect_system_logs gathers.
type LogSources struct {
	// Root holds proc/ (the real "/" on a machine).
	Root string
	// AgentLog returns the agent's own recent log.
	AgentLog func() []byte
	// Dmesg returns the kernel ring buffer.
	Dmesg func() ([]byte, error)
	// Now stamps the archive's files; time.Now when nil.
	Now func() time.Time
}

// maxLogFile bounds each file in the archive.
const maxLogFile = 4 << 20

// procFiles are copied from Root into the archive.
var procFiles = []string{"proc/cmdline", "proc/cpuinfo", "proc/meminfo", "proc/mounts", "proc/partitions",
	"proc/modules", "proc/net/dev", "proc/uptime", "proc/version"}

// secretParam matches kernel parameters carrying secrets.
var secretParam = regexp.MustCompile(`((?:ipa-agent-token|ipa-[a-z-]*password)=)("[^"]*"|\S+)`)

// RedactCmdline hides secret values on a kernel command line.
func RedactCmdline(b []byte) []byte { return secretParam.ReplaceAll(b, []byte("${1}***")) }

// collectSystemLogs is log.collect_system_logs: a gzipped tarball, base64
// encoded, of the agent's log, the kernel log, the inventory and a few
// /proc files; whatever is missing is left out.
func (x *Extensions) collectSystemLogs(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	b, err := x.logArchive(ctx)
	if err != nil {
		return nil, cmdErr("CommandExecutionError", "Command execution failed", err)
	}
	return map[string]string{"system_logs": base64.StdEncoding.EncodeToString(b)}, nil
}

func (x *Extensions) logArchive(ctx context.Context) ([]byte, error) {
	src := x.opts.Logs
	now := time.Now
	if src.Now != nil {
		now = src.Now
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, data []byte) error {
		if len(data) > maxLogFile {
			data = data[len(data)-maxLogFile:]
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: now()}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if src.AgentLog != nil {
		if err := add("agent.log", src.AgentLog()); err != nil {
			return nil, err
		}
	}
	if src.Dmesg != nil {
		if d, err := src.Dmesg(); err == nil {
			if err := add("dmesg", d); err != nil {
				return nil, err
			}
		} else {
			x.opts.Log.Warn("kernel log unavailable", "err", err)
		}
	}
	if x.opts.Inventory != nil {
		inv, _ := x.opts.Inventory(ctx)
		j, err := json.MarshalIndent(inv, "", "  ")
		if err == nil {
			if err := add("inventory.json", j); err != nil {
				return nil, err
			}
		}
	}
	if src.Root != "" {
		for _, f := range procFiles {
			b, err := os.ReadFile(filepath.Join(src.Root, f))
			if err != nil {
				continue
			}
			if f == "proc/cmdline" {
				b = RedactCmdline(b)
			}
			if err := add(f, b); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write log archive: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("write log archive: %w", err)
	}
	return buf.Bytes(), nil
}

// getHardwareInfo is poll.get_hardware_info: the inventory.
func (x *Extensions) getHardwareInfo(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	if x.opts.Inventory == nil {
		return nil, cmdErr("CommandExecutionError", "Command execution failed", fmt.Errorf("no inventory source"))
	}
	inv, err := x.opts.Inventory(ctx)
	if err != nil {
		x.opts.Log.Warn("inventory is incomplete", "err", err)
	}
	return inv, nil
}
