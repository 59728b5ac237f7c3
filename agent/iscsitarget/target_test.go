package iscsitarget

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/shared/iscsi"
)

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWritePaths(t *testing.T) {
	tests := []struct {
		name string
		ops  []iscsi.KeyValue
		size int
	}{
		{"immediate data only", nil, 4096},
		{"immediate plus unsolicited Data-Out", []iscsi.KeyValue{{Key: "MaxRecvDataSegmentLength", Value: "8192"},
			{Key: "FirstBurstLength", Value: "65536"}, {Key: "InitialR2T", Value: "No"}}, 60 << 10},
		{"unsolicited, then R2Ts", []iscsi.KeyValue{{Key: "MaxRecvDataSegmentLength", Value: "8192"},
			{Key: "FirstBurstLength", Value: "16384"}, {Key: "MaxBurstLength", Value: "32768"}, {Key: "InitialR2T", Value: "No"}}, 300 << 10},
		{"InitialR2T=Yes, ImmediateData=No: R2Ts only", []iscsi.KeyValue{{Key: "InitialR2T", Value: "Yes"},
			{Key: "ImmediateData", Value: "No"}, {Key: "MaxBurstLength", Value: "65536"}}, 200 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := newMemDevice(4 << 20)
			tg := startMem(t, testConfig(t), dev)
			c := dialClient(t, tg.Addr().String())
			c.loginNone(tt.ops...)
			if r := c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0); r.sense.Key != iscsi.SenseUnitAttention {
				t.Fatalf("first command after login: %s, want the power-on unit attention", describe(r))
			}
			data := randomBytes(t, tt.size)
			if r := c.command(1, cdb16(opWrite16, 8, uint32(tt.size/512)), data, len(data)); r.status != iscsi.StatusGood {
				t.Fatalf("write: %s", describe(r))
			}
			if !bytes.Equal(dev.bytes(8*512, tt.size), data) {
				t.Fatal("device content differs")
			}
			r := c.command(1, cdb16(opRead16, 8, uint32(tt.size/512)), nil, tt.size)
			if r.status != iscsi.StatusGood || !bytes.Equal(r.data, data) {
				t.Fatalf("read back: %s, %d bytes", describe(r), len(r.data))
			}
			c.logout()
		})
	}
}

func TestResiduals(t *testing.T) {
	dev := newMemDevice(1 << 20)
	tg := startMem(t, testConfig(t), dev)
	c := dialClient(t, tg.Addr().String())
	c.loginNone()
	c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0) // the unit attention
	// Allocation length 255, 36 bytes of... the standard page is 96 bytes: underflow.
	r := c.command(1, []byte{opInquiry, 0, 0, 0, 255, 0}, nil, 255)
	if !r.under || r.resid != 255-96 || len(r.data) != 96 {
		t.Fatalf("inquiry residual: under %v resid %d len %d", r.under, r.resid, len(r.data))
	}
	// Expected length smaller than the read: overflow, only EDTL bytes sent.
	r = c.command(1, cdb10(opRead10, 0, 2), nil, 512)
	if !r.over || r.resid != 512 || len(r.data) != 512 {
		t.Fatalf("read overflow: over %v resid %d len %d", r.over, r.resid, len(r.data))
	}
	// Zero-length read with an expected length: underflow of all of it.
	r = c.command(1, cdb10(opRead10, 0, 0), nil, 512)
	if r.status != iscsi.StatusGood || !r.under || r.resid != 512 {
		t.Fatalf("zero-block read: %s under %v resid %d", describe(r), r.under, r.resid)
	}
}

func TestLUNZeroAndOthers(t *testing.T) {
	tg := startMem(t, testConfig(t), newMemDevice(1<<20))
	c := dialClient(t, tg.Addr().String())
	c.loginNone()
	r := c.command(0, []byte{opReportLUNs, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)
	if r.status != iscsi.StatusGood || len(r.data) != 16 || r.data[9] != 1 {
		t.Fatalf("REPORT LUNS on LUN 0: %s % x", describe(r), r.data)
	}
	r = c.command(0, []byte{opInquiry, 0, 0, 0, 96, 0}, nil, 96)
	if r.data[0] != 0x7f {
		t.Fatalf("INQUIRY of LUN 0: peripheral byte 0x%02x, want 0x7f (no device)", r.data[0])
	}
	for _, lun := range []uint16{0, 2, 300} {
		r := c.command(lun, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
		if r.sense.Code() != iscsi.ASCLUNNotSupported {
			t.Errorf("TUR on LUN %d: %s", lun, describe(r))
		}
	}
	r = c.command(0, []byte{opRequestSense, 0, 0, 0, 18, 0}, nil, 18)
	if s, err := iscsi.ParseSense(r.data); err != nil || s.Code() != iscsi.ASCLUNNotSupported {
		t.Fatalf("REQUEST SENSE of LUN 0: %v %v", s, err)
	}
}

func TestLogin(t *testing.T) {
	chapCfg := func(c *Config) { c.CHAPUser, c.CHAPSecret = "ingot", "per-deploy-secret-1" }
	tests := []struct {
		name  string
		cfg   func(c *Config)
		steps func(c *client) iscsi.LoginStatus
		want  iscsi.LoginStatus
	}{
		{"no InitiatorName", nil, func(c *client) iscsi.LoginStatus {
			r, _ := c.exchange(&iscsi.LoginRequest{Transit: true, NSG: 1}, iscsi.KeyValue{Key: "TargetName", Value: testIQN})
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginMissingParameter},
		{"unknown target", nil, func(c *client) iscsi.LoginStatus {
			r, _ := c.exchange(&iscsi.LoginRequest{Transit: true, NSG: 1}, names("iqn.2024-01.dev.ingot.test:other")...)
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginNotFound},
		{"no TargetName in a normal session", nil, func(c *client) iscsi.LoginStatus {
			r, _ := c.exchange(&iscsi.LoginRequest{Transit: true, NSG: 1}, names(testIQN)[:2]...)
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginMissingParameter},
		{"unsupported version", nil, func(c *client) iscsi.LoginStatus {
			r, _ := c.exchange(&iscsi.LoginRequest{Transit: true, NSG: 1, VersionMin: 1, VersionMax: 1}, names(testIQN)...)
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginUnsupportedVersion},
		{"odd session type", nil, func(c *client) iscsi.LoginStatus {
			r, _ := c.exchange(&iscsi.LoginRequest{Transit: true, NSG: 1}, iscsi.KeyValue{Key: "InitiatorName", Value: "iqn.x:y"},
				iscsi.KeyValue{Key: "SessionType", Value: "Bogus"})
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginSessionTypeNotSupp},
		{"adding a connection to a session", nil, func(c *client) iscsi.LoginStatus {
			r, _ := c.exchange(&iscsi.LoginRequest{Transit: true, NSG: 1, TSIH: 9}, names(testIQN)...)
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginSessionDoesNotExist},
		{"CHAP required, AuthMethod None offered", chapCfg, func(c *client) iscsi.LoginStatus {
			r, _ := c.exchange(&iscsi.LoginRequest{Transit: true, NSG: 1}, append(names(testIQN), iscsi.KeyValue{Key: "AuthMethod", Value: "None"})...)
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginAuthFailure},
		{"CHAP required, security stage skipped", chapCfg, func(c *client) iscsi.LoginStatus {
			r, _ := c.exchange(&iscsi.LoginRequest{Transit: true, CSG: 1, NSG: 3}, names(testIQN)...)
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginAuthFailure},
		{"CHAP with the wrong secret", chapCfg, func(c *client) iscsi.LoginStatus {
			return c.chap("ingot", "wrong-secret-value", nil)
		}, iscsi.LoginAuthFailure},
		{"CHAP with the wrong user", chapCfg, func(c *client) iscsi.LoginStatus {
			return c.chap("mallory", "per-deploy-secret-1", nil)
		}, iscsi.LoginAuthFailure},
		{"CHAP with the right secret", chapCfg, func(c *client) iscsi.LoginStatus {
			return c.chap("ingot", "per-deploy-secret-1", nil)
		}, iscsi.LoginSuccess},
		{"CHAP with a malformed response", chapCfg, func(c *client) iscsi.LoginStatus {
			c.exchange(&iscsi.LoginRequest{NSG: 0}, append(names(testIQN), iscsi.KeyValue{Key: "AuthMethod", Value: "CHAP"})...)
			c.exchange(&iscsi.LoginRequest{}, iscsi.KeyValue{Key: "CHAP_A", Value: "5"})
			r, _ := c.exchange(&iscsi.LoginRequest{Transit: true, NSG: 1}, iscsi.KeyValue{Key: "CHAP_N", Value: "ingot"}, iscsi.KeyValue{Key: "CHAP_R", Value: "zz"})
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginAuthFailure},
		{"CHAP algorithm other than MD5", chapCfg, func(c *client) iscsi.LoginStatus {
			c.exchange(&iscsi.LoginRequest{NSG: 0}, append(names(testIQN), iscsi.KeyValue{Key: "AuthMethod", Value: "CHAP"})...)
			r, _ := c.exchange(&iscsi.LoginRequest{}, iscsi.KeyValue{Key: "CHAP_A", Value: "7"})
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginAuthFailure},
		{"mutual CHAP", func(c *Config) {
			chapCfg(c)
			c.MutualUser, c.MutualSecret = "target", "target-secret-22"
		}, func(c *client) iscsi.LoginStatus {
			return c.chap("ingot", "per-deploy-secret-1", &iscsi.Credentials{User: "target", Secret: "target-secret-22"})
		}, iscsi.LoginSuccess},
		{"mutual CHAP when the target has no identity", chapCfg, func(c *client) iscsi.LoginStatus {
			return c.chap("ingot", "per-deploy-secret-1", &iscsi.Credentials{User: "target", Secret: "target-secret-22"})
		}, iscsi.LoginAuthFailure},
		{"operational keys in the security stage with CHAP keys in the operational stage", nil, func(c *client) iscsi.LoginStatus {
			r, _ := c.exchange(&iscsi.LoginRequest{Transit: true, CSG: 1, NSG: 3}, append(names(testIQN), iscsi.KeyValue{Key: "CHAP_A", Value: "5"})...)
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginInitiatorError},
		{"bad operational value", nil, func(c *client) iscsi.LoginStatus {
			r, got := c.exchange(&iscsi.LoginRequest{Transit: true, CSG: 1, NSG: 3}, append(names(testIQN), iscsi.KeyValue{Key: "MaxBurstLength", Value: "7"})...)
			if v, _ := iscsi.Lookup(got, "MaxBurstLength"); r.StatusClass == 0 && v != "Reject" {
				return iscsi.LoginInitiatorError
			}
			return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
		}, iscsi.LoginSuccess},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			var logs bytes.Buffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			tg := startMem(t, cfg, newMemDevice(1<<20))
			c := dialClient(t, tg.Addr().String())
			if got := tt.steps(c); got != tt.want {
				t.Fatalf("login status %v, want %v", got, tt.want)
			}
			tg.Stop()
			for _, s := range []string{"per-deploy-secret-1", "target-secret-22"} {
				if strings.Contains(logs.String(), s) {
					t.Fatal("a CHAP secret was logged")
				}
			}
		})
	}
}

// chap runs a CHAP login; with mutual the client authenticates the target too.
func (c *client) chap(user, secret string, mutual *iscsi.Credentials) iscsi.LoginStatus {
	c.t.Helper()
	r, got := c.exchange(&iscsi.LoginRequest{NSG: 0}, append(names(testIQN), iscsi.KeyValue{Key: "AuthMethod", Value: "CHAP,None"})...)
	if v, _ := iscsi.Lookup(got, "AuthMethod"); r.StatusClass != 0 || v != "CHAP" {
		return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
	}
	r, got = c.exchange(&iscsi.LoginRequest{}, iscsi.KeyValue{Key: "CHAP_A", Value: "7,5"})
	if r.StatusClass != 0 {
		return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
	}
	idv, _ := iscsi.Lookup(got, "CHAP_I")
	chv, _ := iscsi.Lookup(got, "CHAP_C")
	var id int
	fmt.Sscan(idv, &id)
	ch, err := iscsi.ParseCHAPBinary(chv)
	if err != nil {
		c.t.Fatalf("CHAP_C %q: %v", chv, err)
	}
	kvs := []iscsi.KeyValue{{Key: "CHAP_N", Value: user}, {Key: "CHAP_R", Value: iscsi.FormatCHAPBinary(iscsi.CHAPResponse(byte(id), secret, ch))}}
	myCh := []byte("fedcba9876543210")
	if mutual != nil {
		kvs = append(kvs, iscsi.KeyValue{Key: "CHAP_I", Value: "77"}, iscsi.KeyValue{Key: "CHAP_C", Value: iscsi.FormatCHAPBinary(myCh)})
	}
	r, got = c.exchange(&iscsi.LoginRequest{Transit: true, NSG: 1}, kvs...)
	if r.StatusClass != 0 {
		return iscsi.MakeLoginStatus(r.StatusClass, r.StatusDetail)
	}
	if !r.Transit {
		c.t.Fatal("the target did not move on after a good CHAP response")
	}
	if mutual != nil {
		n, _ := iscsi.Lookup(got, "CHAP_N")
		rv, _ := iscsi.Lookup(got, "CHAP_R")
		rb, _ := iscsi.ParseCHAPBinary(rv)
		if n != mutual.User || !iscsi.CHAPVerify(77, mutual.Secret, myCh, rb) {
			c.t.Fatal("the target's mutual CHAP answer is wrong")
		}
	}
	c.operational()
	if r := c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0); r.sense.Key != iscsi.SenseUnitAttention {
		c.t.Fatalf("first command: %s", describe(r))
	}
	return iscsi.LoginSuccess
}

func TestDiscoverySession(t *testing.T) {
	tg := startMem(t, testConfig(t), newMemDevice(1<<20))
	c := dialClient(t, tg.Addr().String())
	kvs := []iscsi.KeyValue{{Key: "InitiatorName", Value: "iqn.x:y"}, {Key: "SessionType", Value: "Discovery"}, {Key: "AuthMethod", Value: "None"}}
	c.exchange(&iscsi.LoginRequest{Transit: true, NSG: 1}, kvs...)
	c.operational()
	// SendTargets split over two PDUs with the C bit.
	text := []byte("SendTargets=All\x00")
	if err := c.w.WriteHeader(&iscsi.TextRequest{Continue: true, ITT: 5, TTT: iscsi.ReservedTag, CmdSN: c.cmdSN, ExpStatSN: c.expSN}, text[:5]); err != nil {
		t.Fatal(err)
	}
	c.cmdSN++
	h, _, err := c.next()
	if err != nil {
		t.Fatal(err)
	}
	tr := h.(*iscsi.TextResponse)
	if tr.Final || tr.TTT == iscsi.ReservedTag {
		t.Fatalf("continuation answer %+v", tr)
	}
	if err := c.w.WriteHeader(&iscsi.TextRequest{Final: true, ITT: 5, TTT: tr.TTT, CmdSN: c.cmdSN, ExpStatSN: c.expSN}, text[5:]); err != nil {
		t.Fatal(err)
	}
	c.cmdSN++
	h, data, err := c.next()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := iscsi.ParseText(data)
	if name, _ := iscsi.Lookup(got, "TargetName"); name != testIQN || !h.(*iscsi.TextResponse).Final {
		t.Fatalf("SendTargets answer %v", got)
	}
	if addr, _ := iscsi.Lookup(got, "TargetAddress"); addr != tg.Addr().String()+",1" {
		t.Fatalf("TargetAddress %q", addr)
	}
	// SCSI commands are not allowed in a discovery session.
	c.itt++
	if err := c.w.WriteHeader(&iscsi.SCSICommand{Final: true, ITT: c.itt, CmdSN: c.cmdSN}, nil); err != nil {
		t.Fatal(err)
	}
	if h, _, err := c.next(); err != nil || h.Opcode() != iscsi.OpReject {
		t.Fatalf("SCSI command in a discovery session: %v %v", h, err)
	}
	c.logout()
}

func TestCmdSNWindowAndNOP(t *testing.T) {
	tg := startMem(t, testConfig(t), newMemDevice(1<<20))
	c := dialClient(t, tg.Addr().String())
	c.loginNone()
	c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
	if c.maxCmd-c.cmdSN < 64 {
		t.Fatalf("window of %d commands; the target should advertise a large one", c.maxCmd-c.cmdSN)
	}
	// A command beyond MaxCmdSN and one below ExpCmdSN are silently
	// ignored; the NOP-Out that follows is answered with the window intact.
	for _, sn := range []uint32{c.maxCmd + 1, c.cmdSN - 1} {
		c.itt++
		if err := c.w.WriteHeader(&iscsi.SCSICommand{Final: true, LUN: iscsi.LUN(1), ITT: c.itt, CmdSN: sn}, nil); err != nil {
			t.Fatal(err)
		}
	}
	c.itt++
	if err := c.w.WriteHeader(&iscsi.NOPOut{Immediate: true, ITT: c.itt, TTT: iscsi.ReservedTag, CmdSN: c.cmdSN}, []byte("echo")); err != nil {
		t.Fatal(err)
	}
	h, data, err := c.next()
	if err != nil {
		t.Fatal(err)
	}
	nop, ok := h.(*iscsi.NOPIn)
	if !ok || nop.ITT != c.itt || string(data) != "echo" || nop.ExpCmdSN != c.cmdSN {
		t.Fatalf("answer %#v %q (ExpCmdSN must not move for ignored commands)", h, data)
	}
	// A NOP-Out answering a ping (reserved ITT) needs no answer.
	if err := c.w.WriteHeader(&iscsi.NOPOut{Immediate: true, ITT: iscsi.ReservedTag, TTT: 7, CmdSN: c.cmdSN}, nil); err != nil {
		t.Fatal(err)
	}
	if r := c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0); r.status != iscsi.StatusGood {
		t.Fatal(describe(r))
	}
}

func TestTaskManagement(t *testing.T) {
	tg := startMem(t, testConfig(t), newMemDevice(1<<20))
	c := dialClient(t, tg.Addr().String())
	c.loginNone(iscsi.KeyValue{Key: "InitialR2T", Value: "Yes"}, iscsi.KeyValue{Key: "ImmediateData", Value: "No"})
	c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
	// A write waiting for its R2T'd data is aborted.
	c.itt++
	w := &iscsi.SCSICommand{Final: true, Write: true, LUN: iscsi.LUN(1), ITT: c.itt, CmdSN: c.cmdSN, ExpectedDataTransferLength: 1024}
	copy(w.CDB[:], cdb10(opWrite10, 0, 2))
	c.cmdSN++
	if err := c.w.WriteHeader(w, nil); err != nil {
		t.Fatal(err)
	}
	if h, _, err := c.next(); err != nil || h.Opcode() != iscsi.OpR2T {
		t.Fatalf("want an R2T: %v %v", h, err)
	}
	tmf := func(fn uint8, lun uint16, rtt uint32) uint8 {
		c.itt++
		if err := c.w.WriteHeader(&iscsi.TaskMgmtRequest{Immediate: true, Function: fn, LUN: iscsi.LUN(lun), ITT: c.itt, RTT: rtt, CmdSN: c.cmdSN}, nil); err != nil {
			t.Fatal(err)
		}
		h, _, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		return h.(*iscsi.TaskMgmtResponse).Response
	}
	if got := tmf(iscsi.TMFAbortTask, 1, w.ITT); got != iscsi.TMFFunctionComplete {
		t.Fatalf("abort of a waiting task: %d", got)
	}
	if got := tmf(iscsi.TMFAbortTask, 1, w.ITT); got != iscsi.TMFTaskDoesNotExist {
		t.Fatalf("abort of a finished task: %d", got)
	}
	// Data for the aborted task is dropped without harm.
	c.dataOut(make([]byte, 1024), 0, 1024, 0x1234)
	for _, tt := range []struct {
		fn   uint8
		lun  uint16
		want uint8
	}{
		{iscsi.TMFLogicalUnitReset, 1, iscsi.TMFFunctionComplete},
		{iscsi.TMFLogicalUnitReset, 5, iscsi.TMFLUNDoesNotExist},
		{iscsi.TMFAbortTaskSet, 1, iscsi.TMFFunctionComplete},
		{iscsi.TMFClearACA, 1, iscsi.TMFNotSupported},
		{iscsi.TMFTaskReassign, 1, iscsi.TMFReassignNotSupported},
		{0x55, 1, iscsi.TMFRejected},
		{iscsi.TMFTargetWarmReset, 0, iscsi.TMFFunctionComplete},
	} {
		if got := tmf(tt.fn, tt.lun, iscsi.ReservedTag); got != tt.want {
			t.Errorf("TMF %d on LUN %d: %d, want %d", tt.fn, tt.lun, got, tt.want)
		}
	}
	if r := c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0); r.status != iscsi.StatusGood {
		t.Fatal(describe(r))
	}
	if got := tmf(iscsi.TMFTargetColdReset, 0, iscsi.ReservedTag); got != iscsi.TMFFunctionComplete {
		t.Fatalf("cold reset: %d", got)
	}
	if _, _, err := c.next(); err == nil {
		t.Fatal("a cold reset must drop the connection")
	}
}

func TestProtocolViolationsDropTheConnection(t *testing.T) {
	tests := []struct {
		name string
		send func(c *client)
	}{
		{"Data-Out with a wrong DataSN", func(c *client) {
			c.itt++
			w := &iscsi.SCSICommand{Write: true, LUN: iscsi.LUN(1), ITT: c.itt, CmdSN: c.cmdSN, ExpectedDataTransferLength: 1024}
			copy(w.CDB[:], cdb10(opWrite10, 0, 2))
			_ = c.w.WriteHeader(w, nil)
			_ = c.w.WriteHeader(&iscsi.DataOut{ITT: c.itt, TTT: iscsi.ReservedTag, DataSN: 27}, make([]byte, 512))
		}},
		{"Data-Out past the unsolicited burst", func(c *client) {
			c.itt++
			w := &iscsi.SCSICommand{Write: true, LUN: iscsi.LUN(1), ITT: c.itt, CmdSN: c.cmdSN, ExpectedDataTransferLength: 1024}
			copy(w.CDB[:], cdb10(opWrite10, 0, 2))
			_ = c.w.WriteHeader(w, nil)
			_ = c.w.WriteHeader(&iscsi.DataOut{Final: true, ITT: c.itt, TTT: iscsi.ReservedTag, BufferOffset: 512}, make([]byte, 512))
		}},
		{"Data-Out for an unknown transfer tag", func(c *client) {
			c.itt++
			w := &iscsi.SCSICommand{Final: true, Write: true, LUN: iscsi.LUN(1), ITT: c.itt, CmdSN: c.cmdSN, ExpectedDataTransferLength: 1 << 20}
			copy(w.CDB[:], cdb16(opWrite16, 0, 2048))
			_ = c.w.WriteHeader(w, nil)
			_ = c.w.WriteHeader(&iscsi.DataOut{ITT: c.itt, TTT: 0xabcdef}, make([]byte, 512))
		}},
		{"immediate data on a read", func(c *client) {
			c.itt++
			r := &iscsi.SCSICommand{Final: true, Read: true, LUN: iscsi.LUN(1), ITT: c.itt, CmdSN: c.cmdSN, ExpectedDataTransferLength: 512}
			copy(r.CDB[:], cdb10(opRead10, 0, 1))
			_ = c.w.WriteHeader(r, make([]byte, 512))
		}},
		{"a target opcode", func(c *client) { _ = c.w.WriteHeader(&iscsi.R2T{}, nil) }},
		{"a login request in full feature phase", func(c *client) { _ = c.w.WriteHeader(&iscsi.LoginRequest{}, nil) }},
		{"a data segment beyond MaxRecvDataSegmentLength", func(c *client) {
			_ = c.w.WriteHeader(&iscsi.NOPOut{Immediate: true, ITT: 99}, make([]byte, 600<<10))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := startMem(t, testConfig(t), newMemDevice(1<<20))
			c := dialClient(t, tg.Addr().String())
			c.loginNone()
			c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
			tt.send(c)
			for {
				h, _, err := c.next()
				if err != nil {
					break // dropped, as it must be
				}
				if h.Opcode() != iscsi.OpReject && h.Opcode() != iscsi.OpR2T {
					t.Fatalf("got %s, want a Reject and a closed connection", h.Opcode())
				}
			}
			if tg.Stats().Panics != 0 {
				t.Fatal("panic")
			}
			// The target still serves others.
			c2 := dialClient(t, tg.Addr().String())
			c2.loginNone()
		})
	}
}

func TestPanicIsContained(t *testing.T) {
	dev := newMemDevice(1 << 20)
	tg := startMem(t, testConfig(t), dev)
	c := dialClient(t, tg.Addr().String())
	c.loginNone()
	c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
	dev.set(func(m *memDevice) { m.panicWrite = true })
	c.itt++
	w := &iscsi.SCSICommand{Final: true, Write: true, LUN: iscsi.LUN(1), ITT: c.itt, CmdSN: c.cmdSN, ExpectedDataTransferLength: 512}
	copy(w.CDB[:], cdb10(opWrite10, 0, 1))
	c.cmdSN++
	if err := c.w.WriteHeader(w, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.next(); err == nil {
		t.Fatal("the panicking connection stayed open")
	}
	st := tg.Stats()
	if st.Panics != 1 || !strings.Contains(st.LastPanic, "injected device panic") {
		t.Fatalf("stats %+v", st)
	}
	dev.set(func(m *memDevice) { m.panicWrite = false })
	c2 := dialClient(t, tg.Addr().String())
	c2.loginNone()
	c2.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
	if r := c2.command(1, cdb10(opWrite10, 0, 1), make([]byte, 512), 512); r.status != iscsi.StatusGood {
		t.Fatalf("after a contained panic: %s", describe(r))
	}
}

func TestStopClosesSessionsThenSyncsAndClosesTheDevice(t *testing.T) {
	before := runtime.NumGoroutine()
	dev := newMemDevice(1 << 20)
	tg, err := start(context.Background(), testConfig(t), dev, dev, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	c := dialClient(t, tg.Addr().String())
	c.loginNone()
	c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
	if tg.Stats().Connections != 1 {
		t.Fatalf("stats %+v", tg.Stats())
	}
	if err := tg.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.next(); err == nil {
		t.Fatal("session still open after Stop")
	}
	dev.set(func(m *memDevice) {
		if m.syncs == 0 || !m.closed {
			t.Fatalf("device synced %d times, closed %v", m.syncs, m.closed)
		}
	})
	if _, err := dialAny(tg.Addr().String()); err == nil {
		t.Fatal("the port still accepts connections")
	}
	if err := tg.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines left after Stop (%d before)", n, before)
	}
}

func TestStopOnContextCancel(t *testing.T) {
	dev := newMemDevice(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	tg, err := start(ctx, testConfig(t), dev, dev, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-tg.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("cancelling the context did not stop the target")
	}
	_ = tg.Stop()
}

func dialAny(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return c, err
}

func TestStartWithFileAndConfigErrors(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Device = img
	tg, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := dialClient(t, tg.Addr().String())
	c.loginNone()
	c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
	data := randomBytes(t, 4096)
	if r := c.command(1, cdb10(opWrite10, 1, 8), data, len(data)); r.status != iscsi.StatusGood {
		t.Fatal(describe(r))
	}
	if err := tg.Stop(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(img)
	if !bytes.Equal(got[512:512+4096], data) {
		t.Fatal("file content differs")
	}

	bad := []struct {
		name string
		mod  func(c *Config)
		want error
	}{
		{"no listen address", func(c *Config) { c.Listen = "" }, ErrConfig},
		{"listen without a port", func(c *Config) { c.Listen = "127.0.0.1" }, ErrConfig},
		{"bad IQN", func(c *Config) { c.IQN = "disk" }, ErrConfig},
		{"IQN with a space", func(c *Config) { c.IQN = "iqn.2024-01.x:a b" }, ErrConfig},
		{"user without secret", func(c *Config) { c.CHAPUser = "u" }, ErrConfig},
		{"short secret", func(c *Config) { c.CHAPUser, c.CHAPSecret = "u", "short" }, ErrConfig},
		{"mutual without CHAP", func(c *Config) { c.MutualUser, c.MutualSecret = "t", "target-secret-22" }, ErrConfig},
		{"mutual secret equal to the CHAP secret", func(c *Config) {
			c.CHAPUser, c.CHAPSecret, c.MutualUser, c.MutualSecret = "u", "same-secret-value", "t", "same-secret-value"
		}, ErrConfig},
		{"odd block size", func(c *Config) { c.BlockSize = 1000 }, ErrConfig},
		{"tiny burst", func(c *Config) { c.MaxBurstLength = 100 }, ErrConfig},
		{"missing device", func(c *Config) { c.Device = filepath.Join(dir, "nope") }, os.ErrNotExist},
		{"address in use", func(c *Config) { c.Listen = busyAddr(t) }, nil},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Device = img
			tt.mod(&cfg)
			tg, err := Start(t.Context(), cfg)
			if err == nil {
				tg.Stop()
				t.Fatal("Start succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
	empty := filepath.Join(dir, "empty.img")
	_ = os.WriteFile(empty, nil, 0o600)
	cfg.Device = empty
	if _, err := Start(t.Context(), cfg); !errors.Is(err, ErrConfig) {
		t.Fatalf("empty device: %v", err)
	}
}

func busyAddr(t *testing.T) string {
	tg := startMem(t, testConfig(t), newMemDevice(4096))
	return tg.Addr().String()
}

func TestConfigNeverShowsSecrets(t *testing.T) {
	cfg := Config{Listen: "a:1", IQN: testIQN, Device: "/dev/sda", CHAPUser: "u", CHAPSecret: "initiator-secret-x",
		MutualUser: "t", MutualSecret: "target-secret-yyy"}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("start", "config", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v %#v", cfg, cfg), cfg.String(), logs.String()} {
		if strings.Contains(s, "initiator-secret-x") || strings.Contains(s, "target-secret-yyy") {
			t.Fatalf("secret shown: %s", s)
		}
	}
}

func TestStartDevice(t *testing.T) {
	dev := newMemDevice(1 << 20)
	tg, err := StartDevice(t.Context(), testConfig(t), dev, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	c := dialClient(t, tg.Addr().String())
	c.loginNone()
	c.command(1, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
	if r := c.command(1, cdb10(opWrite10, 2, 1), bytes.Repeat([]byte{7}, 512), 512); r.status != iscsi.StatusGood {
		t.Fatalf("write: %s", describe(r))
	}
	if err := tg.Stop(); err != nil {
		t.Fatal(err)
	}
	if !dev.closed || dev.syncs == 0 || !bytes.Equal(dev.bytes(1024, 512), bytes.Repeat([]byte{7}, 512)) {
		t.Errorf("after Stop: closed %v syncs %d", dev.closed, dev.syncs)
	}

	// A start that fails leaves the caller's device open.
	dev2 := newMemDevice(1 << 20)
	cfg := testConfig(t)
	cfg.Listen = tg.Addr().String() + "x"
	if _, err := StartDevice(t.Context(), cfg, dev2, 1<<20); err == nil {
		t.Fatal("StartDevice with a bad listen address succeeded")
	}
	cfg = testConfig(t)
	if _, err := StartDevice(t.Context(), cfg, dev2, 100); !errors.Is(err, ErrConfig) {
		t.Fatalf("a device smaller than a block: %v", err)
	}
	if dev2.closed {
		t.Error("a failed StartDevice closed the caller's device")
	}
}
