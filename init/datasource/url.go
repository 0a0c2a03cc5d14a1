package datasource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

// FetchURL GETs the cloud-config at rawURL (http or https), retrying
// connection failures every second until timeout: the network may have
// come up a moment ago. A non-200 answer is an error, not retried.
func FetchURL(ctx context.Context, rawURL string, timeout time.Duration) Source {
	src := Source{Name: NameCmdlineURL, Path: RedactURL(rawURL)}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		src.Err = fmt.Errorf("%s=%q: want an http or https URL", CmdlineKey, rawURL)
		return src
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{}
	for {
		b, retry, err := get(ctx, client, rawURL)
		if err == nil {
			src.Data = b
			return src
		}
		if !retry || ctx.Err() != nil {
			src.Err = fmt.Errorf("fetching %s: %w", rawURL, err)
			return src
		}
		select {
		case <-ctx.Done():
			src.Err = fmt.Errorf("fetching %s: %w (gave up after %v)", rawURL, err, timeout)
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
		return nil, true, err
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
