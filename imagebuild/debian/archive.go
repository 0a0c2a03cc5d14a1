// Package debian is a client for a signed Debian archive: it fetches and
// verifies the indexes, resolves dependencies, downloads and checks .debs,
// unpacks each one once into a cache, and adds their files to a
// filetree.Tree. A lock file pins exact versions and hashes so a build can
// be repeated, offline if the cache holds everything. A resolution may take
// its requested packages from another suite of the same mirror (a kernel
// from a backports suite, FromSuite), verified the same way. Source packages are
// found in the Sources indexes, read only when asked for, and their files
// (an upstream tarball to build from) fetched and checked the same way.
//
// Cache layout, under Config.CacheDir:
//
//	debian/index/<mirror>/<suite>/InRelease   last verified InRelease
//	debian/index/by-sha256/<hash>             Packages.xz, Sources.xz, content-addressed
//	debian/index/by-sha256/<hash>.txt         the same, decompressed
//	debian/debs/<sha256>.deb                  verified .debs
//	debian/unpacked/<sha256>/                 a .deb's data.tar unpacked, with manifest.json
//	debian/sources/<sha256>/<name>            verified source files (orig tarballs)
package debian

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "embed"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ulikunitz/xz"
)

const (
	DefaultMirror = "http://deb.debian.org/debian"
	DefaultSuite  = "trixie"
)

// DefaultComponents are the archive components used when Config.Components is nil.
var DefaultComponents = []string{"main", "non-free-firmware"}

//go:embed keys/debian-archive-keyring.pgp
var embeddedKeyring []byte

// DefaultKeyring returns the Debian archive signing keys shipped in the
// repository (keys/README.md says which).
func DefaultKeyring() (openpgp.EntityList, error) {
	kr, err := openpgp.ReadKeyRing(bytes.NewReader(embeddedKeyring))
	if err != nil {
		return nil, fmt.Errorf("embedded Debian keyring: %w", err)
	}
	return kr, nil
}

// Config says which archive to use and where to cache it.
type Config struct {
	// Mirror is the archive root URL; empty means DefaultMirror.
	Mirror string
	// Suite is a codename or suite ("trixie", "stable"); empty means DefaultSuite.
	Suite string
	// Components to index; nil means DefaultComponents.
	Components []string
	// Arch is the Debian architecture: "amd64", "arm64" or "armhf". Required.
	Arch string
	// CacheDir is the root of the cache (e.g. ~/.cache/ballast); this
	// package uses its "debian" subdirectory. Required.
	CacheDir string
	// Offline forbids the network: everything comes from the lock and the cache.
	Offline bool
	// Progress receives download progress; nil is quiet. A terminal gets a
	// one-line progress bar, anything else one line per download.
	Progress io.Writer
	// HTTPClient is used for every request; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Keyring verifies InRelease; nil means DefaultKeyring().
	Keyring openpgp.KeyRing
	// Now is the clock for Valid-Until and signature checks; nil means time.Now.
	Now func() time.Time
}

// FillDefaults sets the documented defaults for unset fields.
func (c *Config) FillDefaults() {
	if c.Mirror == "" {
		c.Mirror = DefaultMirror
	}
	c.Mirror = strings.TrimRight(c.Mirror, "/")
	if c.Suite == "" {
		c.Suite = DefaultSuite
	}
	if c.Components == nil {
		c.Components = append([]string(nil), DefaultComponents...)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks a filled-in Config.
func (c *Config) Validate() error {
	switch c.Arch {
	case "amd64", "arm64", "armhf":
	case "":
		return errors.New("debian: Config.Arch is empty")
	default:
		return fmt.Errorf("debian: unsupported architecture %q (want amd64, arm64 or armhf)", c.Arch)
	}
	if c.CacheDir == "" {
		return errors.New("debian: Config.CacheDir is empty")
	}
	u, err := url.Parse(c.Mirror)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("debian: mirror %q is not an http(s) URL", c.Mirror)
	}
	for _, s := range append([]string{c.Suite}, c.Components...) {
		if s == "" || strings.ContainsAny(s, " \t\\") || strings.Contains(s, "..") || strings.HasPrefix(s, "/") {
			return fmt.Errorf("debian: bad suite or component name %q", s)
		}
	}
	return nil
}

// Archive is an opened Debian archive. Its methods are safe for use by one
// goroutine at a time.
type Archive struct {
	cfg     Config
	keyring openpgp.KeyRing
	prog    *progress

	mu      sync.Mutex
	release *Release                    // nil until loaded
	index   *universe                   // nil until loaded
	sources map[string][]*SourcePackage // by name; nil until asked for
	// others are the other suites of the mirror that a resolution took
	// packages from (FromSuite), by name, each loaded on first need.
	others map[string]*universe
}

// Open checks cfg and prepares the archive. Indexes are fetched (or read
// from the cache when offline) on first need, so a build whose lock file
// pins every package never touches them; call LoadIndexes to load them now.
func Open(ctx context.Context, cfg Config) (*Archive, error) {
	cfg.FillDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Archive{cfg: cfg, keyring: cfg.Keyring, prog: newProgress(cfg.Progress)}
	if a.keyring == nil {
		kr, err := DefaultKeyring()
		if err != nil {
			return nil, err
		}
		a.keyring = kr
	}
	for _, d := range []string{"index/by-sha256", "debs", "unpacked", "sources"} {
		if err := os.MkdirAll(filepath.Join(a.root(), d), 0o755); err != nil {
			return nil, fmt.Errorf("debian: cache: %w", err)
		}
	}
	return a, nil
}

// Config returns the archive's configuration with defaults filled in.
func (a *Archive) Config() Config { return a.cfg }

func (a *Archive) root() string { return filepath.Join(a.cfg.CacheDir, "debian") }

func (a *Archive) distURL(suite, p string) string {
	return a.cfg.Mirror + "/dists/" + suite + "/" + p
}

// mirrorKey names the mirror in cache paths.
func (a *Archive) mirrorKey() string {
	u, _ := url.Parse(a.cfg.Mirror)
	k := u.Host + strings.ReplaceAll(u.Path, "/", "_")
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ':' || r == '\\' {
			return '_'
		}
		return r
	}, k)
}

// Release returns the verified Release of the suite, loading the indexes if needed.
func (a *Archive) Release(ctx context.Context) (*Release, error) {
	if err := a.LoadIndexes(ctx); err != nil {
		return nil, err
	}
	return a.release, nil
}

// LoadIndexes fetches and verifies InRelease and the Packages indexes of
// every component (offline: reads them from the cache and verifies them
// again). It does the work once.
func (a *Archive) LoadIndexes(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.index != nil {
		return nil
	}
	rel, err := a.loadRelease(ctx)
	if err != nil {
		return err
	}
	u, err := a.loadUniverse(ctx, a.cfg.Suite, rel)
	if err != nil {
		return err
	}
	a.index = u
	return nil
}

// loadUniverse reads the Packages index of every component of suite,
// whose verified Release is rel. Packages of a suite other than the
// archive's own say so in their Suite field.
func (a *Archive) loadUniverse(ctx context.Context, suite string, rel *Release) (*universe, error) {
	u := newUniverse()
	for _, comp := range a.cfg.Components {
		pkgs, err := a.loadPackages(ctx, suite, rel, comp)
		if err != nil {
			return nil, err
		}
		for i := range pkgs {
			pkgs[i].Component = comp
			if suite != a.cfg.Suite {
				pkgs[i].Suite = suite
			}
			if pkgs[i].Arch == a.cfg.Arch || pkgs[i].Arch == "all" {
				u.add(&pkgs[i])
			}
		}
	}
	u.sort()
	return u, nil
}

// loadSuite returns the index of another suite of the mirror (a backports
// suite), loading and verifying it on first need as LoadIndexes does the
// archive's own.
func (a *Archive) loadSuite(ctx context.Context, suite string) (*universe, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if u := a.others[suite]; u != nil {
		return u, nil
	}
	rel, err := a.fetchRelease(ctx, suite)
	if err != nil {
		return nil, err
	}
	u, err := a.loadUniverse(ctx, suite, rel)
	if err != nil {
		return nil, err
	}
	if a.others == nil {
		a.others = map[string]*universe{}
	}
	a.others[suite] = u
	return u, nil
}

// loadRelease fetches and verifies the archive suite's InRelease once;
// the caller holds a.mu.
func (a *Archive) loadRelease(ctx context.Context) (*Release, error) {
	if a.release != nil {
		return a.release, nil
	}
	rel, err := a.fetchRelease(ctx, a.cfg.Suite)
	if err != nil {
		return nil, err
	}
	a.release = rel
	return rel, nil
}

// fetchRelease fetches and verifies suite's InRelease (offline: reads it
// from the cache and verifies it again).
func (a *Archive) fetchRelease(ctx context.Context, suite string) (*Release, error) {
	now := a.cfg.Now()
	irURL := a.distURL(suite, "InRelease")
	irCache := filepath.Join(a.root(), "index", a.mirrorKey(), suite, "InRelease")
	var data []byte
	var err error
	if a.cfg.Offline {
		data, err = os.ReadFile(irCache)
		if err != nil {
			return nil, fmt.Errorf("debian: offline and no cached index for %s (%w); run once without --offline", irURL, err)
		}
	} else {
		data, err = a.get(ctx, irURL, "dists/"+suite+"/InRelease", 64<<20)
		if err != nil {
			return nil, err
		}
	}
	text, err := VerifyInRelease(data, irURL, a.keyring, now)
	if err != nil {
		return nil, err
	}
	rel, err := ParseRelease(text, irURL)
	if err != nil {
		return nil, err
	}
	if err := rel.CheckValid(now, irURL); err != nil {
		return nil, err
	}
	// A validly signed Release of another suite (an old one, say) must
	// not stand in for the one asked for.
	if rel.Codename != suite && rel.Suite != suite {
		return nil, fmt.Errorf("debian: %s: %w: it is for suite %q (codename %q), not %q",
			irURL, ErrSignature, rel.Suite, rel.Codename, suite)
	}
	if !a.cfg.Offline {
		if prev, err := a.checkNotOlder(irCache, irURL, rel, now); err != nil {
			// Never go back in time: keep building from the newer
			// index fetched before (a mirror behind a CDN can lag),
			// and say so.
			if a.cfg.Progress != nil {
				fmt.Fprintf(a.cfg.Progress, "warning: %v; using the cached index instead\n", err)
			}
			rel = prev
		} else if err := writeFileAtomic(irCache, data); err != nil {
			return nil, fmt.Errorf("debian: caching %s: %w", irURL, err)
		}
	}
	return rel, nil
}

// checkNotOlder refuses a Release dated before the one cached from the
// same mirror and suite (ErrRollback), returning the cached one: a validly
// signed but older InRelease (replayed by a mirror or a man in the middle)
// would bring back packages with known holes. A cache that no longer
// verifies does not count.
func (a *Archive) checkNotOlder(irCache, irURL string, rel *Release, now time.Time) (*Release, error) {
	old, err := os.ReadFile(irCache)
	if err != nil {
		return nil, nil
	}
	text, err := VerifyInRelease(old, irCache, a.keyring, now)
	if err != nil {
		return nil, nil
	}
	prev, err := ParseRelease(text, irCache)
	if err != nil || prev.Date.IsZero() || rel.Date.IsZero() || prev.CheckValid(now, irCache) != nil {
		return nil, nil
	}
	if rel.Date.Before(prev.Date) {
		return prev, fmt.Errorf("debian: %s: %w: it is dated %s, older than the one fetched from it before (%s, in %s)",
			irURL, ErrRollback, rel.Date.Format(time.RFC1123), prev.Date.Format(time.RFC1123), irCache)
	}
	return nil, nil
}

func (a *Archive) loadPackages(ctx context.Context, suite string, rel *Release, comp string) ([]Package, error) {
	rbase := comp + "/binary-" + a.cfg.Arch + "/Packages"
	r, src, err := a.openIndex(ctx, suite, rel, rbase, fmt.Sprintf("is %q a component of %s for %s?", comp, suite, a.cfg.Arch))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	pkgs, err := ParsePackages(r, src)
	if err != nil {
		return nil, fmt.Errorf("debian: %w", err)
	}
	return pkgs, nil
}

// openIndex returns the decompressed text of suite's index file rbase
// ("main/binary-amd64/Packages"), fetched in the first compression of
// indexCompressions that the Release lists and checked against it, and
// the URL that names it in errors. Both the compressed file and its text
// are cached under the compressed file's hash; hint ends the error for an
// index the Release does not list.
func (a *Archive) openIndex(ctx context.Context, suite string, rel *Release, rbase, hint string) (io.ReadCloser, string, error) {
	var rpath string
	var want FileHash
	for _, ext := range indexCompressions {
		if h, ok := rel.SHA256[rbase+ext]; ok {
			rpath, want = rbase+ext, h
			break
		}
	}
	if rpath == "" {
		return nil, "", fmt.Errorf("debian: %s does not list %s.xz or %s.gz (%s)", a.distURL(suite, "InRelease"), rbase, rbase, hint)
	}
	src := a.distURL(suite, rpath)
	byHash := filepath.Join(a.root(), "index", "by-sha256", want.SHA256)
	txtPath := byHash + ".txt"
	if f, err := os.Open(txtPath); err == nil {
		return f, src, nil
	}
	data, err := os.ReadFile(byHash)
	if err != nil || checkHash(data, want) != nil {
		if a.cfg.Offline {
			return nil, "", fmt.Errorf("debian: offline and %s (sha256 %s) is not cached; run once without --offline", src, want.SHA256)
		}
		data, err = a.fetchIndex(ctx, suite, rel, rpath, want)
		if err != nil {
			return nil, "", err
		}
		if err := writeFileAtomic(byHash, data); err != nil {
			return nil, "", fmt.Errorf("debian: caching %s: %w", src, err)
		}
	}
	var zr io.Reader
	if strings.HasSuffix(rpath, ".gz") {
		gr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, "", fmt.Errorf("debian: %s: %w", src, err)
		}
		zr = gr
	} else if zr, err = xz.NewReader(bytes.NewReader(data)); err != nil {
		return nil, "", fmt.Errorf("debian: %s: %w", src, err)
	}
	var txt bytes.Buffer
	if _, err := io.Copy(&txt, zr); err != nil {
		return nil, "", fmt.Errorf("debian: decompressing %s: %w", src, err)
	}
	// Keep the decompressed text: xz in pure Go is the slow part of a warm
	// start without a lock. It comes from a verified file, so a parse
	// error in it would come back the same from a fresh download.
	if err := writeFileAtomic(txtPath, txt.Bytes()); err != nil {
		return nil, "", fmt.Errorf("debian: caching %s: %w", src, err)
	}
	return io.NopCloser(bytes.NewReader(txt.Bytes())), src, nil
}

// indexCompressions are the index files' compressions this package reads,
// preferred first.
var indexCompressions = []string{".xz", ".gz"}

// fetchIndex downloads one index file and checks it against the Release.
func (a *Archive) fetchIndex(ctx context.Context, suite string, rel *Release, rpath string, want FileHash) ([]byte, error) {
	urls := []string{a.distURL(suite, rpath)}
	if rel.AcquireByHash {
		// by-hash first: it cannot change under us while the mirror syncs.
		urls = append([]string{a.distURL(suite, path.Dir(rpath)+"/by-hash/SHA256/"+want.SHA256)}, urls...)
	}
	var firstErr error
	for _, u := range urls {
		data, err := a.get(ctx, u, rpath, want.Size+1)
		if err == nil {
			if err = checkHash(data, want); err == nil {
				return data, nil
			}
			err = fmt.Errorf("debian: %s: %w (InRelease lists %s)", u, err, rpath)
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// ErrHashMismatch is wrapped by every size or SHA-256 mismatch.
var ErrHashMismatch = errors.New("hash mismatch")

func checkHash(data []byte, want FileHash) error {
	if int64(len(data)) != want.Size {
		return fmt.Errorf("%w: size %d, want %d", ErrHashMismatch, len(data), want.Size)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != want.SHA256 {
		return fmt.Errorf("%w: sha256 %s, want %s", ErrHashMismatch, got, want.SHA256)
	}
	return nil
}

// get fetches a small file into memory, refusing more than limit bytes.
func (a *Archive) get(ctx context.Context, u, label string, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	err := a.download(ctx, u, label, -1, func() (io.Writer, error) {
		buf.Reset()
		return &limitedWriter{w: &buf, n: limit, url: u}, nil
	})
	return buf.Bytes(), err
}

type limitedWriter struct {
	w   io.Writer
	n   int64
	url string
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, fmt.Errorf("debian: %s: larger than expected", l.url)
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}

// download GETs u into the writer that open returns, retrying transient
// failures; open is called again for each attempt. size is the expected
// length for the progress display (-1 unknown).
func (a *Archive) download(ctx context.Context, u, label string, size int64, open func() (io.Writer, error)) error {
	if a.cfg.Offline {
		return fmt.Errorf("debian: offline: refusing to fetch %s", u)
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		var retry bool
		retry, err = a.downloadOnce(ctx, u, label, size, open)
		if err == nil || !retry {
			return err
		}
	}
	return err
}

func (a *Archive) downloadOnce(ctx context.Context, u, label string, size int64, open func() (io.Writer, error)) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, fmt.Errorf("debian: %w", err)
	}
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return ctx.Err() == nil, fmt.Errorf("debian: fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode >= 500, fmt.Errorf("debian: fetching %s: %s", u, resp.Status)
	}
	if size < 0 {
		size = resp.ContentLength
	}
	w, err := open()
	if err != nil {
		return false, err
	}
	done := a.prog.start(label, size)
	_, err = io.Copy(w, &countingReader{r: resp.Body, p: a.prog})
	done()
	if err != nil {
		return ctx.Err() == nil, fmt.Errorf("debian: fetching %s: %w", u, err)
	}
	return false, nil
}

// writeFileAtomic writes data to p through a temporary file and a rename,
// so a crash never leaves a half-written file under the final name.
func writeFileAtomic(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
