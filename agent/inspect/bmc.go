package inspect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Runner runs a program and returns its standard output.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// ErrNoBMCAddress means no IPMI LAN channel has an address configured.
var ErrNoBMCAddress = errors.New("no IPMI LAN channel has an address")

// IPMIToolBMC reads the BMC's LAN configuration in band, as IPA does: it
// asks `ipmitool lan print <channel>` for channels 1 to 11 and returns the
// first with an address other than 0.0.0.0.
func IPMIToolBMC(run Runner) func(ctx context.Context) (BMC, error) {
	return func(ctx context.Context) (BMC, error) {
		var lastErr error = ErrNoBMCAddress
		for ch := 1; ch <= 11; ch++ {
			out, err := run(ctx, "ipmitool", "lan", "print", strconv.Itoa(ch))
			if err != nil {
				if ctx.Err() != nil {
					return BMC{}, ctx.Err()
				}
				lastErr = fmt.Errorf("ipmitool lan print %d: %w", ch, err)
				continue
			}
			if b := ParseLANPrint(string(out)); b.Address != "" {
				return b, nil
			}
		}
		return BMC{}, lastErr
	}
}

// ParseLANPrint reads `ipmitool lan print` output: "IP Address" and "MAC
// Address" lines; 0.0.0.0 counts as no address.
func ParseLANPrint(out string) BMC {
	var b BMC
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "IP Address":
			if ip := net.ParseIP(v); ip != nil && ip.To4() != nil && !ip.IsUnspecified() {
				b.Address = ip.String()
			}
		case "MAC Address":
			if hw, err := net.ParseMAC(v); err == nil {
				b.MAC = hw.String()
			}
		}
	}
	return b
}
