package httpapi

import (
	"encoding/json"
	"testing"
)

// FuzzParseInspection: whatever an unauthenticated agent posts, parsing
// never panics, and accepted data has an interface with a MAC.
func FuzzParseInspection(f *testing.F) {
	f.Add([]byte(`{"inventory":{"interfaces":[{"mac_address":"52:54:00:00:00:01"}],"bmc_address":null},"error":null}`))
	f.Add([]byte(`{"inventory":{"interfaces":[{"mac_address":7}]}}`))
	f.Add([]byte(`{"inventory":{"interfaces":[{"mac_address":"x"}],"cpu":{"count":"four"}}}`))
	f.Add([]byte(`{"inventory":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var body map[string]json.RawMessage
		if json.Unmarshal(b, &body) != nil {
			return
		}
		d, err := parseInspection(body)
		if err != nil {
			return
		}
		if len(d.Inventory.Interfaces) == 0 || d.Inventory.Interfaces[0].MACAddress == "" {
			t.Fatalf("accepted %s as %+v", b, d.Inventory)
		}
	})
}
