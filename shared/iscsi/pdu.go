package iscsi

import (
	"errors"
	"fmt"
)

// Header is a typed view of a Basic Header Segment. Encode writes every
// field the type defines into h (the caller sets the data segment length);
// Decode turns a raw BHS into one of the pointer types below.
type Header interface {
	Opcode() Opcode
	Encode(h *BHS)
}

// ErrUnknownOpcode is returned by Decode for opcodes RFC 7143 does not define.
var ErrUnknownOpcode = errors.New("unknown opcode")

// Decode returns the typed view of h. It never fails on field values (the
// receiver validates them against its state); only an unknown opcode is an
// error.
func Decode(h *BHS) (Header, error) {
	switch h.Opcode() {
	case OpNOPOut:
		return decodeNOPOut(h), nil
	case OpSCSICommand:
		return decodeSCSICommand(h), nil
	case OpTaskMgmtRequest:
		return decodeTaskMgmtRequest(h), nil
	case OpLoginRequest:
		return decodeLoginRequest(h), nil
	case OpTextRequest:
		return decodeTextRequest(h), nil
	case OpDataOut:
		return decodeDataOut(h), nil
	case OpLogoutRequest:
		return decodeLogoutRequest(h), nil
	case OpSNACKRequest:
		return decodeSNACKRequest(h), nil
	case OpNOPIn:
		return decodeNOPIn(h), nil
	case OpSCSIResponse:
		return decodeSCSIResponse(h), nil
	case OpTaskMgmtResponse:
		return decodeTaskMgmtResponse(h), nil
	case OpLoginResponse:
		return decodeLoginResponse(h), nil
	case OpTextResponse:
		return decodeTextResponse(h), nil
	case OpDataIn:
		return decodeDataIn(h), nil
	case OpLogoutResponse:
		return decodeLogoutResponse(h), nil
	case OpR2T:
		return decodeR2T(h), nil
	case OpAsyncMessage:
		return decodeAsyncMessage(h), nil
	case OpReject:
		return decodeReject(h), nil
	}
	return nil, fmt.Errorf("decode header: %w 0x%02x", ErrUnknownOpcode, uint8(h.Opcode()))
}

// begin clears h (keeping the data segment length) and sets the opcode.
func begin(h *BHS, op Opcode, immediate bool, flags byte) {
	dsl := h.DataSegmentLength()
	*h = BHS{}
	h[0] = byte(op)
	if immediate {
		h[0] |= 0x40
	}
	h[1] = flags
	h.SetDataSegmentLength(dsl)
}

func flag(b bool, bit byte) byte {
	if b {
		return bit
	}
	return 0
}

// NOPOut is a ping from the initiator, or its answer to a target's NOP-In.
type NOPOut struct {
	Immediate bool
	LUN       uint64
	ITT, TTT  uint32
	CmdSN     uint32
	ExpStatSN uint32
}

func (*NOPOut) Opcode() Opcode { return OpNOPOut }
func (p *NOPOut) Encode(h *BHS) {
	begin(h, OpNOPOut, p.Immediate, 0x80)
	put64(h[8:], p.LUN)
	put32(h[16:], p.ITT)
	put32(h[20:], p.TTT)
	put32(h[24:], p.CmdSN)
	put32(h[28:], p.ExpStatSN)
}
func decodeNOPOut(h *BHS) *NOPOut {
	return &NOPOut{Immediate: h.Immediate(), LUN: be64(h[8:]), ITT: be32(h[16:]), TTT: be32(h[20:]),
		CmdSN: be32(h[24:]), ExpStatSN: be32(h[28:])}
}

// Task attributes of a SCSI Command (ATTR field).
const (
	AttrUntagged = 0
	AttrSimple   = 1
	AttrOrdered  = 2
	AttrHead     = 3
	AttrACA      = 4
)

// SCSICommand carries a CDB (at most 16 bytes; longer CDBs need an AHS,
// which Ingot does not use).
type SCSICommand struct {
	Immediate                  bool
	Final, Read, Write         bool
	Attr                       uint8
	LUN                        uint64
	ITT                        uint32
	ExpectedDataTransferLength uint32
	CmdSN, ExpStatSN           uint32
	CDB                        [16]byte
}

func (*SCSICommand) Opcode() Opcode { return OpSCSICommand }
func (p *SCSICommand) Encode(h *BHS) {
	begin(h, OpSCSICommand, p.Immediate, flag(p.Final, 0x80)|flag(p.Read, 0x40)|flag(p.Write, 0x20)|p.Attr&7)
	put64(h[8:], p.LUN)
	put32(h[16:], p.ITT)
	put32(h[20:], p.ExpectedDataTransferLength)
	put32(h[24:], p.CmdSN)
	put32(h[28:], p.ExpStatSN)
	copy(h[32:], p.CDB[:])
}
func decodeSCSICommand(h *BHS) *SCSICommand {
	p := &SCSICommand{Immediate: h.Immediate(), Final: h[1]&0x80 != 0, Read: h[1]&0x40 != 0, Write: h[1]&0x20 != 0,
		Attr: h[1] & 7, LUN: be64(h[8:]), ITT: be32(h[16:]), ExpectedDataTransferLength: be32(h[20:]),
		CmdSN: be32(h[24:]), ExpStatSN: be32(h[28:])}
	copy(p.CDB[:], h[32:])
	return p
}

// Task management functions (RFC 7143 §11.5.1).
const (
	TMFAbortTask        = 1
	TMFAbortTaskSet     = 2
	TMFClearACA         = 3
	TMFClearTaskSet     = 4
	TMFLogicalUnitReset = 5
	TMFTargetWarmReset  = 6
	TMFTargetColdReset  = 7
	TMFTaskReassign     = 8
)

// Task management responses (RFC 7143 §11.6.1).
const (
	TMFFunctionComplete     = 0
	TMFTaskDoesNotExist     = 1
	TMFLUNDoesNotExist      = 2
	TMFTaskStillAllegiant   = 3
	TMFReassignNotSupported = 4
	TMFNotSupported         = 5
	TMFAuthorizationFailed  = 6
	TMFRejected             = 255
)

// TaskMgmtRequest asks the target to abort tasks or reset a logical unit.
type TaskMgmtRequest struct {
	Immediate        bool
	Function         uint8
	LUN              uint64
	ITT              uint32
	RTT              uint32 // referenced task tag
	CmdSN, ExpStatSN uint32
	RefCmdSN         uint32
	ExpDataSN        uint32
}

func (*TaskMgmtRequest) Opcode() Opcode { return OpTaskMgmtRequest }
func (p *TaskMgmtRequest) Encode(h *BHS) {
	begin(h, OpTaskMgmtRequest, p.Immediate, 0x80|p.Function&0x7f)
	put64(h[8:], p.LUN)
	put32(h[16:], p.ITT)
	put32(h[20:], p.RTT)
	put32(h[24:], p.CmdSN)
	put32(h[28:], p.ExpStatSN)
	put32(h[32:], p.RefCmdSN)
	put32(h[36:], p.ExpDataSN)
}
func decodeTaskMgmtRequest(h *BHS) *TaskMgmtRequest {
	return &TaskMgmtRequest{Immediate: h.Immediate(), Function: h[1] & 0x7f, LUN: be64(h[8:]), ITT: be32(h[16:]),
		RTT: be32(h[20:]), CmdSN: be32(h[24:]), ExpStatSN: be32(h[28:]), RefCmdSN: be32(h[32:]), ExpDataSN: be32(h[36:])}
}

// Login stages (CSG/NSG).
const (
	StageSecurity    = 0
	StageOperational = 1
	StageFullFeature = 3
)

// LoginRequest is one step of the login phase. The I bit is always set
// (RFC 7143 §11.12: a Login Request is always immediate).
type LoginRequest struct {
	Transit, Continue      bool
	CSG, NSG               uint8
	VersionMax, VersionMin uint8
	ISID                   [6]byte
	TSIH                   uint16
	ITT                    uint32
	CID                    uint16
	CmdSN, ExpStatSN       uint32
}

func (*LoginRequest) Opcode() Opcode { return OpLoginRequest }
func (p *LoginRequest) Encode(h *BHS) {
	begin(h, OpLoginRequest, true, flag(p.Transit, 0x80)|flag(p.Continue, 0x40)|(p.CSG&3)<<2|p.NSG&3)
	h[2], h[3] = p.VersionMax, p.VersionMin
	copy(h[8:14], p.ISID[:])
	put16(h[14:], p.TSIH)
	put32(h[16:], p.ITT)
	put16(h[20:], p.CID)
	put32(h[24:], p.CmdSN)
	put32(h[28:], p.ExpStatSN)
}
func decodeLoginRequest(h *BHS) *LoginRequest {
	p := &LoginRequest{Transit: h[1]&0x80 != 0, Continue: h[1]&0x40 != 0, CSG: h[1] >> 2 & 3, NSG: h[1] & 3,
		VersionMax: h[2], VersionMin: h[3], TSIH: be16(h[14:]), ITT: be32(h[16:]), CID: be16(h[20:]),
		CmdSN: be32(h[24:]), ExpStatSN: be32(h[28:])}
	copy(p.ISID[:], h[8:14])
	return p
}

// TextRequest carries key=value text outside the login phase
// (SendTargets, for example).
type TextRequest struct {
	Immediate        bool
	Final, Continue  bool
	LUN              uint64
	ITT, TTT         uint32
	CmdSN, ExpStatSN uint32
}

func (*TextRequest) Opcode() Opcode { return OpTextRequest }
func (p *TextRequest) Encode(h *BHS) {
	begin(h, OpTextRequest, p.Immediate, flag(p.Final, 0x80)|flag(p.Continue, 0x40))
	put64(h[8:], p.LUN)
	put32(h[16:], p.ITT)
	put32(h[20:], p.TTT)
	put32(h[24:], p.CmdSN)
	put32(h[28:], p.ExpStatSN)
}
func decodeTextRequest(h *BHS) *TextRequest {
	return &TextRequest{Immediate: h.Immediate(), Final: h[1]&0x80 != 0, Continue: h[1]&0x40 != 0, LUN: be64(h[8:]),
		ITT: be32(h[16:]), TTT: be32(h[20:]), CmdSN: be32(h[24:]), ExpStatSN: be32(h[28:])}
}

// DataOut carries write data, unsolicited (TTT = ReservedTag) or in answer
// to an R2T (TTT echoed).
type DataOut struct {
	Final        bool
	LUN          uint64
	ITT, TTT     uint32
	ExpStatSN    uint32
	DataSN       uint32
	BufferOffset uint32
}

func (*DataOut) Opcode() Opcode { return OpDataOut }
func (p *DataOut) Encode(h *BHS) {
	begin(h, OpDataOut, false, flag(p.Final, 0x80))
	put64(h[8:], p.LUN)
	put32(h[16:], p.ITT)
	put32(h[20:], p.TTT)
	put32(h[28:], p.ExpStatSN)
	put32(h[36:], p.DataSN)
	put32(h[40:], p.BufferOffset)
}
func decodeDataOut(h *BHS) *DataOut {
	return &DataOut{Final: h[1]&0x80 != 0, LUN: be64(h[8:]), ITT: be32(h[16:]), TTT: be32(h[20:]),
		ExpStatSN: be32(h[28:]), DataSN: be32(h[36:]), BufferOffset: be32(h[40:])}
}

// Logout reasons.
const (
	LogoutCloseSession    = 0
	LogoutCloseConnection = 1
	LogoutRemoveRecovery  = 2
)

// LogoutRequest ends a session or connection.
type LogoutRequest struct {
	Immediate        bool
	Reason           uint8
	ITT              uint32
	CID              uint16
	CmdSN, ExpStatSN uint32
}

func (*LogoutRequest) Opcode() Opcode { return OpLogoutRequest }
func (p *LogoutRequest) Encode(h *BHS) {
	begin(h, OpLogoutRequest, p.Immediate, 0x80|p.Reason&0x7f)
	put32(h[16:], p.ITT)
	put16(h[20:], p.CID)
	put32(h[24:], p.CmdSN)
	put32(h[28:], p.ExpStatSN)
}
func decodeLogoutRequest(h *BHS) *LogoutRequest {
	return &LogoutRequest{Immediate: h.Immediate(), Reason: h[1] & 0x7f, ITT: be32(h[16:]), CID: be16(h[20:]),
		CmdSN: be32(h[24:]), ExpStatSN: be32(h[28:])}
}

// SNACKRequest asks for retransmission (ERL ≥ 1; Ingot's target rejects it).
type SNACKRequest struct {
	Type              uint8
	LUN               uint64
	ITT, TTT          uint32
	ExpStatSN         uint32
	BegRun, RunLength uint32
}

func (*SNACKRequest) Opcode() Opcode { return OpSNACKRequest }
func (p *SNACKRequest) Encode(h *BHS) {
	begin(h, OpSNACKRequest, false, 0x80|p.Type&0x0f)
	put64(h[8:], p.LUN)
	put32(h[16:], p.ITT)
	put32(h[20:], p.TTT)
	put32(h[28:], p.ExpStatSN)
	put32(h[40:], p.BegRun)
	put32(h[44:], p.RunLength)
}
func decodeSNACKRequest(h *BHS) *SNACKRequest {
	return &SNACKRequest{Type: h[1] & 0x0f, LUN: be64(h[8:]), ITT: be32(h[16:]), TTT: be32(h[20:]),
		ExpStatSN: be32(h[28:]), BegRun: be32(h[40:]), RunLength: be32(h[44:])}
}

// SN is the sequence-number triple every target PDU carries.
type SN struct {
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

func (s SN) put(h *BHS) {
	put32(h[24:], s.StatSN)
	put32(h[28:], s.ExpCmdSN)
	put32(h[32:], s.MaxCmdSN)
}
func getSN(h *BHS) SN { return SN{be32(h[24:]), be32(h[28:]), be32(h[32:])} }

// NOPIn answers a NOP-Out ping (ITT echoed) or pings the initiator
// (ITT = ReservedTag, TTT set: the initiator must answer).
type NOPIn struct {
	LUN      uint64
	ITT, TTT uint32
	SN
}

func (*NOPIn) Opcode() Opcode { return OpNOPIn }
func (p *NOPIn) Encode(h *BHS) {
	begin(h, OpNOPIn, false, 0x80)
	put64(h[8:], p.LUN)
	put32(h[16:], p.ITT)
	put32(h[20:], p.TTT)
	p.SN.put(h)
}
func decodeNOPIn(h *BHS) *NOPIn {
	return &NOPIn{LUN: be64(h[8:]), ITT: be32(h[16:]), TTT: be32(h[20:]), SN: getSN(h)}
}

// SCSI Response codes (byte 2).
const (
	ResponseCompleted    = 0x00
	ResponseTargetFailed = 0x01
)

// SCSIResponse completes a SCSI command. Sense data, when present, is in
// the data segment behind a two-byte length (see ParseSenseSegment).
type SCSIResponse struct {
	BidiOverflow, BidiUnderflow bool
	Overflow, Underflow         bool
	Response, Status            uint8
	ITT                         uint32
	SNACKTag                    uint32
	SN
	ExpDataSN         uint32
	BidiResidualCount uint32
	ResidualCount     uint32
}

func (*SCSIResponse) Opcode() Opcode { return OpSCSIResponse }
func (p *SCSIResponse) Encode(h *BHS) {
	begin(h, OpSCSIResponse, false, 0x80|flag(p.BidiOverflow, 0x10)|flag(p.BidiUnderflow, 0x08)|
		flag(p.Overflow, 0x04)|flag(p.Underflow, 0x02))
	h[2], h[3] = p.Response, p.Status
	put32(h[16:], p.ITT)
	put32(h[20:], p.SNACKTag)
	p.SN.put(h)
	put32(h[36:], p.ExpDataSN)
	put32(h[40:], p.BidiResidualCount)
	put32(h[44:], p.ResidualCount)
}
func decodeSCSIResponse(h *BHS) *SCSIResponse {
	return &SCSIResponse{BidiOverflow: h[1]&0x10 != 0, BidiUnderflow: h[1]&0x08 != 0, Overflow: h[1]&0x04 != 0,
		Underflow: h[1]&0x02 != 0, Response: h[2], Status: h[3], ITT: be32(h[16:]), SNACKTag: be32(h[20:]),
		SN: getSN(h), ExpDataSN: be32(h[36:]), BidiResidualCount: be32(h[40:]), ResidualCount: be32(h[44:])}
}

// TaskMgmtResponse answers a TaskMgmtRequest.
type TaskMgmtResponse struct {
	Response uint8
	ITT      uint32
	SN
}

func (*TaskMgmtResponse) Opcode() Opcode { return OpTaskMgmtResponse }
func (p *TaskMgmtResponse) Encode(h *BHS) {
	begin(h, OpTaskMgmtResponse, false, 0x80)
	h[2] = p.Response
	put32(h[16:], p.ITT)
	p.SN.put(h)
}
func decodeTaskMgmtResponse(h *BHS) *TaskMgmtResponse {
	return &TaskMgmtResponse{Response: h[2], ITT: be32(h[16:]), SN: getSN(h)}
}

// LoginResponse answers one Login Request; StatusClass/StatusDetail say
// whether the login goes on (class 0) or failed (see LoginError).
type LoginResponse struct {
	Transit, Continue         bool
	CSG, NSG                  uint8
	VersionMax, VersionActive uint8
	ISID                      [6]byte
	TSIH                      uint16
	ITT                       uint32
	SN
	StatusClass, StatusDetail uint8
}

func (*LoginResponse) Opcode() Opcode { return OpLoginResponse }
func (p *LoginResponse) Encode(h *BHS) {
	begin(h, OpLoginResponse, false, flag(p.Transit, 0x80)|flag(p.Continue, 0x40)|(p.CSG&3)<<2|p.NSG&3)
	h[2], h[3] = p.VersionMax, p.VersionActive
	copy(h[8:14], p.ISID[:])
	put16(h[14:], p.TSIH)
	put32(h[16:], p.ITT)
	p.SN.put(h)
	h[36], h[37] = p.StatusClass, p.StatusDetail
}
func decodeLoginResponse(h *BHS) *LoginResponse {
	p := &LoginResponse{Transit: h[1]&0x80 != 0, Continue: h[1]&0x40 != 0, CSG: h[1] >> 2 & 3, NSG: h[1] & 3,
		VersionMax: h[2], VersionActive: h[3], TSIH: be16(h[14:]), ITT: be32(h[16:]), SN: getSN(h),
		StatusClass: h[36], StatusDetail: h[37]}
	copy(p.ISID[:], h[8:14])
	return p
}

// TextResponse answers a TextRequest.
type TextResponse struct {
	Final, Continue bool
	LUN             uint64
	ITT, TTT        uint32
	SN
}

func (*TextResponse) Opcode() Opcode { return OpTextResponse }
func (p *TextResponse) Encode(h *BHS) {
	begin(h, OpTextResponse, false, flag(p.Final, 0x80)|flag(p.Continue, 0x40))
	put64(h[8:], p.LUN)
	put32(h[16:], p.ITT)
	put32(h[20:], p.TTT)
	p.SN.put(h)
}
func decodeTextResponse(h *BHS) *TextResponse {
	return &TextResponse{Final: h[1]&0x80 != 0, Continue: h[1]&0x40 != 0, LUN: be64(h[8:]), ITT: be32(h[16:]),
		TTT: be32(h[20:]), SN: getSN(h)}
}

// DataIn carries read data; with HasStatus (S bit) it also completes the
// command (phase collapse), and StatSN and Status are valid.
type DataIn struct {
	Final, Ack          bool
	Overflow, Underflow bool
	HasStatus           bool
	Status              uint8
	LUN                 uint64
	ITT, TTT            uint32
	SN
	DataSN        uint32
	BufferOffset  uint32
	ResidualCount uint32
}

func (*DataIn) Opcode() Opcode { return OpDataIn }
func (p *DataIn) Encode(h *BHS) {
	begin(h, OpDataIn, false, flag(p.Final, 0x80)|flag(p.Ack, 0x40)|flag(p.Overflow, 0x04)|
		flag(p.Underflow, 0x02)|flag(p.HasStatus, 0x01))
	h[3] = p.Status
	put64(h[8:], p.LUN)
	put32(h[16:], p.ITT)
	put32(h[20:], p.TTT)
	p.SN.put(h)
	put32(h[36:], p.DataSN)
	put32(h[40:], p.BufferOffset)
	put32(h[44:], p.ResidualCount)
}
func decodeDataIn(h *BHS) *DataIn {
	return &DataIn{Final: h[1]&0x80 != 0, Ack: h[1]&0x40 != 0, Overflow: h[1]&0x04 != 0, Underflow: h[1]&0x02 != 0,
		HasStatus: h[1]&0x01 != 0, Status: h[3], LUN: be64(h[8:]), ITT: be32(h[16:]), TTT: be32(h[20:]),
		SN: getSN(h), DataSN: be32(h[36:]), BufferOffset: be32(h[40:]), ResidualCount: be32(h[44:])}
}

// LogoutResponse answers a LogoutRequest.
type LogoutResponse struct {
	Response uint8
	ITT      uint32
	SN
	Time2Wait, Time2Retain uint16
}

func (*LogoutResponse) Opcode() Opcode { return OpLogoutResponse }
func (p *LogoutResponse) Encode(h *BHS) {
	begin(h, OpLogoutResponse, false, 0x80)
	h[2] = p.Response
	put32(h[16:], p.ITT)
	p.SN.put(h)
	put16(h[40:], p.Time2Wait)
	put16(h[42:], p.Time2Retain)
}
func decodeLogoutResponse(h *BHS) *LogoutResponse {
	return &LogoutResponse{Response: h[2], ITT: be32(h[16:]), SN: getSN(h), Time2Wait: be16(h[40:]), Time2Retain: be16(h[42:])}
}

// R2T asks the initiator for DesiredDataTransferLength bytes of a write,
// starting at BufferOffset.
type R2T struct {
	LUN      uint64
	ITT, TTT uint32
	SN
	R2TSN                     uint32
	BufferOffset              uint32
	DesiredDataTransferLength uint32
}

func (*R2T) Opcode() Opcode { return OpR2T }
func (p *R2T) Encode(h *BHS) {
	begin(h, OpR2T, false, 0x80)
	put64(h[8:], p.LUN)
	put32(h[16:], p.ITT)
	put32(h[20:], p.TTT)
	p.SN.put(h)
	put32(h[36:], p.R2TSN)
	put32(h[40:], p.BufferOffset)
	put32(h[44:], p.DesiredDataTransferLength)
}
func decodeR2T(h *BHS) *R2T {
	return &R2T{LUN: be64(h[8:]), ITT: be32(h[16:]), TTT: be32(h[20:]), SN: getSN(h), R2TSN: be32(h[36:]),
		BufferOffset: be32(h[40:]), DesiredDataTransferLength: be32(h[44:])}
}

// Asynchronous events (RFC 7143 §11.9.1).
const (
	AsyncSCSIEvent         = 0
	AsyncLogoutRequested   = 1
	AsyncDropConnection    = 2
	AsyncDropAllConnection = 3
	AsyncNegotiation       = 4
	AsyncVendor            = 255
)

// AsyncMessage is an unsolicited event from the target.
type AsyncMessage struct {
	LUN uint64
	SN
	AsyncEvent, AsyncVCode             uint8
	Parameter1, Parameter2, Parameter3 uint16
}

func (*AsyncMessage) Opcode() Opcode { return OpAsyncMessage }
func (p *AsyncMessage) Encode(h *BHS) {
	begin(h, OpAsyncMessage, false, 0x80)
	put64(h[8:], p.LUN)
	put32(h[16:], ReservedTag)
	p.SN.put(h)
	h[36], h[37] = p.AsyncEvent, p.AsyncVCode
	put16(h[38:], p.Parameter1)
	put16(h[40:], p.Parameter2)
	put16(h[42:], p.Parameter3)
}
func decodeAsyncMessage(h *BHS) *AsyncMessage {
	return &AsyncMessage{LUN: be64(h[8:]), SN: getSN(h), AsyncEvent: h[36], AsyncVCode: h[37],
		Parameter1: be16(h[38:]), Parameter2: be16(h[40:]), Parameter3: be16(h[42:])}
}

// Reject reasons (RFC 7143 §11.17.1).
const (
	RejectDataDigest       = 0x02
	RejectSNACK            = 0x03
	RejectProtocolError    = 0x04
	RejectNotSupported     = 0x05
	RejectImmediateCmd     = 0x06
	RejectTaskInProgress   = 0x07
	RejectInvalidDataAck   = 0x08
	RejectInvalidField     = 0x09
	RejectLongOperation    = 0x0a
	RejectWaitingForLogout = 0x0c
)

// Reject refuses a PDU; the data segment holds the rejected header.
type Reject struct {
	Reason uint8
	SN
	DataSN uint32
}

func (*Reject) Opcode() Opcode { return OpReject }
func (p *Reject) Encode(h *BHS) {
	begin(h, OpReject, false, 0x80)
	h[2] = p.Reason
	put32(h[16:], ReservedTag)
	p.SN.put(h)
	put32(h[36:], p.DataSN)
}
func decodeReject(h *BHS) *Reject {
	return &Reject{Reason: h[2], SN: getSN(h), DataSN: be32(h[36:])}
}
