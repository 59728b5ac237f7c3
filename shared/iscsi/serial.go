package iscsi

// Sequence numbers (CmdSN, StatSN, DataSN, ...) are 32-bit serial numbers
// compared with RFC 1982 arithmetic: a is less than b when b is ahead of a
// by less than 2^31. The pair exactly 2^31 apart is undefined by RFC 1982;
// SerialLess reports false both ways for it, so neither side moves.

// SerialLess reports a < b in serial arithmetic.
func SerialLess(a, b uint32) bool {
	d := b - a
	return d != 0 && d < 1<<31
}

// SerialLessEq reports a <= b in serial arithmetic.
func SerialLessEq(a, b uint32) bool { return a == b || SerialLess(a, b) }

// InWindow reports whether a non-immediate command with CmdSN sn may be
// issued (or accepted): ExpCmdSN <= sn <= MaxCmdSN. An empty window
// (MaxCmdSN = ExpCmdSN - 1) admits nothing.
func InWindow(sn, expCmdSN, maxCmdSN uint32) bool {
	return SerialLessEq(expCmdSN, sn) && SerialLessEq(sn, maxCmdSN)
}
