package datasource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// CmdlineKey is the kernel command-line parameter naming a config URL.
const CmdlineKey = "ballast.config_url"

// ConfigURL returns the value of ballast.config_url= in a kernel command
// line (the content of /proc/cmdline); the last one wins, as for the
// kernel's own parameters.
func ConfigURL(args map[string]string) (string, bool) {
	v := args[CmdlineKey]
	return v, v != ""
}

// PinKey is the kernel command-line parameter that pins the config URL's
// document: its SHA-256, in hex.
const PinKey = "ballast.config_sha256"

// errInsecure is a refusal that retrying cannot change.
var errInsecure = errors.New("insecure")

// FetchURL GETs the cloud-config at rawURL, retrying connection failures
// every second until timeout: the network may have come up a moment ago.
// A non-200 answer is an error, not retried. The URL must be https, or
// the document pinned (pin, ballast.config_sha256=): the config decides
// who may log in and what runs as root, so a plain-http fetch or a
// redirect from https to http must not let anyone on the path rewrite it.
func FetchURL(ctx context.Context, rawURL, pin string, timeout time.Duration) Source {
	shown := RedactURL(rawURL)
	src := Source{Name: NameCmdlineURL, Path: shown}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		src.Err = fmt.Errorf("%s=%q: want an https URL", CmdlineKey, shown)
		return src
	}
	pin = strings.ToLower(strings.TrimSpace(pin))
	if b, err := hex.DecodeString(pin); pin != "" && (err != nil || len(b) != sha256.Size) {
		src.Err = fmt.Errorf("%s=%q: want the document's SHA-256 as 64 hex digits", PinKey, pin)
		return src
	}
	if u.Scheme == "http" && pin == "" {
		src.Err = fmt.Errorf("%s=%q: plain http lets anyone on the path rewrite the config: use https, or pin the document with %s=<its sha256>", CmdlineKey, shown, PinKey)
		return src
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if pin == "" && req.URL.Scheme != "https" {
			return fmt.Errorf("%w: redirected to %s, which is not https", errInsecure, RedactURL(req.URL.String()))
		}
		if len(via) >= 10 {
			return fmt.Errorf("%w: stopped after 10 redirects", errInsecure)
		}
		return nil
	}}
	for {
		b, retry, err := get(ctx, client, rawURL)
		if err == nil {
			if sum := sha256.Sum256(b); pin != "" && hex.EncodeToString(sum[:]) != pin {
				src.Err = fmt.Errorf("fetching %s: the document's SHA-256 is %x, %s wants %s: not using it", shown, sum, PinKey, pin)
				return src
			}
			src.Data = b
			return src
		}
		if !retry || ctx.Err() != nil {
			src.Err = fmt.Errorf("fetching %s: %w", shown, err)
			return src
		}
		select {
		case <-ctx.Done():
			src.Err = fmt.Errorf("fetching %s: %w (gave up after %v)", shown, err, timeout)
			return src
		case <-time.After(time.Second):
		}
	}
}

func get(ctx context.Context, c *http.Client, u string) (data []byte, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("User-Agent", "ballast-init")
	resp, err := c.Do(req)
	if err != nil {
		return nil, !errors.Is(err, errInsecure), err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false, fmt.Errorf("HTTP %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxSize+1))
	if err != nil {
		return nil, true, err
	}
	if len(b) > MaxSize {
		return nil, false, errors.New("larger than 16 MiB")
	}
	return b, false, nil
}

// RedactURL is rawURL as status and logs show it: the password and every
// query value (a config URL may carry a token) replaced by "xxxxx".
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(an unparsable URL)"
	}
	if q := u.Query(); len(q) > 0 {
		for k, vs := range q {
			for i := range vs {
				vs[i] = "xxxxx"
			}
			q[k] = vs
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
