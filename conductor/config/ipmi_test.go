package config_test

import (
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/conductor/config"
)

func TestIPMICipherSuites(t *testing.T) {
	tests := []struct {
		name    string
		flag    []string
		want    []int
		wantErr string
	}{
		{name: "default tries 17 then 3", want: []int{17, 3}},
		{name: "one pinned suite", flag: []string{"--ipmi-cipher-suites", "3"}, want: []int{3}},
		{name: "blanks and empty items are ignored", flag: []string{"--ipmi-cipher-suites", " 3 ,, 17 "}, want: []int{3, 17}},
		{name: "empty", flag: []string{"--ipmi-cipher-suites", " , "}, wantErr: "ipmi-cipher-suites: want at least one cipher suite ID"},
		{name: "not a number", flag: []string{"--ipmi-cipher-suites", "17,aes"}, wantErr: `ipmi-cipher-suites: "aes" is not a cipher suite ID (0 to 19)`},
		{name: "out of range", flag: []string{"--ipmi-cipher-suites", "20"}, wantErr: `ipmi-cipher-suites: "20" is not a cipher suite ID (0 to 19)`},
		{name: "negative", flag: []string{"--ipmi-cipher-suites", "-1"}, wantErr: `ipmi-cipher-suites: "-1" is not a cipher suite ID (0 to 19)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Load(append([]string{"--state-dir", t.TempDir()}, tc.flag...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := cfg.IPMICipherSuiteList()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("suites (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIPMICipherSuitesFromEnvironment(t *testing.T) {
	t.Setenv("INGOT_IPMI_CIPHER_SUITES", "3")
	cfg, err := config.Load([]string{"--state-dir", t.TempDir()}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := cfg.IPMICipherSuiteList(); err != nil || !cmp.Equal(got, []int{3}) {
		t.Errorf("suites from INGOT_IPMI_CIPHER_SUITES = %v, %v", got, err)
	}
}
