package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/extension"
	"github.com/ingot-dev/ingot/shared/api"
)

// defaultInspectionPauses are IPA's waits between inspection posts after
// a connection error, a 5xx or a 409: five attempts, 5 s doubling to 30 s.
var defaultInspectionPauses = []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 30 * time.Second}

// InspectionData is what the agent posts to an inspection callback:
// IPA's "default" collector.
type InspectionData struct {
	Inventory     api.Inventory  `json:"inventory"`
	RootDisk      *api.Disk      `json:"root_disk"`
	BootInterface string         `json:"boot_interface,omitempty"`
	Configuration map[string]any `json:"configuration"`
	Error         *string        `json:"error"`
}

// postInspection collects the inventory and posts it to url, retrying as
// IPA does; it returns the node UUID the answer names ("" when it names
// none). Any other 4xx ends the attempt: the agent goes on to lookup.
func postInspection(ctx context.Context, url string, hc *http.Client, inventory func(context.Context) (api.Inventory, error),
	bootIF string, pauses []time.Duration, log *slog.Logger) (string, error) {
	data := InspectionData{Configuration: map[string]any{
		"collectors": []string{"default"},
		"managers":   []map[string]string{{"name": "generic_hardware_manager", "version": extension.HardwareManagerVersion}},
	}}
	var errs []string
	if inventory == nil {
		errs = append(errs, "the agent has no inventory source")
	} else if inv, err := inventory(ctx); err != nil {
		errs = append(errs, fmt.Sprintf("inventory: %v", err))
	} else {
		data.Inventory = inv
		if d, err := blockdev.Select(inv.Disks, blockdev.Hints{}, nil); err == nil {
			data.RootDisk = &d
		}
	}
	if bootIF != "" {
		data.BootInterface = "01-" + strings.ReplaceAll(bootIF, ":", "-")
	}
	if len(errs) > 0 {
		// IPA posts what it has, with the collectors' failures.
		e := strings.Join(errs, "; ")
		data.Error = &e
	}
	body, err := json.Marshal(data)
	if err != nil {
		return "", err
	}
	if pauses == nil {
		pauses = defaultInspectionPauses
	}
	for attempt := 0; ; attempt++ {
		uuid, retry, err := postInspectionOnce(ctx, url, hc, body)
		if err == nil {
			return uuid, nil
		}
		if !retry || attempt >= len(pauses) {
			return "", err
		}
		log.Warn("inspection data not accepted yet; retrying", "url", url, "attempt", attempt+1, "err", err, "wait", pauses[attempt])
		t := time.NewTimer(pauses[attempt])
		select {
		case <-ctx.Done():
			t.Stop()
			return "", context.Cause(ctx)
		case <-t.C:
		}
	}
}

// postInspectionOnce posts once and says whether a failure is worth
// another try.
func postInspectionOnce(ctx context.Context, url string, hc *http.Client, body []byte) (string, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", ctx.Err() == nil, fmt.Errorf("post inspection data: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		retry := resp.StatusCode >= 500 || resp.StatusCode == http.StatusConflict
		return "", retry, fmt.Errorf("post inspection data to %s: HTTP %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	// Ironic answers {"uuid": ...} (Inspector's shape) before API 1.84
	// and a lookup-shaped {"node": {"uuid": ...}} from 1.84.
	var ans struct {
		UUID string `json:"uuid"`
		Node struct {
			UUID string `json:"uuid"`
		} `json:"node"`
	}
	if err := json.Unmarshal(b, &ans); err != nil && len(bytes.TrimSpace(b)) > 0 {
		return "", false, fmt.Errorf("post inspection data to %s: unreadable answer: %w", url, err)
	}
	if ans.UUID != "" {
		return ans.UUID, false, nil
	}
	return ans.Node.UUID, false, nil
}
