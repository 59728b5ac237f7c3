package iscsie2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/agent/iscsitarget"
	"github.com/ingot-dev/ingot/conductor/iscsi"
	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

// deployCredentials makes fresh CHAP credentials, as the conductor does
// per deploy.
func deployCredentials(t testing.TB) proto.Credentials {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return proto.Credentials{User: "ingot-deploy", Secret: hex.EncodeToString(b)}
}

func disk(t testing.TB, size int64) string {
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func prefixSum(t testing.TB, path string, n int64) [32]byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// stream copies img into w the way shared/imagestream does: sequential
// WriteAt calls of whatever size the reader hands out.
func stream(w io.WriterAt, img []byte) error {
	_, err := io.CopyBuffer(io.NewOffsetWriter(w, 0), bytes.NewReader(img), make([]byte, 100003))
	return err
}

func TestDeployOntoAgentTarget(t *testing.T) {
	tests := []struct {
		name   string
		mutual bool
		digest bool
		size   int
	}{
		{"CHAP, image not a multiple of the block size", false, false, 9<<20 + 4321},
		{"mutual CHAP and CRC32C digests", true, true, 3<<20 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			creds := deployCredentials(t)
			tcfg := iscsitarget.Config{Listen: "127.0.0.1:0", IQN: "iqn.2008-10.org.openstack:node-1", Device: disk(t, 16<<20),
				CHAPUser: creds.User, CHAPSecret: creds.Secret, Logger: logger(t)}
			var mutual proto.Credentials
			if tt.mutual {
				mutual = deployCredentials(t)
				mutual.User = "agent"
				tcfg.MutualUser, tcfg.MutualSecret = mutual.User, mutual.Secret
			}
			tg, err := iscsitarget.Start(ctx, tcfg)
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Stop()
			icfg := iscsi.Config{Portal: tg.Addr().String(), TargetIQN: tcfg.IQN, CHAP: creds, MutualCHAP: mutual,
				HeaderDigest: tt.digest, DataDigest: tt.digest, Logger: logger(t)}
			w, err := iscsi.NewWriter(ctx, icfg, iscsi.WriterOptions{Verify: iscsi.VerifyFull})
			if err != nil {
				t.Fatal(err)
			}
			img := make([]byte, tt.size)
			rand.Read(img)
			if int64(len(img)) > w.Size() {
				t.Fatal("image larger than the LUN")
			}
			if err := stream(w, img); err != nil {
				t.Fatal(err)
			}
			if err := w.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := w.Verify(); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := tg.Stop(); err != nil {
				t.Fatal(err)
			}
			if prefixSum(t, tcfg.Device, int64(len(img))) != sha256.Sum256(img) {
				t.Fatal("sha256 of the disk differs from the image's")
			}
		})
	}
}

func TestDeployRejectsWrongCredentials(t *testing.T) {
	creds := deployCredentials(t)
	tcfg := iscsitarget.Config{Listen: "127.0.0.1:0", IQN: "iqn.2008-10.org.openstack:node-2", Device: disk(t, 1<<20),
		CHAPUser: creds.User, CHAPSecret: creds.Secret, Logger: logger(t)}
	tg, err := iscsitarget.Start(t.Context(), tcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Stop()
	for _, c := range []proto.Credentials{{}, {User: creds.User, Secret: "an-old-deploy-secret"}} {
		_, err := iscsi.NewWriter(t.Context(), iscsi.Config{Portal: tg.Addr().String(), TargetIQN: tcfg.IQN, CHAP: c}, iscsi.WriterOptions{})
		if !errors.Is(err, proto.LoginAuthFailure) {
			t.Fatalf("credentials %v: %v, want an authentication failure", c, err)
		}
	}
}

// TestDeployResumesAcrossATargetRestart stops the agent's target in the
// middle of a write and starts a new one on the same address and disk: the
// writer logs in again and resumes from the last acknowledged LBA.
func TestDeployResumesAcrossATargetRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	tcfg := iscsitarget.Config{Listen: "127.0.0.1:0", IQN: "iqn.2008-10.org.openstack:node-3", Device: disk(t, 64<<20), Logger: logger(t)}
	tg, err := iscsitarget.Start(ctx, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	tcfg.Listen = tg.Addr().String()
	w, err := iscsi.NewWriter(ctx, iscsi.Config{Portal: tcfg.Listen, TargetIQN: tcfg.IQN, Logger: logger(t)},
		iscsi.WriterOptions{ChunkSize: 256 << 10, Reconnects: 5, ReconnectDelay: 50 * time.Millisecond, Verify: iscsi.VerifySampled, SampleEvery: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	img := make([]byte, 48<<20+77)
	rand.Read(img)
	half := 20<<20 + 12345
	if _, err := w.WriteAt(img[:half], 0); err != nil {
		t.Fatal(err)
	}
	// The agent's target goes away with writes in flight and comes back.
	if err := tg.Stop(); err != nil {
		t.Fatal(err)
	}
	tg2, err := iscsitarget.Start(ctx, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tg2.Stop()
	if _, err := w.WriteAt(img[half:], int64(half)); err != nil {
		t.Fatal(err)
	}
	if err := w.Verify(); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Reconnects == 0 || len(st.ResumedAt) == 0 || st.ResumedAt[0] == 0 {
		t.Fatalf("stats %+v: want a resume from a non-zero LBA", st)
	}
	w.Close()
	if prefixSum(t, tcfg.Device, int64(len(img))) != sha256.Sum256(img) {
		t.Fatal("sha256 of the disk differs from the image's after the resume")
	}
}
