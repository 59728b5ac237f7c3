package iscsi

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

// pipeSession builds a logged-in session over nc without a login, for
// feeding the reader arbitrary target PDUs.
func pipeSession(nc net.Conn) *Session {
	s := &Session{
		cfg:      Config{QueueDepth: 8, CommandTimeout: time.Second},
		nc:       nc,
		r:        proto.NewReader(bufio.NewReader(nc)),
		w:        proto.NewWriter(nc),
		tasks:    map[uint32]*task{},
		wake:     make(chan struct{}),
		sendWake: make(chan struct{}, 1),
		done:     make(chan struct{}),
		ioDone:   make(chan struct{}),
		maxCmdSN: 100,
	}
	s.cfg, _ = s.cfg.withDefaults0()
	s.log = s.cfg.Logger
	s.params = proto.DefaultParams()
	s.r.MaxData = 8192
	return s
}

// withDefaults0 fills defaults without requiring a portal (test sessions).
func (c Config) withDefaults0() (Config, error) {
	c.Portal = "pipe"
	return c.withDefaults()
}

func targetStream(hdrs ...any) []byte {
	var buf bytes.Buffer
	w := proto.NewWriter(&buf)
	for i := 0; i < len(hdrs); i += 2 {
		_ = w.WriteHeader(hdrs[i].(proto.Header), hdrs[i+1].([]byte))
	}
	return buf.Bytes()
}

// FuzzTargetStream feeds arbitrary bytes to the initiator's reader while a
// read (ITT 1) and a write (ITT 2) are outstanding: the session must end
// with an error or complete the commands, never panic, hang or write past
// a buffer.
func FuzzTargetStream(f *testing.F) {
	sn := proto.SN{StatSN: 1, ExpCmdSN: 3, MaxCmdSN: 40}
	f.Add(targetStream(
		&proto.DataIn{Final: true, HasStatus: true, ITT: 1, SN: sn}, make([]byte, 512),
		&proto.R2T{ITT: 2, TTT: 9, SN: sn, DesiredDataTransferLength: 1024}, []byte(nil),
		&proto.SCSIResponse{ITT: 2, SN: sn}, []byte(nil)))
	f.Add(targetStream(
		&proto.NOPIn{ITT: proto.ReservedTag, TTT: 5, SN: sn}, []byte("ping"),
		&proto.SCSIResponse{ITT: 1, Status: proto.StatusCheckCondition, SN: sn}, proto.SenseSegment((proto.Sense{Key: 5, ASC: 0x21}).Marshal()),
		&proto.AsyncMessage{AsyncEvent: proto.AsyncDropConnection, SN: sn}, []byte(nil)))
	var rejected proto.BHS
	(&proto.SCSICommand{ITT: 2}).Encode(&rejected)
	f.Add(targetStream(&proto.Reject{Reason: 4, SN: sn}, rejected[:],
		&proto.DataIn{ITT: 1, BufferOffset: 4000, SN: sn}, make([]byte, 200)))
	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, server) }()
		go func() {
			_, _ = server.Write(stream)
			server.Close()
		}()
		s := pipeSession(client)
		ctx := context.Background()
		in := make([]byte, 4096)
		p1, err := s.Submit(ctx, Command{LUN: 1, CDB: cdbRW16(opRead16, 0, 8), In: in})
		if err != nil {
			t.Fatal(err)
		}
		p2, err := s.Submit(ctx, Command{LUN: 1, CDB: cdbRW16(opWrite16, 0, 2), Out: make([]byte, 1024)})
		if err != nil {
			t.Fatal(err)
		}
		s.start()
		for _, p := range []*Pending{p1, p2} {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, _ = p.Wait(wctx)
			cancel()
		}
		s.abort(errClosed)
	})
}
