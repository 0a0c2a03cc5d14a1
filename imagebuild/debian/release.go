package debian

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// ErrSignature is wrapped by every error about an index that is unsigned or
// whose signature does not verify against the keyring.
var ErrSignature = errors.New("bad or missing OpenPGP signature")

// ErrExpired is wrapped when a Release file is past its Valid-Until date.
var ErrExpired = errors.New("release file expired")

// ErrRollback is returned for a Release older than one fetched before.
var ErrRollback = errors.New("release file older than the cached one")

// FileHash is an index file listed in a Release file's SHA256 section.
type FileHash struct {
	Size   int64
	SHA256 string
}

// Release is the parsed, verified content of dists/<suite>/InRelease.
type Release struct {
	Origin, Label, Suite, Codename, Version string
	Date, ValidUntil                        time.Time // zero when absent
	Architectures, Components               []string
	// AcquireByHash says index files may be fetched from
	// <dir>/by-hash/SHA256/<hash>, which survives a mirror update racing
	// with our download.
	AcquireByHash bool
	// SHA256 maps a path relative to dists/<suite>/ ("main/binary-amd64/Packages.xz")
	// to its size and hash.
	SHA256 map[string]FileHash
}

// VerifyInRelease checks the clear-signed InRelease data against keyring at
// time now and returns the signed text. source names the file in errors.
func VerifyInRelease(data []byte, source string, keyring openpgp.KeyRing, now time.Time) ([]byte, error) {
	const begin = "-----BEGIN PGP SIGNED MESSAGE-----"
	// apt refuses text outside the signed block; so do we, since a parser
	// that read it would trust unsigned lines.
	if !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(begin)) {
		return nil, fmt.Errorf("%s: %w: not a clear-signed message (no %q at the start)", source, ErrSignature, begin)
	}
	block, rest := clearsign.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: %w: malformed clear-signed message", source, ErrSignature)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%s: %w: unsigned data after the signature", source, ErrSignature)
	}
	cfg := &packet.Config{Time: func() time.Time { return now }}
	if _, err := block.VerifySignature(keyring, cfg); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", source, ErrSignature, err)
	}
	return block.Plaintext, nil
}

// ParseRelease parses the (already verified) text of a Release file.
func ParseRelease(text []byte, source string) (*Release, error) {
	var st *Stanza
	err := ParseStanzas(bytes.NewReader(text), source, func(s *Stanza) error {
		if st != nil {
			return fmt.Errorf("%s:%d: more than one paragraph in a Release file", source, s.Line)
		}
		st = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("%s: empty Release file", source)
	}
	r := &Release{
		Origin:        st.Value("Origin"),
		Label:         st.Value("Label"),
		Suite:         st.Value("Suite"),
		Codename:      st.Value("Codename"),
		Version:       st.Value("Version"),
		Architectures: strings.Fields(st.Value("Architectures")),
		Components:    strings.Fields(st.Value("Components")),
		AcquireByHash: strings.EqualFold(st.Value("Acquire-By-Hash"), "yes"),
		SHA256:        map[string]FileHash{},
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"Date", &r.Date}, {"Valid-Until", &r.ValidUntil}} {
		v, ok := st.Get(f.name)
		if !ok {
			continue
		}
		t, err := parseReleaseDate(v)
		if err != nil {
			return nil, fmt.Errorf("%s: field %s: %w", source, f.name, err)
		}
		*f.dst = t
	}
	sums, ok := st.Get("SHA256")
	if !ok {
		return nil, fmt.Errorf("%s: no SHA256 field", source)
	}
	for i, l := range strings.Split(sums, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		parts := strings.Fields(l)
		if len(parts) != 3 {
			return nil, fmt.Errorf("%s: SHA256 entry %d: want \"hash size path\", got %q", source, i, truncate(l, 80))
		}
		if !isHexSHA256(parts[0]) {
			return nil, fmt.Errorf("%s: SHA256 entry %d (%s): bad hash %q", source, i, parts[2], truncate(parts[0], 80))
		}
		size, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("%s: SHA256 entry %d (%s): bad size %q", source, i, parts[2], parts[1])
		}
		r.SHA256[parts[2]] = FileHash{Size: size, SHA256: strings.ToLower(parts[0])}
	}
	return r, nil
}

// CheckValid returns an error wrapping ErrExpired when now is past
// Valid-Until. A Release without Valid-Until (Debian's main archive) never
// expires.
func (r *Release) CheckValid(now time.Time, source string) error {
	if !r.ValidUntil.IsZero() && now.After(r.ValidUntil) {
		return fmt.Errorf("%s: %w: Valid-Until %s is before now (%s)", source, ErrExpired,
			r.ValidUntil.Format(time.RFC1123), now.UTC().Format(time.RFC1123))
	}
	return nil
}

func parseReleaseDate(v string) (time.Time, error) {
	// Debian writes "Sat, 21 Nov 2026 09:15:44 UTC"; some archives use a
	// numeric zone or a single-digit day.
	for _, layout := range []string{time.RFC1123, time.RFC1123Z, "Mon, 2 Jan 2006 15:04:05 MST", "Mon, 2 Jan 2006 15:04:05 -0700"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("unparseable date %q", truncate(v, 80))
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) && !(c >= 'a' && c <= 'f') && !(c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
