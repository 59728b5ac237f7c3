package iscsitarget

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/shared/iscsi"
)

func pduBytes(t testing.TB, d iscsi.Digests, pdus ...any) []byte {
	var buf bytes.Buffer
	w := iscsi.NewWriter(&buf)
	w.Digests = d
	for i := 0; i < len(pdus); i += 2 {
		if err := w.WriteHeader(pdus[i].(iscsi.Header), pdus[i+1].([]byte)); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func scsiCmd(itt, cmdSN uint32, write bool, edtl uint32, cdb []byte) *iscsi.SCSICommand {
	c := &iscsi.SCSICommand{Final: true, Read: !write && edtl > 0, Write: write, Attr: iscsi.AttrSimple, LUN: iscsi.LUN(1),
		ITT: itt, CmdSN: cmdSN, ExpectedDataTransferLength: edtl}
	copy(c.CDB[:], cdb)
	return c
}

// FuzzConn feeds arbitrary PDU streams to one connection after a valid
// login, without the panic recovery serveConn adds: any panic is a bug.
// The target must answer or drop the connection, never crash or hang.
func FuzzConn(f *testing.F) {
	login := pduBytes(f, iscsi.Digests{}, &iscsi.LoginRequest{Transit: true, CSG: iscsi.StageSecurity, NSG: iscsi.StageFullFeature, CmdSN: 1},
		iscsi.EncodeText(nil, append(names(testIQN), iscsi.KeyValue{Key: "AuthMethod", Value: "None"})))
	write := scsiCmd(1, 1, true, 1024, cdb10(opWrite10, 4, 2))
	write.Final = false
	f.Add(pduBytes(f, iscsi.Digests{},
		write, make([]byte, 512),
		&iscsi.DataOut{Final: true, ITT: 1, TTT: iscsi.ReservedTag, BufferOffset: 512}, make([]byte, 512),
		scsiCmd(2, 2, false, 4096, cdb16(opRead16, 0, 8)), []byte(nil),
		scsiCmd(3, 3, false, 255, []byte{opInquiry, 1, 0x83, 0, 255, 0}), []byte(nil),
		scsiCmd(4, 4, true, 12, []byte{opModeSelect6, 0x10, 0, 0, 12, 0}), []byte{0, 0, 0, 0, 0x0a, 0x0a, 0, 0x10, 8, 0, 0, 0},
		&iscsi.TaskMgmtRequest{Immediate: true, Function: iscsi.TMFAbortTask, LUN: iscsi.LUN(1), ITT: 5, RTT: 1, CmdSN: 5}, []byte(nil),
		&iscsi.NOPOut{Immediate: true, ITT: 6, TTT: iscsi.ReservedTag, CmdSN: 5}, []byte("ping"),
		&iscsi.TextRequest{Final: true, ITT: 7, TTT: iscsi.ReservedTag, CmdSN: 5}, []byte("SendTargets=All\x00"),
		&iscsi.LogoutRequest{Immediate: true, ITT: 8, CmdSN: 6}, []byte(nil)))
	f.Add(pduBytes(f, iscsi.Digests{},
		scsiCmd(1, 1, true, 4096, cdb16(opOrWrite16, 0, 8)), make([]byte, 4096),
		scsiCmd(2, 2, true, 512, []byte{opVerify10, 0x06, 0, 0, 0, 0, 0, 0, 8, 0}), make([]byte, 512),
		scsiCmd(3, 3, false, 0, []byte{opSyncCache10, 0, 0, 0, 0, 0, 0, 0, 0, 0}), []byte(nil),
		&iscsi.SNACKRequest{ITT: 9}, []byte(nil),
		&iscsi.TaskMgmtRequest{Immediate: true, Function: iscsi.TMFTargetColdReset, ITT: 5, CmdSN: 4}, []byte(nil)))
	f.Add([]byte{0x01, 0xa0, 0, 0, 0, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, stream []byte) {
		dev := newMemDevice(1 << 20)
		cfg := Config{Listen: "127.0.0.1:0", IQN: testIQN, Device: "mem", Logger: slog.New(slog.DiscardHandler)}
		tg, err := newTarget(cfg, dev, dev, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		c := newConn(tg, &streamConn{r: io.MultiReader(bytes.NewReader(login), bytes.NewReader(stream))})
		tg.conns[c] = struct{}{}
		c.serve() // no recover: a panic fails the fuzz run
	})
}

// streamConn is a net.Conn that reads a fixed byte stream and discards
// what is written to it.
type streamConn struct{ r io.Reader }

func (s *streamConn) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *streamConn) Write(p []byte) (int, error) { return len(p), nil }
func (s *streamConn) Close() error                { return nil }
func (s *streamConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3260}
}
func (s *streamConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (s *streamConn) SetDeadline(time.Time) error      { return nil }
func (s *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (s *streamConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzLogin feeds arbitrary bytes to the login phase of a target that
// requires CHAP: it must refuse or log in, never panic.
func FuzzLogin(f *testing.F) {
	kv := func(kvs ...iscsi.KeyValue) []byte { return iscsi.EncodeText(nil, kvs) }
	f.Add(pduBytes(f, iscsi.Digests{},
		&iscsi.LoginRequest{CSG: iscsi.StageSecurity}, kv(append(names(testIQN), iscsi.KeyValue{Key: "AuthMethod", Value: "CHAP"})...),
		&iscsi.LoginRequest{CSG: iscsi.StageSecurity}, kv(iscsi.KeyValue{Key: "CHAP_A", Value: "5"}),
		&iscsi.LoginRequest{Transit: true, CSG: iscsi.StageSecurity, NSG: 1}, kv(iscsi.KeyValue{Key: "CHAP_N", Value: "ingot"},
			iscsi.KeyValue{Key: "CHAP_R", Value: "0x00112233445566778899aabbccddeeff"}, iscsi.KeyValue{Key: "CHAP_I", Value: "1"},
			iscsi.KeyValue{Key: "CHAP_C", Value: "0b AAEC"})))
	f.Add(pduBytes(f, iscsi.Digests{},
		&iscsi.LoginRequest{Continue: true, CSG: iscsi.StageOperational}, []byte("InitiatorName=iqn.x:y\x00Tar"),
		&iscsi.LoginRequest{Transit: true, CSG: iscsi.StageOperational, NSG: 3}, []byte("getName=x\x00MaxBurstLength=512\x00")))
	f.Fuzz(func(t *testing.T, stream []byte) {
		dev := newMemDevice(64 << 10)
		cfg := Config{Listen: "127.0.0.1:0", IQN: testIQN, Device: "mem", CHAPUser: "ingot", CHAPSecret: "per-deploy-secret-1",
			MutualUser: "target", MutualSecret: "target-secret-22", Logger: slog.New(slog.DiscardHandler)}
		tg, err := newTarget(cfg, dev, dev, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		c := newConn(tg, &streamConn{r: bytes.NewReader(stream)})
		tg.conns[c] = struct{}{}
		c.serve()
	})
}
