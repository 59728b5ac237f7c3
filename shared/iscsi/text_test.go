package iscsi

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseText(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []KeyValue
		wantErr error
	}{
		{"empty", "", nil, nil},
		{"two keys", "A=1\x00B=two\x00", []KeyValue{{"A", "1"}, {"B", "two"}}, nil},
		{"missing final NUL", "A=1\x00B=2", []KeyValue{{"A", "1"}, {"B", "2"}}, nil},
		{"padding NULs skipped", "A=1\x00\x00\x00", []KeyValue{{"A", "1"}}, nil},
		{"empty value", "TargetAlias=\x00", []KeyValue{{"TargetAlias", ""}}, nil},
		{"value with equals", "X=a=b\x00", []KeyValue{{"X", "a=b"}}, nil},
		{"vendor key chars", "X-com.example_a+b@c=1\x00", []KeyValue{{"X-com.example_a+b@c", "1"}}, nil},
		{"no equals", "Garbage\x00", nil, ErrTextSyntax},
		{"empty key", "=1\x00", nil, ErrTextSyntax},
		{"bad key char", "A B=1\x00", nil, ErrTextSyntax},
		{"key too long", strings.Repeat("k", 64) + "=1\x00", nil, ErrTextTooLong},
		{"value too long", "A=" + strings.Repeat("v", 8193) + "\x00", nil, ErrTextTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseText([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestEncodeText(t *testing.T) {
	kvs := []KeyValue{{"InitiatorName", "iqn.2024-01.dev.ingot:c"}, {"SessionType", "Normal"}}
	b := EncodeText(nil, kvs)
	if !bytes.Equal(b, []byte("InitiatorName=iqn.2024-01.dev.ingot:c\x00SessionType=Normal\x00")) {
		t.Fatalf("EncodeText = %q", b)
	}
	got, err := ParseText(b)
	if err != nil || !cmp.Equal(got, kvs) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	if v, ok := Lookup(got, "SessionType"); !ok || v != "Normal" {
		t.Errorf("Lookup = %q %v", v, ok)
	}
	if _, ok := Lookup(got, "Nope"); ok {
		t.Error("Lookup found a missing key")
	}
}

func TestTextAssembler(t *testing.T) {
	var a TextAssembler
	whole := []byte("SendTargets=All\x00TargetName=iqn.x:y\x00")
	// Split inside a key: the C bit may cut anywhere.
	if _, done, err := a.Add(whole[:5], true); done || err != nil || !a.Pending() {
		t.Fatalf("first part: done %v err %v", done, err)
	}
	kvs, done, err := a.Add(whole[5:], false)
	if !done || err != nil || len(kvs) != 2 || kvs[1].Value != "iqn.x:y" {
		t.Fatalf("joined: %v %v %v", kvs, done, err)
	}
	if a.Pending() {
		t.Fatal("assembler not reset")
	}
	small := TextAssembler{Max: 8}
	if _, _, err := small.Add(make([]byte, 9), true); !errors.Is(err, ErrTextTooLarge) {
		t.Fatalf("oversized text: %v", err)
	}
}

func TestParseNumber(t *testing.T) {
	tests := []struct {
		in     string
		lo, hi uint32
		want   uint32
		ok     bool
	}{
		{"8192", 512, 1 << 24, 8192, true},
		{"0x2000", 512, 1 << 24, 8192, true},
		{"0", 0, 2, 0, true},
		{"08192", 512, 1 << 24, 0, false},
		{"511", 512, 1 << 24, 0, false},
		{"16777216", 512, MaxDataSegmentLength, 0, false},
		{"-1", 0, 10, 0, false},
		{"", 0, 10, 0, false},
		{"99999999999999999999", 0, 10, 0, false},
		{"Yes", 0, 10, 0, false},
	}
	for _, tt := range tests {
		got, err := ParseNumber(tt.in, tt.lo, tt.hi)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseNumber(%q) = %d, %v", tt.in, got, err)
		}
	}
}

// respondTo runs a target-side Negotiator with want against one offer.
func respondTo(t *testing.T, want Params, key, offer string) (string, Params) {
	t.Helper()
	n := NewNegotiator(true, want)
	reply, err := n.Receive([]KeyValue{{key, offer}})
	if err != nil {
		t.Fatalf("Receive(%s=%s): %v", key, offer, err)
	}
	p, _ := n.Result()
	if len(reply) == 0 {
		return "", p
	}
	return reply[0].Value, p
}

func TestNegotiatorResponds(t *testing.T) {
	target := DefaultParams()
	target.MaxRecvDataSegmentLength = 262144
	target.MaxBurstLength = 1 << 20
	target.FirstBurstLength = 65536
	target.InitialR2T = false
	target.ImmediateData = true
	target.HeaderDigest = true
	tests := []struct {
		name, key, offer, want string
		check                  func(Params) bool
	}{
		{"OR keeps Yes", "InitialR2T", "Yes", "Yes", func(p Params) bool { return p.InitialR2T }},
		{"OR with No on both sides", "InitialR2T", "No", "No", func(p Params) bool { return !p.InitialR2T }},
		{"AND", "ImmediateData", "No", "No", func(p Params) bool { return !p.ImmediateData }},
		{"min picks the smaller offer", "MaxBurstLength", "262144", "262144", func(p Params) bool { return p.MaxBurstLength == 262144 }},
		{"min caps a larger offer", "MaxBurstLength", "16776192", "1048576", func(p Params) bool { return p.MaxBurstLength == 1<<20 }},
		{"max for Time2Wait", "DefaultTime2Wait", "0", "2", func(p Params) bool { return p.DefaultTime2Wait == 2 }},
		{"ERL is at most 0", "ErrorRecoveryLevel", "2", "0", func(p Params) bool { return p.ErrorRecoveryLevel == 0 }},
		{"digest list honours the offer order", "HeaderDigest", "None,CRC32C", "None", func(p Params) bool { return !p.HeaderDigest }},
		{"digest CRC32C first", "HeaderDigest", "CRC32C,None", "CRC32C", func(p Params) bool { return p.HeaderDigest }},
		{"digest not wanted", "DataDigest", "CRC32C", "Reject", func(p Params) bool { return !p.DataDigest }},
		{"bad boolean", "InitialR2T", "Maybe", "Reject", func(p Params) bool { return p.InitialR2T }},
		{"number out of range", "MaxBurstLength", "100", "Reject", func(p Params) bool { return p.MaxBurstLength == 262144 }},
		{"unknown key", "X-vendor.Frob", "1", "NotUnderstood", func(Params) bool { return true }},
		{"obsolete marker key", "IFMarker", "No", "NotUnderstood", func(Params) bool { return true }},
		{"declaration is not answered", "MaxRecvDataSegmentLength", "65536", "", func(p Params) bool { return p.MaxXmitDataSegmentLength == 65536 }},
		{"informational key is recorded", "TargetAlias", "disk", "", func(Params) bool { return true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, p := respondTo(t, target, tt.key, tt.offer)
			if got != tt.want {
				t.Errorf("answer %q, want %q", got, tt.want)
			}
			if !tt.check(p) {
				t.Errorf("result %+v", p)
			}
		})
	}
}

func TestNegotiatorAccepts(t *testing.T) {
	ini := DefaultParams()
	ini.MaxRecvDataSegmentLength = 262144
	ini.MaxBurstLength = 1 << 20
	ini.FirstBurstLength = 1 << 18
	ini.InitialR2T = false
	ini.HeaderDigest = true
	tests := []struct {
		name, key, answer string
		wantErr           bool
		check             func(Params) bool
	}{
		{"min answer below the offer", "MaxBurstLength", "262144", false, func(p Params) bool { return p.MaxBurstLength == 262144 }},
		{"min answer above the offer", "MaxBurstLength", "2097152", true, nil},
		{"OR: target insists on R2T", "InitialR2T", "Yes", false, func(p Params) bool { return p.InitialR2T }},
		{"AND answer Yes to our Yes", "ImmediateData", "Yes", false, func(p Params) bool { return p.ImmediateData }},
		{"digest not in our list", "HeaderDigest", "MD5", true, nil},
		{"digest agreed", "HeaderDigest", "CRC32C", false, func(p Params) bool { return p.HeaderDigest }},
		{"NotUnderstood keeps the default", "MaxBurstLength", "NotUnderstood", false, func(p Params) bool { return p.MaxBurstLength == 262144 }},
		{"Reject keeps the default", "InitialR2T", "Reject", false, func(p Params) bool { return p.InitialR2T }},
		{"Irrelevant keeps the default", "FirstBurstLength", "Irrelevant", false, func(p Params) bool { return p.FirstBurstLength == 65536 }},
		{"garbage number", "MaxOutstandingR2T", "lots", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := NewNegotiator(false, ini)
			n.Offer()
			_, err := n.Receive([]KeyValue{{tt.key, tt.answer}})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil {
				p, _ := n.Result()
				if !tt.check(p) {
					t.Errorf("result %+v", p)
				}
			}
		})
	}
	t.Run("OR: target may not turn our Yes into No", func(t *testing.T) {
		p := ini
		p.InitialR2T = true
		n := NewNegotiator(false, p)
		n.Offer()
		if _, err := n.Receive([]KeyValue{{"InitialR2T", "No"}}); !errors.Is(err, ErrNegotiation) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("AND: target may not turn our No into Yes", func(t *testing.T) {
		p := ini
		p.ImmediateData = false
		n := NewNegotiator(false, p)
		n.Offer()
		if _, err := n.Receive([]KeyValue{{"ImmediateData", "Yes"}}); !errors.Is(err, ErrNegotiation) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a key sent twice is an error", func(t *testing.T) {
		n := NewNegotiator(false, ini)
		if _, err := n.Receive([]KeyValue{{"MaxBurstLength", "512"}, {"MaxBurstLength", "512"}}); !errors.Is(err, ErrNegotiation) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a bad declaration is an error", func(t *testing.T) {
		n := NewNegotiator(false, ini)
		if _, err := n.Receive([]KeyValue{{"MaxRecvDataSegmentLength", "12"}}); err == nil {
			t.Fatal("accepted MaxRecvDataSegmentLength=12")
		}
	})
}

// TestNegotiatorPair runs both sides against each other as a login would:
// the initiator offers, the target answers and adds its own declaration,
// the initiator answers the target's offers.
func TestNegotiatorPair(t *testing.T) {
	ini := DefaultParams()
	ini.MaxRecvDataSegmentLength = 262144
	ini.MaxBurstLength = 16776192
	ini.FirstBurstLength = 262144
	ini.InitialR2T = false
	ini.DefaultTime2Wait, ini.DefaultTime2Retain = 0, 0
	tgt := DefaultParams()
	tgt.MaxRecvDataSegmentLength = 1 << 20
	tgt.MaxBurstLength = 1 << 20
	tgt.FirstBurstLength = 1 << 20
	tgt.InitialR2T = false
	tgt.MaxOutstandingR2T = 4
	tgt.DefaultTime2Wait, tgt.DefaultTime2Retain = 0, 0

	in := NewNegotiator(false, ini)
	tn := NewNegotiator(true, tgt)
	req := in.Offer()
	reply, err := tn.Receive(req)
	if err != nil {
		t.Fatal(err)
	}
	reply = append(reply, tn.Offer("MaxRecvDataSegmentLength", "MaxOutstandingR2T")...)
	back, err := in.Receive(reply)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 0 || in.Pending() {
		t.Fatalf("initiator still has business: reply %v pending %v", back, in.Pending())
	}
	ip, err := in.Result()
	if err != nil {
		t.Fatal(err)
	}
	tp, err := tn.Result()
	if err != nil {
		t.Fatal(err)
	}
	want := Params{MaxRecvDataSegmentLength: 262144, MaxXmitDataSegmentLength: 1 << 20, MaxBurstLength: 1 << 20,
		FirstBurstLength: 262144, InitialR2T: false, ImmediateData: true, MaxOutstandingR2T: 1, DataPDUInOrder: true,
		DataSequenceInOrder: true, MaxConnections: 1}
	if d := cmp.Diff(want, ip); d != "" {
		t.Errorf("initiator result (-want +got):\n%s", d)
	}
	want.MaxRecvDataSegmentLength, want.MaxXmitDataSegmentLength = 1<<20, 262144
	if d := cmp.Diff(want, tp); d != "" {
		t.Errorf("target result (-want +got):\n%s", d)
	}
}

func TestNegotiatorFirstBurstRule(t *testing.T) {
	p := DefaultParams()
	p.FirstBurstLength, p.MaxBurstLength = 1<<20, 1<<20
	n := NewNegotiator(true, p)
	if _, err := n.Receive([]KeyValue{{"MaxBurstLength", "4096"}, {"FirstBurstLength", "8192"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Result(); !errors.Is(err, ErrNegotiation) {
		t.Fatalf("target accepted FirstBurstLength > MaxBurstLength: %v", err)
	}
	in := NewNegotiator(false, p)
	in.Offer()
	if _, err := in.Receive([]KeyValue{{"MaxBurstLength", "4096"}, {"FirstBurstLength", "8192"}}); err != nil {
		t.Fatal(err)
	}
	r, err := in.Result()
	if err != nil || r.FirstBurstLength != 4096 {
		t.Fatalf("initiator result %d, %v: want FirstBurstLength clamped to 4096", r.FirstBurstLength, err)
	}
}

func TestCHAP(t *testing.T) {
	ch := make([]byte, 16)
	for i := range ch {
		ch[i] = byte(i)
	}
	// Independently computed: md5(0x07 || "0123456789abcdef" || 00..0f).
	want := "0x86bb99a6fb1680ed708b78e577a63162"
	if got := FormatCHAPBinary(CHAPResponse(7, "0123456789abcdef", ch)); got != want {
		t.Fatalf("CHAPResponse = %s, want %s", got, want)
	}
	r, _ := ParseCHAPBinary(want)
	if !CHAPVerify(7, "0123456789abcdef", ch, r) || CHAPVerify(8, "0123456789abcdef", ch, r) || CHAPVerify(7, "wrong-secret-x", ch, r) {
		t.Fatal("CHAPVerify accepts the wrong inputs or rejects the right ones")
	}
	tests := []struct {
		in   string
		want []byte
		ok   bool
	}{
		{"0x0102", []byte{1, 2}, true},
		{"0X102", []byte{1, 2}, true},
		{"0bAQI=", []byte{1, 2}, true},
		{"0B AQI=", nil, false},
		{"0x", nil, false},
		{"0xzz", nil, false},
		{"1234", nil, false},
		{"0x" + strings.Repeat("00", 1025), nil, false},
	}
	for _, tt := range tests {
		got, err := ParseCHAPBinary(tt.in)
		if (err == nil) != tt.ok || !bytes.Equal(got, tt.want) {
			t.Errorf("ParseCHAPBinary(%q) = %x, %v", tt.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrCHAPEncoding) {
			t.Errorf("ParseCHAPBinary(%q) error %v does not wrap ErrCHAPEncoding", tt.in, err)
		}
	}
}

func TestCredentialsNeverShowTheSecret(t *testing.T) {
	c := Credentials{User: "ingot", Secret: "very-secret-value"}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("login", "chap", c)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("login", "chap", c)
	outs := []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), logs.String()}
	for _, o := range outs {
		if strings.Contains(o, c.Secret) {
			t.Fatalf("secret leaked: %s", o)
		}
		if !strings.Contains(o, "ingot") {
			t.Fatalf("user missing: %s", o)
		}
	}
	tests := []struct {
		c  Credentials
		ok bool
	}{
		{c, true},
		{Credentials{User: "u", Secret: "short"}, false},
		{Credentials{Secret: "long-enough-secret"}, false},
		{Credentials{User: "u", Secret: strings.Repeat("s", 256)}, false},
	}
	for _, tt := range tests {
		if err := tt.c.Valid(); (err == nil) != tt.ok {
			t.Errorf("Valid(%v) = %v", tt.c, err)
		}
	}
}

func TestSense(t *testing.T) {
	fixed := []byte{0xf0, 0, 0x05, 0, 0, 0x12, 0x34, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0x80, 0x00, 0x02}
	desc := []byte{0x72, 0x0e, 0x1d, 0x00, 0, 0, 0, 20,
		0x00, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
		0x02, 0x06, 0, 0, 0xc0, 0x00, 0x05, 0}
	tests := []struct {
		name    string
		in      []byte
		want    Sense
		wantErr bool
	}{
		{"fixed with information", fixed, Sense{Key: SenseIllegalRequest, ASC: 0x21, InfoValid: true, Information: 0x1234, SKSV: true, SenseKeySpecific: 2}, false},
		{"fixed truncated after the key", fixed[:3], Sense{Key: SenseIllegalRequest, InfoValid: true}, false},
		{"deferred fixed", []byte{0x71, 0, 0x06}, Sense{Deferred: true, Key: SenseUnitAttention}, false},
		{"descriptor with information and field pointer", desc, Sense{Descriptor: true, Key: SenseMiscompare, ASC: 0x1d, InfoValid: true, Information: 0x100, SKSV: true, SenseKeySpecific: 0x400005}, false},
		{"descriptor overrun", []byte{0x72, 5, 0x24, 0, 0, 0, 0, 4, 0x00, 0x0a, 0, 0}, Sense{}, true},
		{"unknown response code", []byte{0x7f, 0}, Sense{}, true},
		{"too short", []byte{0x70}, Sense{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSense(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				if !errors.Is(err, ErrSense) {
					t.Fatalf("err %v does not wrap ErrSense", err)
				}
				return
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	for _, s := range []Sense{
		{Key: SenseIllegalRequest, ASC: 0x24, SKSV: true, SenseKeySpecific: 0x400001},
		{Key: SenseMiscompare, ASC: 0x1d, InfoValid: true, Information: 77},
		{Descriptor: true, Key: SenseMiscompare, ASC: 0x1d, InfoValid: true, Information: 1 << 40, SKSV: true, SenseKeySpecific: 0x12345},
		{Descriptor: true, Deferred: true, Key: SenseUnitAttention, ASC: 0x29},
	} {
		got, err := ParseSense(s.Marshal())
		if err != nil || !cmp.Equal(got, s) {
			t.Errorf("Marshal round trip of %v: %v %v", s, got, err)
		}
	}
	if got := (Sense{Key: SenseIllegalRequest, ASC: 0x21}).String(); got != "ILLEGAL REQUEST, ASC/ASCQ 0x21/0x00 (logical block address out of range)" {
		t.Errorf("String() = %q", got)
	}
}

func TestSenseSegment(t *testing.T) {
	s := (Sense{Key: SenseUnitAttention, ASC: 0x29}).Marshal()
	seg := SenseSegment(s)
	got, err := ParseSenseSegment(seg)
	if err != nil || !bytes.Equal(got, s) {
		t.Fatalf("ParseSenseSegment = %x, %v", got, err)
	}
	if got, err := ParseSenseSegment(nil); got != nil || err != nil {
		t.Fatalf("empty segment: %x %v", got, err)
	}
	for _, bad := range [][]byte{{0}, {0, 20, 1, 2}} {
		if _, err := ParseSenseSegment(bad); !errors.Is(err, ErrSense) {
			t.Errorf("ParseSenseSegment(%x) = %v", bad, err)
		}
	}
}
