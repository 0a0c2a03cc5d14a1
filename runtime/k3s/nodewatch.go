package k3s

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// nodeReady reads the Ready condition of node name from the API server:
// true when it is True and was reported at or after since (a restarted
// server finds the previous kubelet's Ready still there), or an error when
// the node is not registered yet.
func nodeReady(ctx context.Context, c *http.Client, api, name string, since time.Time) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/api/v1/nodes/"+url.PathEscape(name), nil)
	if err != nil {
		return false, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("node %s: %s", name, resp.Status)
	}
	var n struct {
		Status struct {
			Conditions []struct {
				Type, Status      string
				LastHeartbeatTime time.Time
			}
		}
	}
	if err := json.Unmarshal(body, &n); err != nil {
		return false, fmt.Errorf("node %s: %w", name, err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True" && !c.LastHeartbeatTime.Before(since.Truncate(time.Second)), nil
		}
	}
	return false, nil
}

// watchNode says on stderr when node name becomes Ready (and when it
// stops being Ready), asking the API server at api with c every few
// seconds until ctx ends.
func (a *app) watchNode(ctx context.Context, c *http.Client, api, name string) {
	start := time.Now()
	was := false
	for {
		ready, err := nodeReady(ctx, c, api, name, start)
		if err == nil && ready != was {
			if ready {
				fmt.Fprintf(a.stderr, "node %s is Ready (%.1fs after start)\n", name, time.Since(start).Seconds())
			} else {
				fmt.Fprintf(a.stderr, "node %s is not Ready\n", name)
			}
			was = ready
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(3 * time.Second):
		}
	}
}
