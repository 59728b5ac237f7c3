package imagestream

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/shared/api"
)

const (
	hexMD5    = "0123456789abcdef0123456789abcdef"
	hexSHA256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

var hexSHA512 = strings.Repeat("ab", 64)

func TestParseChecksumFile(t *testing.T) {
	for _, tc := range []struct {
		name       string
		file       string
		image      string
		wantDigest string
		wantAlgo   string
		wantErr    string
	}{
		{name: "bare digest", file: hexSHA256 + "\n", image: "x.img", wantDigest: hexSHA256},
		{name: "bare digest with comments and blank lines", file: "# made by hand\n\n  " + strings.ToUpper(hexSHA256) + "  \n", image: "x.img", wantDigest: hexSHA256},
		{name: "sha256sum text mode", file: hexSHA256 + "  x.img\n", image: "x.img", wantDigest: hexSHA256},
		{name: "sha256sum binary mode", file: hexSHA256 + " *x.img\n", image: "x.img", wantDigest: hexSHA256},
		{name: "one space", file: hexSHA256 + " x.img", image: "x.img", wantDigest: hexSHA256},
		{name: "CRLF line ends", file: hexMD5 + "  other.img\r\n" + hexSHA256 + "  x.img\r\n", image: "x.img", wantDigest: hexSHA256},
		{name: "picks the image's line", file: hexMD5 + "  a.img\n" + hexSHA512 + "  x.img\n" + hexSHA256 + "  b.img\n", image: "x.img", wantDigest: hexSHA512},
		{name: "BSD style", file: "SHA256 (x.img) = " + hexSHA256 + "\n", image: "x.img", wantDigest: hexSHA256, wantAlgo: "SHA256"},
		{name: "OpenSSL 3 style", file: "SHA2-512(x.img)= " + hexSHA512 + "\n", image: "x.img", wantDigest: hexSHA512, wantAlgo: "SHA2-512"},
		{name: "CentOS CHECKSUM with PGP armour", file: "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# CentOS-Stream-9.qcow2: 1 bytes\nSHA256 (CentOS-Stream-9.qcow2) = " + hexSHA256 + "\n-----BEGIN PGP SIGNATURE-----\nabc\n", image: "CentOS-Stream-9.qcow2", wantDigest: hexSHA256, wantAlgo: "SHA256"},
		{name: "name with spaces and parentheses", file: "SHA256 (my disk (1).img) = " + hexSHA256, image: "my disk (1).img", wantDigest: hexSHA256, wantAlgo: "SHA256"},
		{name: "GNU escaped name", file: `\` + hexSHA256 + `  a\\b.img`, image: `a\b.img`, wantDigest: hexSHA256},
		{name: "path listed: basename fallback", file: hexSHA256 + "  ./images/x.img\n", image: "x.img", wantDigest: hexSHA256},
		{name: "exact name beats a path", file: hexMD5 + "  old/x.img\n" + hexSHA256 + "  x.img\n", image: "x.img", wantDigest: hexSHA256},
		{name: "first exact match wins", file: hexSHA256 + "  x.img\n" + hexMD5 + "  x.img\n", image: "x.img", wantDigest: hexSHA256},
		{name: "image not listed names the basename", file: hexSHA256 + "  y.img\n", image: "x.img", wantErr: `does not contain name "x.img"`},
		{name: "empty file", file: "", image: "x.img", wantErr: `does not contain name "x.img"`},
		{name: "only comments", file: "# nothing\n#\n", image: "x.img", wantErr: `does not contain name`},
		{name: "bare non-digest", file: "hello\n", image: "x.img", wantErr: `does not contain name`},
		{name: "listed with a broken digest", file: "xyz  x.img\n", image: "x.img", wantErr: "without a valid hex digest"},
		{name: "listed with a digest of no known length", file: "abcd  x.img\n", image: "x.img", wantErr: "without a valid hex digest"},
		{name: "a prefix of the name is not the name", file: hexSHA256 + "  x.img.gz\n", image: "x.img", wantErr: "does not contain name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, a, err := ParseChecksumFile([]byte(tc.file), tc.image)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrNoChecksum) {
					t.Fatalf("err %v, want ErrNoChecksum with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d != tc.wantDigest || a != tc.wantAlgo {
				t.Errorf("got (%s, %q), want (%s, %q)", d, a, tc.wantDigest, tc.wantAlgo)
			}
		})
	}
}

func TestPlanChecksum(t *testing.T) {
	for _, tc := range []struct {
		name       string
		info       api.ImageInfo
		md5        bool
		want       checksumPlan
		wantErr    string
		wantWarned bool
	}{
		{name: "os_hash pair wins over checksum",
			info: api.ImageInfo{OSHashAlgo: "sha512", OSHashValue: hexSHA512, Checksum: hexMD5},
			want: checksumPlan{algo: "sha512", digest: hexSHA512, source: "os_hash_value"}},
		{name: "os_hash_value is upper case",
			info: api.ImageInfo{OSHashAlgo: "SHA256", OSHashValue: strings.ToUpper(hexSHA256)},
			want: checksumPlan{algo: "sha256", digest: hexSHA256, source: "os_hash_value"}},
		{name: "os_hash_value is a URL",
			info: api.ImageInfo{OSHashAlgo: "sha256", OSHashValue: "https://h/SHA256SUMS"},
			want: checksumPlan{algo: "sha256", fileURL: "https://h/SHA256SUMS", source: "os_hash_value"}},
		{name: "os_hash_value of the wrong length",
			info: api.ImageInfo{OSHashAlgo: "sha512", OSHashValue: hexSHA256}, wantErr: "not a sha512 digest"},
		{name: "unknown os_hash_algo falls back to checksum",
			info: api.ImageInfo{OSHashAlgo: "blake2b", OSHashValue: "abc", Checksum: hexSHA256},
			want: checksumPlan{algo: "sha256", digest: hexSHA256, source: "checksum"}},
		{name: "unknown os_hash_algo without checksum",
			info: api.ImageInfo{OSHashAlgo: "blake2b", OSHashValue: "abc"}, wantErr: `"blake2b" is not supported`},
		{name: "checksum URL takes os_hash_algo",
			info: api.ImageInfo{OSHashAlgo: "sha512", Checksum: "http://h/CHECKSUMS"},
			want: checksumPlan{algo: "sha512", fileURL: "http://h/CHECKSUMS", source: "checksum"}},
		{name: "checksum URL alone: algorithm from the file",
			info: api.ImageInfo{Checksum: "http://h/CHECKSUMS"},
			want: checksumPlan{fileURL: "http://h/CHECKSUMS", source: "checksum"}},
		{name: "sha256 by length", info: api.ImageInfo{Checksum: hexSHA256},
			want: checksumPlan{algo: "sha256", digest: hexSHA256, source: "checksum"}},
		{name: "sha512 by length", info: api.ImageInfo{Checksum: hexSHA512},
			want: checksumPlan{algo: "sha512", digest: hexSHA512, source: "checksum"}},
		{name: "md5 by length when allowed", info: api.ImageInfo{Checksum: hexMD5}, md5: true,
			want: checksumPlan{algo: "md5", digest: hexMD5, source: "checksum"}},
		{name: "md5 by length refused", info: api.ImageInfo{Checksum: hexMD5}, wantErr: "MD5 is not allowed"},
		{name: "md5 os_hash refused", info: api.ImageInfo{OSHashAlgo: "md5", OSHashValue: hexMD5}, wantErr: "md5 is not allowed"},
		{name: "md5 os_hash refused, sha256 checksum used",
			info: api.ImageInfo{OSHashAlgo: "md5", OSHashValue: hexMD5, Checksum: hexSHA256},
			want: checksumPlan{algo: "sha256", digest: hexSHA256, source: "checksum"}},
		{name: "algo contradicting the length warns",
			info: api.ImageInfo{OSHashAlgo: "sha512", Checksum: hexSHA256},
			want: checksumPlan{algo: "sha256", digest: hexSHA256, source: "checksum"}, wantWarned: true},
		{name: "odd length", info: api.ImageInfo{Checksum: "abcdef"}, wantErr: "6 hex digits match no algorithm"},
		{name: "not hex", info: api.ImageInfo{Checksum: "not-a-checksum"}, wantErr: "neither a hex digest nor an http(s) URL"},
		{name: "nothing", info: api.ImageInfo{}, wantErr: "neither os_hash_algo+os_hash_value nor checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planChecksum(tc.info, tc.md5)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrNoChecksum) {
					t.Fatalf("err %v, want ErrNoChecksum with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got.warning != "") != tc.wantWarned {
				t.Errorf("warning %q", got.warning)
			}
			got.warning = ""
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(checksumPlan{})); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

func TestImageBasename(t *testing.T) {
	for _, tc := range []struct{ url, want, wantErr string }{
		{"http://h/images/x.img", "x.img", ""},
		{"http://h/images/x.img?sig=abc&e=1", "x.img", ""},
		{"http://h/images/my%20disk.img", "my disk.img", ""},
		{"http://h/", "", "no file name"},
		{"http://h", "", "no file name"},
	} {
		got, err := ImageBasename(tc.url)
		if (err != nil) != (tc.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) || got != tc.want {
			t.Errorf("ImageBasename(%s) = %q, %v", tc.url, got, err)
		}
	}
}

// TestStreamChecksumFiles goes through Stream end to end: checksum files
// fetched from the image server.
func TestStreamChecksumFiles(t *testing.T) {
	img := makeImage(20, 200_000)
	sum := sha256Hex(img)
	for _, tc := range []struct {
		name      string
		files     map[string]string
		info      func(base string) api.ImageInfo
		wantAlgo  string
		wantErr   error
		wantInMsg string
		md5       bool
	}{
		{name: "checksum URL with sha256sum lines",
			files: map[string]string{"SHA256SUMS": hexMD5 + "  other.img\n" + sum + "  disk.img\n"},
			info: func(b string) api.ImageInfo {
				return api.ImageInfo{ID: "i", URLs: []string{b + "/disk.img"}, Checksum: b + "/SHA256SUMS"}
			}, wantAlgo: "sha256"},
		{name: "os_hash_value URL with BSD lines",
			files: map[string]string{"CHECKSUM": "SHA256 (disk.img) = " + sum + "\n"},
			info: func(b string) api.ImageInfo {
				return api.ImageInfo{ID: "i", URLs: []string{b + "/disk.img"}, OSHashAlgo: "sha256", OSHashValue: b + "/CHECKSUM"}
			}, wantAlgo: "sha256"},
		{name: "file's algorithm tag is used",
			files: map[string]string{"SUMS": "SHA512 (disk.img) = " + sha512Of(img) + "\n"},
			info: func(b string) api.ImageInfo {
				return api.ImageInfo{ID: "i", URLs: []string{b + "/disk.img"}, Checksum: b + "/SUMS"}
			}, wantAlgo: "sha512"},
		{name: "file does not list the image",
			files: map[string]string{"SHA256SUMS": sum + "  other.img\n"},
			info: func(b string) api.ImageInfo {
				return api.ImageInfo{ID: "i", URLs: []string{b + "/disk.img"}, Checksum: b + "/SHA256SUMS"}
			}, wantErr: ErrNoChecksum, wantInMsg: `"disk.img"`},
		{name: "checksum file missing",
			info: func(b string) api.ImageInfo {
				return api.ImageInfo{ID: "i", URLs: []string{b + "/disk.img"}, Checksum: b + "/NOPE"}
			}, wantInMsg: "404"},
		{name: "md5 in the file refused",
			files: map[string]string{"MD5SUMS": hexMD5 + "  disk.img\n"},
			info: func(b string) api.ImageInfo {
				return api.ImageInfo{ID: "i", URLs: []string{b + "/disk.img"}, Checksum: b + "/MD5SUMS"}
			}, wantErr: ErrNoChecksum, wantInMsg: "MD5"},
		{name: "wrong digest in the file",
			files: map[string]string{"SHA256SUMS": hexSHA256 + "  disk.img\n"},
			info: func(b string) api.ImageInfo {
				return api.ImageInfo{ID: "i", URLs: []string{b + "/disk.img"}, Checksum: b + "/SHA256SUMS"}
			}, wantErr: ErrChecksum, wantInMsg: hexSHA256},
		{name: "checksum file too large",
			files: map[string]string{"BIG": strings.Repeat("#\n", maxChecksumFile)},
			info: func(b string) api.ImageInfo {
				return api.ImageInfo{ID: "i", URLs: []string{b + "/disk.img"}, Checksum: b + "/BIG"}
			}, wantInMsg: "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.img", img)
			for n, c := range tc.files {
				s.add(n, []byte(c))
			}
			srv := startServer(t, s)
			opts := testOptions(t)
			opts.MD5Allowed = tc.md5
			dst := newMemTarget()
			res, err := Stream(t.Context(), tc.info(srv.URL), dst, opts)
			if tc.wantInMsg == "" && tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if res.Algo != tc.wantAlgo || !bytes.Equal(dst.bytes(), img) {
					t.Errorf("result %+v", res)
				}
				return
			}
			msg := mustErr(t, err, tc.wantErr)
			if !strings.Contains(msg, tc.wantInMsg) || !IsPermanent(err) {
				t.Errorf("error %q (permanent %v), want %q", msg, IsPermanent(err), tc.wantInMsg)
			}
			if tc.wantErr != ErrChecksum && dst.writes != 0 {
				t.Errorf("%d writes before the checksum was known", dst.writes)
			}
		})
	}
}

func sha512Of(b []byte) string {
	s := sha512.Sum512(b)
	return hex.EncodeToString(s[:])
}

func FuzzParseChecksumFile(f *testing.F) {
	f.Add([]byte(hexSHA256+"  x.img\n"), "x.img")
	f.Add([]byte("SHA256 (x.img) = "+hexSHA256), "x.img")
	f.Add([]byte(`\`+hexSHA256+`  a\\b\nc`), "x.img")
	f.Add([]byte("# c\n\n"+hexMD5), "x.img")
	f.Add([]byte("(x.img)=\n=)("), "x.img")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		d, a, err := ParseChecksumFile(data, name)
		if err != nil {
			if !errors.Is(err, ErrNoChecksum) {
				t.Fatalf("error %v is not ErrNoChecksum", err)
			}
			return
		}
		if !isHexDigest(d) || d != strings.ToLower(d) {
			t.Fatalf("digest %q is not a lower-case hex digest", d)
		}
		if !bytes.Contains(bytes.ToLower(data), []byte(d)) {
			t.Fatalf("digest %q is not in the file", d)
		}
		if a != "" && !bytes.Contains(data, []byte(a)) {
			t.Fatalf("algorithm %q is not in the file", a)
		}
	})
}
