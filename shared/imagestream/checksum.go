package imagestream

import (
	"crypto/md5" //nolint:gosec // only when the operator allows MD5, as IPA does
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"net/url"
	"path"
	"strings"

	"github.com/ingot-dev/ingot/shared/api"
)

// hashAlgo returns the digest length in bytes and constructor of an
// algorithm named as hashlib (and so Glance's os_hash_algo and IPA) names
// it.
func hashAlgo(name string) (size int, newHash func() hash.Hash, ok bool) {
	switch name {
	case "md5":
		return md5.Size, md5.New, true
	case "sha1":
		return sha1.Size, sha1.New, true
	case "sha224":
		return sha256.Size224, sha256.New224, true
	case "sha256":
		return sha256.Size, sha256.New, true
	case "sha384":
		return sha512.Size384, sha512.New384, true
	case "sha512":
		return sha512.Size, sha512.New, true
	case "sha3_224":
		return 28, func() hash.Hash { return sha3.New224() }, true
	case "sha3_256":
		return 32, func() hash.Hash { return sha3.New256() }, true
	case "sha3_384":
		return 48, func() hash.Hash { return sha3.New384() }, true
	case "sha3_512":
		return 64, func() hash.Hash { return sha3.New512() }, true
	}
	return 0, nil, false
}

// algoByLength is IPA's rule for a checksum without an algorithm: 32 hex
// digits are MD5 (only when allowed), 64 SHA-256, 128 SHA-512.
func algoByLength(digest string, md5Allowed bool) (string, error) {
	switch len(digest) {
	case 32:
		if !md5Allowed {
			return "", fmt.Errorf("checksum %s is an MD5 digest and MD5 is not allowed (agent_md5_checksum_enable): %w", digest, ErrNoChecksum)
		}
		return "md5", nil
	case 64:
		return "sha256", nil
	case 128:
		return "sha512", nil
	}
	return "", fmt.Errorf("checksum %q: %d hex digits match no algorithm (32 md5, 64 sha256, 128 sha512): %w", digest, len(digest), ErrNoChecksum)
}

// normalizeAlgo maps spellings seen in checksum files and image metadata
// ("SHA256", "SHA2-256", "sha-512", "SHA3-256") to hashlib names.
func normalizeAlgo(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.ReplaceAll(s, "sha2-", "sha")
	if strings.HasPrefix(s, "sha3-") {
		s = "sha3_" + s[len("sha3-"):]
	}
	s = strings.ReplaceAll(s, "sha-", "sha")
	return s
}

// isHexDigest reports whether s is lower- or upper-case hex of a length
// some supported algorithm produces.
func isHexDigest(s string) bool {
	switch len(s) {
	case 32, 40, 56, 64, 96, 128:
	default:
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// checksumPlan is where the expected digest comes from: a literal value or
// a checksum file to fetch.
type checksumPlan struct {
	algo    string // "" = decide from the digest (length or the file's algorithm tag)
	digest  string // literal digest, lower case; "" when fileURL is set
	fileURL string // checksum file to fetch
	source  string // for messages: "os_hash_value", "checksum"
	warning string // IPA logs when os_hash_algo contradicts the digest length
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// planChecksum applies IPA's checksum selection (ironic-python-agent
// _validate_image_info / _get_image_checksum):
//
//  1. os_hash_algo set and known -> os_hash_value (a digest, or a URL of a
//     checksum file);
//  2. else checksum is an http(s) URL -> checksum file, algorithm from
//     os_hash_algo if given, else from the file;
//  3. else checksum is a digest -> algorithm by length;
//  4. else nothing usable: an error before any download.
func planChecksum(info api.ImageInfo, md5Allowed bool) (checksumPlan, error) {
	algo := normalizeAlgo(info.OSHashAlgo)
	_, _, known := hashAlgo(algo)
	if algo == "md5" && !md5Allowed {
		if info.Checksum == "" || info.OSHashValue == "" {
			return checksumPlan{}, fmt.Errorf("os_hash_algo md5 is not allowed (agent_md5_checksum_enable): %w", ErrNoChecksum)
		}
		known = false // fall back to checksum, as IPA does with an unusable algorithm
	}
	value := strings.TrimSpace(info.OSHashValue)
	if known && value != "" {
		if isURL(value) {
			return checksumPlan{algo: algo, fileURL: value, source: "os_hash_value"}, nil
		}
		value = strings.ToLower(value)
		if err := checkDigest(algo, value); err != nil {
			return checksumPlan{}, fmt.Errorf("os_hash_value: %w", err)
		}
		return checksumPlan{algo: algo, digest: value, source: "os_hash_value"}, nil
	}
	sum := strings.TrimSpace(info.Checksum)
	if isURL(sum) {
		p := checksumPlan{fileURL: sum, source: "checksum"}
		if known {
			p.algo = algo
		}
		return p, nil
	}
	if sum == "" {
		if algo != "" && !known {
			return checksumPlan{}, fmt.Errorf("os_hash_algo %q is not supported and there is no checksum: %w", info.OSHashAlgo, ErrNoChecksum)
		}
		return checksumPlan{}, fmt.Errorf("image_info has neither os_hash_algo+os_hash_value nor checksum: %w", ErrNoChecksum)
	}
	sum = strings.ToLower(sum)
	if _, err := hex.DecodeString(sum); err != nil {
		return checksumPlan{}, fmt.Errorf("checksum %q is neither a hex digest nor an http(s) URL: %w", info.Checksum, ErrNoChecksum)
	}
	byLen, err := algoByLength(sum, md5Allowed)
	if err != nil {
		return checksumPlan{}, err
	}
	p := checksumPlan{algo: byLen, digest: sum, source: "checksum"}
	if known && algo != byLen {
		p.warning = fmt.Sprintf("os_hash_algo %s contradicts the %d-digit checksum; using %s", algo, len(sum), byLen)
	}
	return p, nil
}

// checkDigest verifies a digest's shape for algo.
func checkDigest(algo, digest string) error {
	size, _, ok := hashAlgo(algo)
	if !ok {
		return fmt.Errorf("algorithm %q is not supported: %w", algo, ErrNoChecksum)
	}
	if _, err := hex.DecodeString(digest); err != nil || len(digest) != 2*size {
		return fmt.Errorf("%q is not a %s digest (%d hex digits): %w", digest, algo, 2*size, ErrNoChecksum)
	}
	return nil
}

// finishPlan turns a digest found in a checksum file into the algorithm
// and digest to verify: the plan's algorithm if set, else the file's tag,
// else the digest's length.
func finishPlan(p checksumPlan, digest, fileAlgo string, md5Allowed bool) (algo, want string, err error) {
	digest = strings.ToLower(digest)
	algo = p.algo
	if algo == "" {
		algo = normalizeAlgo(fileAlgo)
		if _, _, ok := hashAlgo(algo); !ok {
			if algo, err = algoByLength(digest, md5Allowed); err != nil {
				return "", "", err
			}
		}
	}
	if algo == "md5" && !md5Allowed {
		return "", "", fmt.Errorf("the checksum file gives an MD5 digest and MD5 is not allowed (agent_md5_checksum_enable): %w", ErrNoChecksum)
	}
	if err := checkDigest(algo, digest); err != nil {
		return "", "", err
	}
	return algo, digest, nil
}

// ImageBasename is the name a checksum file must list for an image URL:
// the last element of its unescaped path, without the query string.
func ImageBasename(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("parse image url: %w", err)
	}
	b := path.Base(u.Path)
	if b == "." || b == "/" || b == "" {
		return "", fmt.Errorf("image url %s has no file name to look up in a checksum file: %w", redactURL(rawURL), ErrNoChecksum)
	}
	return b, nil
}

// ParseChecksumFile finds the digest for the file called name in a
// checksum file, as IPA does, and a little more forgivingly:
//
//   - blank lines and lines starting with # are ignored;
//   - a file whose only line is a bare digest gives that digest;
//   - GNU coreutils lines "<hex>  <name>" and "<hex> *<name>" (and their
//     backslash-escaped form) and BSD/OpenSSL lines "ALGO (<name>) = <hex>";
//   - a line matches when its name equals name, or, failing any exact
//     match, when the name's last path element does ("./x.img",
//     "images/x.img"): IPA only accepts the exact basename.
//
// algo is the algorithm a BSD line names ("" for GNU lines and bare
// digests). A file that does not list name is an ErrNoChecksum naming it.
func ParseChecksumFile(data []byte, name string) (digest, algo string, err error) {
	var lines []string
	for l := range strings.SplitSeq(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) == 1 && isHexDigest(lines[0]) {
		return strings.ToLower(lines[0]), "", nil
	}
	var (
		fallback     string
		fallbackAlgo string
		bad          bool
	)
	for _, l := range lines {
		d, a, n, ok := parseChecksumLine(l)
		if !ok {
			continue
		}
		exact := n == name
		if !exact && (path.Base(n) != name || fallback != "") {
			continue
		}
		if !isHexDigest(d) {
			bad = true
			continue
		}
		if exact {
			return strings.ToLower(d), a, nil
		}
		fallback, fallbackAlgo = strings.ToLower(d), a
	}
	if fallback != "" {
		return fallback, fallbackAlgo, nil
	}
	if bad {
		return "", "", fmt.Errorf("checksum file lists %q without a valid hex digest: %w", name, ErrNoChecksum)
	}
	return "", "", fmt.Errorf("checksum file does not contain name %q: %w", name, ErrNoChecksum)
}

// parseChecksumLine splits one checksum file line into digest, algorithm
// (BSD form only) and file name.
func parseChecksumLine(l string) (digest, algo, name string, ok bool) {
	// BSD / OpenSSL: "SHA256 (name) = hex" or "SHA2-256(name)= hex".
	if open := strings.IndexByte(l, '('); open > 0 {
		if closing := strings.LastIndex(l, ")"); closing > open {
			rest := strings.TrimSpace(l[closing+1:])
			if after, found := strings.CutPrefix(rest, "="); found {
				a := strings.TrimSpace(l[:open])
				if a != "" && !strings.ContainsAny(a, " \t") {
					return strings.TrimSpace(after), a, l[open+1 : closing], true
				}
			}
		}
	}
	// GNU coreutils: "hex  name", "hex *name"; a leading backslash means
	// the name is escaped (\\ and \n).
	escaped := strings.HasPrefix(l, "\\")
	if escaped {
		l = l[1:]
	}
	i := strings.IndexAny(l, " \t")
	if i <= 0 {
		return "", "", "", false
	}
	digest, name = l[:i], strings.TrimLeft(l[i+1:], " \t")
	name = strings.TrimPrefix(name, "*")
	if escaped {
		name = strings.NewReplacer(`\\`, `\`, `\n`, "\n").Replace(name)
	}
	return digest, "", name, name != ""
}
