package k3s

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
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

// nodeMeta is what a node sets on its Node object once registered: the
// annotations every node sets, and on a server the role labels, which
// only the server may set (NodeRestriction keeps kubelets from them).
type nodeMeta struct {
	Labels      map[string]string
	Annotations map[string]string
}

// annotateNode merges meta into node name's metadata.
func annotateNode(ctx context.Context, c *http.Client, api, name string, meta nodeMeta) error {
	md := map[string]any{"annotations": meta.Annotations}
	if len(meta.Labels) > 0 {
		md["labels"] = meta.Labels
	}
	body, err := json.Marshal(map[string]any{"metadata": md})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, api+"/api/v1/nodes/"+url.PathEscape(name), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/merge-patch+json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s", resp.Status, msg)
	}
	return nil
}

// nodeAnnotations are the addresses a node declares for the cloud
// controller, under k3s's annotation names.
func nodeAnnotations(name string, internal, external []netip.Addr) map[string]string {
	join := func(as []netip.Addr) string {
		s := make([]string, len(as))
		for i, a := range as {
			s[i] = a.String()
		}
		return strings.Join(s, ",")
	}
	m := map[string]string{"k3s.io/hostname": name, "k3s.io/internal-ip": join(internal)}
	if len(external) > 0 {
		m["k3s.io/external-ip"] = join(external)
	}
	return m
}

// watchNode says on stderr when node name becomes Ready (and when it
// stops being Ready), asking the API server at api with c every few
// seconds until ctx ends. Once the node has registered it sets
// annotations on it (the addresses the cloud controller reads), once.
func (a *app) watchNode(ctx context.Context, c *http.Client, api, name string, meta nodeMeta) {
	start := time.Now()
	was := false
	annotated := len(meta.Annotations) == 0 && len(meta.Labels) == 0
	for {
		ready, err := nodeReady(ctx, c, api, name, start)
		if err == nil && !annotated {
			if aerr := annotateNode(ctx, c, api, name, meta); aerr != nil {
				fmt.Fprintf(a.stderr, "node %s: annotating: %v\n", name, aerr)
			} else {
				annotated = true
			}
		}
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
