package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrecedenceFlagsOverEnvOverFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "conductor.yaml")
	os.WriteFile(file, []byte("api-listen: 127.0.0.1:7000\nmax-limit: 7\nconductor-name: from-file\nautomated-clean: false\n"), 0o600)
	t.Setenv("INGOT_MAX_LIMIT", "8")
	t.Setenv("INGOT_CONDUCTOR_NAME", "from-env")
	c, err := Load([]string{"--config", file, "--conductor-name", "from-flag", "--state-dir", dir}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.APIListen != "127.0.0.1:7000" || c.MaxLimit != 8 || c.ConductorName != "from-flag" || c.AutomatedClean {
		t.Errorf("got %+v", c)
	}
	if c.Database != "sqlite://"+filepath.Join(dir, "ingot.db") {
		t.Errorf("default database %q", c.Database)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

func TestZeroConfigurationIsValid(t *testing.T) {
	c, err := Load(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.APIListen != "127.0.0.1:6385" || !strings.HasPrefix(c.Database, "sqlite://") {
		t.Errorf("defaults: %+v", c)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c, err := Load([]string{"--api-listen", "nohost", "--log-level", "loud", "--log-format", "xml", "--max-limit", "0",
		"--database", "mysql://x", "--power-state-timeout", "-1s", "--public-url", "ftp://x",
		"--iscsi-portal-port", "0", "--iscsi-verify", "twice"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"api-listen", "log-level", "log-format", "max-limit", "database", "power-state-timeout", "public-url",
		"iscsi-portal-port", "iscsi-verify"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
}

func TestSecretsRedacted(t *testing.T) {
	c, err := Load([]string{"--database", "postgres://ingot:s3cr3t@db:5432/ingot"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.String(), "s3cr3t") || strings.Contains(c.LogValue().String(), "s3cr3t") {
		t.Errorf("password leaked: %s / %s", c.String(), c.LogValue())
	}
	c.Database = "postgres://ingot:s3cr3t@db:99999999999/in got"
	err = c.Validate()
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("malformed URL: accepted, or password leaked in the error: %v", err)
	}
	if got := RedactURL("postgres://u:p%zz@h/d"); strings.Contains(got, "p%zz") {
		t.Errorf("RedactURL of an unparsable URL: %s", got)
	}
}

func TestUnknownFlagAndFile(t *testing.T) {
	if _, err := Load([]string{"--no-such-flag"}, io.Discard); err == nil {
		t.Error("unknown flag accepted")
	}
	if _, err := Load([]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, io.Discard); err == nil {
		t.Error("missing config file accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("api-listen: [unclosed\n"), 0o600)
	if _, err := Load([]string{"--config", bad}, io.Discard); err == nil {
		t.Error("malformed YAML accepted")
	}
	if _, err := Load([]string{"stray"}, io.Discard); err == nil {
		t.Error("stray argument accepted")
	}
}
