package iscsitarget

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// cuResult is one iscsi-test-cu verdict: pass, fail, skip or none (the
// process ended before the test finished).
type cuResult map[string]string

var testLine = regexp.MustCompile(`(?m)^  Test: (\S+) \.\.\.`)

// parseCU reads iscsi-test-cu output: the verdict is the bare word
// "passed" or "FAILED" after "Test: X ..."; a [SKIPPED] note before a
// "passed" verdict makes it a skip (CUnit counts skips as passes).
func parseCU(suite, out string, res cuResult) {
	locs := testLine.FindAllStringSubmatchIndex(out, -1)
	for i, loc := range locs {
		name := suite + "." + out[loc[2]:loc[3]]
		end := len(out)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		block := out[loc[1]:end]
		if k := strings.Index(block, "Run Summary"); k >= 0 {
			block = block[:k]
		}
		p := verdictIndex(block, "passed")
		f := verdictIndex(block, "FAILED")
		switch {
		case f >= 0 && (p < 0 || f < p):
			res[name] = "fail"
		case p >= 0 && strings.Contains(block[:p], "[SKIPPED]"):
			res[name] = "skip"
		case p >= 0:
			res[name] = "pass"
		default:
			res[name] = "none"
		}
	}
}

// verdictIndex finds word as a CUnit verdict: right after "..." or at the
// start of a line (not inside a "[FAILED] message").
func verdictIndex(block, word string) int {
	for i := 0; ; {
		k := strings.Index(block[i:], word)
		if k < 0 {
			return -1
		}
		k += i
		if k == 0 || block[k-1] == '\n' {
			return k
		}
		i = k + len(word)
	}
}

func TestParseCU(t *testing.T) {
	out := "Suite: Inquiry\n" +
		"  Test: Standard ...passed\n" +
		"  Test: BlockLimits ...    [SKIPPED] Logical unit is fully provisioned. Skipping test\npassed\n" +
		"  Test: RCTD ...    [FAILED] Command descriptor with CTDP clear\n    [FAILED] again\nFAILED\n" +
		"    1. test.c:81  - CU_FAIL(x)    [SKIPPED] PERSISTENT RESERVE IN is not implemented.\n" +
		"  Test: Last ...passed    [SKIPPED] PERSISTENT RESERVE IN is not implemented.\n" +
		"  Test: Crashed ...\n"
	got := cuResult{}
	parseCU("S", out, got)
	want := cuResult{"S.Standard": "pass", "S.BlockLimits": "skip", "S.RCTD": "fail", "S.Last": "pass", "S.Crashed": "none"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("parseCU = %v, want %v", got, want)
	}
}
