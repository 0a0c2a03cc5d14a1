package secretsencrypt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ballast-os/ballast/runtime/atomicfile"
	"github.com/ballast-os/ballast/runtime/kubeapi"
)

// Request is the body of PUT /v1-k3s/encrypt/config, as k3s's CLI sends
// it: Stage (prepare, rotate, reencrypt_active, rotate_keys) or Enable.
type Request struct {
	Stage  *string `json:"stage,omitempty"`
	Enable *bool   `json:"enable,omitempty"`
	Force  bool    `json:"force"`
	Skip   bool    `json:"skip"`
}

// StatusInfo is GET /v1-k3s/encrypt/status, k3s's fields; Enable is nil
// when the server has no encryption config.
type StatusInfo struct {
	Stage        string   `json:"stage"`
	ActiveKey    string   `json:"activekey"`
	Enable       *bool    `json:"enable,omitempty"`
	HashMatch    bool     `json:"hashmatch"`
	HashError    string   `json:"hasherror"`
	InactiveKeys []string `json:"inactivekeys"`
}

// WriteStatus is what `k3s secrets-encrypt status` prints.
func WriteStatus(w io.Writer, st StatusInfo) error {
	if st.Enable == nil {
		_, err := fmt.Fprintln(w, "Encryption Status: Disabled, no configuration file found")
		return err
	}
	status := "Disabled"
	if *st.Enable {
		status = "Enabled"
	}
	hashes := "All hashes match"
	if !st.HashMatch {
		hashes = st.HashError
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Encryption Status: %s\nCurrent Rotation Stage: %s\nServer Encryption Hashes: %s\n\n", status, st.Stage, hashes)
	rows := [][3]string{{"Active", "Key Type", "Name"}, {"------", "--------", "----"}}
	add := func(active, key string) {
		typ, name, _ := strings.Cut(key, " ")
		rows = append(rows, [3]string{active, typ, name})
	}
	if st.ActiveKey != "" {
		add(" *", st.ActiveKey)
	}
	for _, k := range st.InactiveKeys {
		add("", k)
	}
	widths := [2]int{}
	for _, r := range rows {
		widths[0], widths[1] = max(widths[0], len(r[0])), max(widths[1], len(r[1]))
	}
	for _, r := range rows {
		fmt.Fprintf(&b, "%-*s  %-*s  %s\n", widths[0], r[0], widths[1], r[1], r[2])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Controller is the server side of `k3s secrets-encrypt`: it changes this
// server's encryption config through k3s's stages, waits for
// kube-apiserver to load each change (it runs with
// --encryption-provider-config-automatic-reload), re-encrypts every Secret
// with the active key, and records the stage and the config's hash on the
// server's node (annotation k3s.io/encryption-config-hash) and in
// cred/encryption-state.json.
type Controller struct {
	API        *kubeapi.Client
	ConfigPath string // <data-dir>/server/cred/encryption-config.json
	StatePath  string // <data-dir>/server/cred/encryption-state.json
	NodeName   string // this server's node; "" when it runs no agent
	Provider   string // secrets-encryption-provider: the type of new keys
	Logf       func(format string, args ...any)
	// Recorded is called once a change is recorded on this server (the
	// config and state files written): the cluster's bootstrap record
	// takes it, and the other servers take it from there when they
	// restart. nil: the files reach no other server, and a cluster of
	// several servers is refused.
	Recorded func(ctx context.Context)
	// Now, Random and ReloadTimeout (2 minutes) are for tests.
	Now           func() time.Time
	Random        io.Reader
	ReloadTimeout time.Duration

	mu     sync.Mutex // one change at a time
	busy   bool       // a background re-encryption runs
	runCtx context.Context
}

func (c *Controller) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf("secrets-encrypt: "+format, args...)
	}
}

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Controller) random() io.Reader {
	if c.Random != nil {
		return c.Random
	}
	return rand.Reader
}

// errRefused is a request refused for what it asks (400), not a failure.
var errRefused = errors.New("refused")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errRefused}, args...)...)
}

type state struct {
	Stage string `json:"stage"`
	Hash  string `json:"hash"`
}

// Start records this server's stage once its node exists (the annotation
// a new server lacks, or one whose hash no longer matches a config changed
// while the server was down), and keeps ctx for background re-encryption.
// A re-encryption a restart interrupted is left at rotate: `reencrypt`
// finishes it.
func (c *Controller) Start(ctx context.Context) {
	c.runCtx = ctx
	last := ""
	for {
		err := c.recordStart(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		if err.Error() != last {
			c.logf("%v", err)
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// recordStart is Start's one try.
func (c *Controller) recordStart(ctx context.Context) error {
	data, err := os.ReadFile(c.ConfigPath)
	if err != nil {
		return err
	}
	hash := Hash(data)
	stage, recorded, err := c.stage(ctx)
	if errors.Is(err, kubeapi.ErrNotFound) {
		return fmt.Errorf("waiting for node %s to record the rotation stage", c.NodeName)
	}
	if err != nil {
		return err
	}
	switch {
	case stage == StageReencryptActive:
		c.logf("a re-encryption of Secrets was interrupted: run k3s secrets-encrypt reencrypt to finish it")
		stage = StageRotate
	case stage == "" || recorded != hash:
		if st, err := c.readState(); err == nil && st.Hash == hash {
			stage = st.Stage
		} else {
			stage = StageStart
		}
	default:
		return nil // recorded and current
	}
	return c.record(ctx, stage, hash)
}

func (c *Controller) readState() (state, error) {
	var st state
	data, err := os.ReadFile(c.StatePath)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(data, &st)
}

type nodeMeta struct {
	Metadata struct {
		Name        string            `json:"name"`
		UID         string            `json:"uid"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
}

// stage is this server's recorded stage and the hash recorded with it:
// its node's annotation, or the state file when it runs no agent.
func (c *Controller) stage(ctx context.Context) (stage, hash string, err error) {
	if c.NodeName == "" {
		st, err := c.readState()
		if errors.Is(err, fs.ErrNotExist) {
			return "", "", nil
		}
		return st.Stage, st.Hash, err
	}
	var n nodeMeta
	if err := c.API.Do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(c.NodeName), "", nil, &n); err != nil {
		return "", "", err
	}
	stage, hash = splitAnnotation(n.Metadata.Annotations[HashAnnotation])
	return stage, hash, nil
}

func splitAnnotation(v string) (stage, hash string) {
	i := strings.LastIndex(v, "-")
	if i < 0 {
		return v, ""
	}
	return v[:i], v[i+1:]
}

// record writes stage and hash to the node's annotation and (except the
// passing reencrypt_active) to the state file.
func (c *Controller) record(ctx context.Context, stage, hash string) error {
	if stage != StageReencryptActive || c.NodeName == "" {
		data, _ := json.Marshal(state{Stage: stage, Hash: hash})
		if err := atomicfile.Write(c.StatePath, data, 0o600); err != nil {
			return err
		}
		if c.Recorded != nil {
			c.Recorded(ctx)
		}
	}
	if c.NodeName == "" {
		return nil
	}
	patch := map[string]any{"metadata": map[string]any{"annotations": map[string]string{HashAnnotation: stage + "-" + hash}}}
	return c.API.Do(ctx, http.MethodPatch, "/api/v1/nodes/"+url.PathEscape(c.NodeName), "application/merge-patch+json", patch, nil)
}

// servers are the control-plane nodes' annotations by node name; none
// when this server runs no agent (it has no node).
func (c *Controller) servers(ctx context.Context) (map[string]string, error) {
	if c.NodeName == "" {
		return nil, nil
	}
	var list struct{ Items []nodeMeta }
	q := url.Values{"labelSelector": {"node-role.kubernetes.io/control-plane=true"}}
	if err := c.API.Do(ctx, http.MethodGet, "/api/v1/nodes?"+q.Encode(), "", nil, &list); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range list.Items {
		out[n.Metadata.Name] = n.Metadata.Annotations[HashAnnotation]
	}
	return out, nil
}

// hashError is why the servers' configs cannot be trusted to agree, or
// "": servers are the control-plane nodes' annotations (none when this
// server runs no agent).
func (c *Controller) hashError(servers map[string]string, fileHash string) string {
	if c.NodeName == "" {
		return ""
	}
	names := slices.Sorted(maps.Keys(servers))
	for _, n := range names {
		if servers[n] == "" {
			return "missing annotation on node " + n
		}
	}
	for _, n := range names[1:] {
		if servers[n] != servers[names[0]] {
			return fmt.Sprintf("hash does not match between %s and %s", names[0], n)
		}
	}
	if _, h := splitAnnotation(servers[c.NodeName]); h != "" && h != fileHash {
		return fmt.Sprintf("invalid hash: %s on node %s, the config file's is %s", h, c.NodeName, fileHash)
	}
	return ""
}

// Status is this server's encryption status.
func (c *Controller) Status(ctx context.Context) (StatusInfo, error) {
	var st StatusInfo
	data, err := os.ReadFile(c.ConfigPath)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	cfg, err := parse(c.ConfigPath, data)
	if err != nil {
		return st, err
	}
	on := cfg.Enabled()
	st.Enable = &on
	if st.Stage, _, err = c.stage(ctx); err != nil {
		return st, err
	}
	if st.Stage == "" {
		st.Stage = StageStart // not recorded yet
	}
	servers, err := c.servers(ctx)
	if err != nil {
		return st, err
	}
	herr := c.hashError(servers, Hash(data))
	st.HashMatch, st.HashError = herr == "", herr
	for _, k := range cfg.KeyList() {
		if k.Type == "Identity" {
			continue
		}
		if k.Active {
			st.ActiveKey = k.Type + " " + k.Name
		} else {
			st.InactiveKeys = append(st.InactiveKeys, k.Type+" "+k.Name)
		}
	}
	return st, nil
}

// Apply carries out one request; the answer is the line the CLI prints.
func (c *Controller) Apply(ctx context.Context, req Request) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy {
		return "", refuse("a re-encryption of Secrets is still running on this server (k3s secrets-encrypt status shows reencrypt_active until it ends)")
	}
	data, err := os.ReadFile(c.ConfigPath)
	if errors.Is(err, fs.ErrNotExist) {
		return "", refuse("secrets-encryption is off on this server (no %s): set secrets-encryption: true in its config and restart k3s first", c.ConfigPath)
	}
	if err != nil {
		return "", err
	}
	cfg, err := parse(c.ConfigPath, data)
	if err != nil {
		return "", err
	}
	hash := Hash(data)
	stage, _, err := c.stage(ctx)
	if err != nil {
		return "", err
	}
	servers, err := c.servers(ctx)
	if err != nil {
		return "", err
	}
	if len(servers) > 1 && c.Recorded == nil {
		// Without the cluster's bootstrap record a key only this server
		// knows would leave the others unable to read the Secrets
		// written with it.
		return "", refuse("this cluster has %d servers, and this server has no bootstrap record in the datastore to hand the encryption config to the others; change keys on a cluster with one server", len(servers))
	}
	check := func(force bool, stages ...string) error {
		if force {
			return nil
		}
		if !slices.Contains(stages, stage) {
			return refuse("incorrect stage: %s found on node %s (this command needs %s)", stage, c.nodeOrServer(), strings.Join(stages, " or "))
		}
		if herr := c.hashError(servers, hash); herr != "" {
			return refuse("%s", herr)
		}
		return nil
	}
	switch {
	case req.Enable != nil:
		return c.setEnabled(ctx, cfg, stage, *req.Enable)
	case req.Stage == nil:
		return "", refuse("the request names neither a stage nor enable")
	}
	switch *req.Stage {
	case StagePrepare:
		if err := check(req.Force, StageStart, StageReencryptFinished); err != nil {
			return "", err
		}
		if c.Provider == "secretbox" {
			return "", refuse("prepare does not support secretbox key type, use rotate-keys instead")
		}
		if _, err := cfg.AddKey(c.Provider, false, c.now(), c.random()); err != nil {
			return "", err
		}
		return "prepare completed successfully", c.commit(ctx, cfg, StagePrepare)
	case StageRotate:
		if err := check(req.Force, StagePrepare); err != nil {
			return "", err
		}
		if err := cfg.RotateLast(c.Provider); err != nil {
			return "", refuse("%v", err)
		}
		return "rotate completed successfully", c.commit(ctx, cfg, StageRotate)
	case StageReencryptActive:
		if err := check(req.Force, StageRotate); err != nil {
			return "", err
		}
		if err := c.record(ctx, StageReencryptActive, hash); err != nil {
			return "", err
		}
		c.busy = true
		bg := c.runCtx
		if bg == nil {
			bg = context.Background()
		}
		go func() {
			err := c.finishReencrypt(bg, cfg, stage, hash, req.Skip)
			if err != nil {
				c.logf("re-encryption: %v", err)
			}
			c.mu.Lock()
			c.busy = false
			c.mu.Unlock()
		}()
		return "reencryption started", nil
	case StageRotateKeys:
		if err := check(false, StageStart, StageReencryptFinished); err != nil {
			return "", err
		}
		if err := c.record(ctx, StageReencryptActive, hash); err != nil {
			return "", err
		}
		if _, err := cfg.AddKey(c.Provider, true, c.now(), c.random()); err != nil {
			return "", err
		}
		if _, err := c.write(ctx, cfg); err != nil {
			return "", err
		}
		if err := c.finishReencrypt(ctx, cfg, stage, "", false); err != nil {
			return "", err
		}
		return "keys rotated, reencryption finished", nil
	}
	return "", refuse("unknown stage %q", *req.Stage)
}

func (c *Controller) nodeOrServer() string {
	if c.NodeName == "" {
		return "this server"
	}
	return c.NodeName
}

// setEnabled turns encryption of new writes on or off and rewrites every
// Secret so that all are stored the new way; the stage stays.
func (c *Controller) setEnabled(ctx context.Context, cfg *Config, stage string, on bool) (string, error) {
	word := map[bool]string{true: "enabled", false: "disabled"}[on]
	changed, err := cfg.SetEnabled(on)
	if err != nil {
		return "", err
	}
	if !changed {
		return "secrets-encryption already " + word, nil
	}
	hash, err := c.write(ctx, cfg)
	if err != nil {
		return "", err
	}
	if _, err := c.reencrypt(ctx); err != nil {
		return "", err
	}
	if stage == "" {
		stage = StageStart
	}
	return "secrets-encryption " + word, c.record(ctx, stage, hash)
}

// commit writes cfg, waits for the API server to load it, and records stage.
func (c *Controller) commit(ctx context.Context, cfg *Config, stage string) error {
	hash, err := c.write(ctx, cfg)
	if err != nil {
		return err
	}
	return c.record(ctx, stage, hash)
}

// finishReencrypt rewrites every Secret with the active key, then (unless
// skip) drops the keys no Secret needs any more and records
// reencrypt_finished; with skip the keys stay and prev is recorded again
// with the hash of the unchanged config, prevHash.
func (c *Controller) finishReencrypt(ctx context.Context, cfg *Config, prev, prevHash string, skip bool) error {
	if _, err := c.reencrypt(ctx); err != nil {
		return err
	}
	if skip {
		return c.record(ctx, prev, prevHash)
	}
	if err := cfg.DropOldKeys(c.Provider); err != nil {
		return err
	}
	return c.commit(ctx, cfg, StageReencryptFinished)
}

// write replaces the config file (atomically: a power cut leaves the old
// one or the new one), waits until kube-apiserver has loaded it, and
// returns the hash of what it wrote.
func (c *Controller) write(ctx context.Context, cfg *Config) (string, error) {
	before, err := c.reloads(ctx)
	if err != nil {
		return "", err
	}
	data, err := cfg.Marshal()
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(c.ConfigPath, data, 0o600); err != nil {
		return "", err
	}
	hash := Hash(data)
	timeout := c.ReloadTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		now, err := c.reloads(ctx)
		if err == nil && now.failure > before.failure {
			return "", fmt.Errorf("kube-apiserver could not load the new %s (its log says why); the file is written, fix it before the next restart", c.ConfigPath)
		}
		if err == nil && now.success > before.success {
			c.logf("kube-apiserver loaded the new encryption config")
			return hash, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("kube-apiserver did not load the new %s within %v", c.ConfigPath, timeout)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

type reloadCount struct{ success, failure float64 }

// reloads reads kube-apiserver's counters of automatic encryption config
// reloads (apiserver_encryption_config_controller_automatic_reloads_total).
func (c *Controller) reloads(ctx context.Context) (reloadCount, error) {
	var raw []byte
	if err := c.API.Do(ctx, http.MethodGet, "/metrics", "", nil, &raw); err != nil {
		return reloadCount{}, fmt.Errorf("kube-apiserver's /metrics: %w", err)
	}
	return parseReloads(raw), nil
}

func parseReloads(metrics []byte) reloadCount {
	var rc reloadCount
	sc := bufio.NewScanner(bytes.NewReader(metrics))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	const name = "apiserver_encryption_config_controller_automatic_reloads_total{"
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		labels, value, ok := strings.Cut(line[len(name):], "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(labels, `status="success"`):
			rc.success += v
		case strings.Contains(labels, `status="failure"`):
			rc.failure += v
		}
	}
	return rc
}

// reencrypt rewrites every Secret unchanged, 20 per page, so that the API
// server stores each with the config's first provider; one deleted or
// changed meanwhile is skipped (its writer stored it that way already).
// Progress goes to Events on the node, as k3s reports it.
func (c *Controller) reencrypt(ctx context.Context) (int, error) {
	n, cont := 0, ""
	for {
		q := url.Values{"limit": {"20"}}
		if cont != "" {
			q.Set("continue", cont)
		}
		var page struct {
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
			Items []json.RawMessage `json:"items"`
		}
		if err := c.API.Do(ctx, http.MethodGet, "/api/v1/secrets?"+q.Encode(), "", nil, &page); err != nil {
			c.event(ctx, "Warning", "SecretsUpdateError", "failed to list secrets: "+err.Error())
			return n, err
		}
		for _, item := range page.Items {
			var meta struct {
				Metadata struct{ Name, Namespace string } `json:"metadata"`
			}
			if err := json.Unmarshal(item, &meta); err != nil {
				return n, err
			}
			path := "/api/v1/namespaces/" + url.PathEscape(meta.Metadata.Namespace) + "/secrets/" + url.PathEscape(meta.Metadata.Name)
			err := c.API.Do(ctx, http.MethodPut, path, "application/json", item, nil)
			if errors.Is(err, kubeapi.ErrConflict) || errors.Is(err, kubeapi.ErrNotFound) {
				continue
			}
			if err != nil {
				c.event(ctx, "Warning", "SecretsUpdateError", "failed to update secret: "+err.Error())
				return n, err
			}
			n++
			if n%50 == 0 {
				c.event(ctx, "Normal", "SecretsProgress", fmt.Sprintf("reencrypted %d secrets", n))
			}
		}
		if cont = page.Metadata.Continue; cont == "" {
			break
		}
	}
	c.event(ctx, "Normal", "SecretsUpdateComplete", fmt.Sprintf("reencrypted %d secrets", n))
	c.logf("reencrypted %d secrets", n)
	return n, nil
}

// event records an Event on this server's node (none without a node).
func (c *Controller) event(ctx context.Context, typ, reason, msg string) {
	if c.NodeName == "" {
		return
	}
	var n nodeMeta
	_ = c.API.Do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(c.NodeName), "", nil, &n)
	now := c.now().UTC().Format(time.RFC3339)
	ev := map[string]any{
		"apiVersion": "v1", "kind": "Event",
		"metadata":       map[string]any{"generateName": c.NodeName + ".", "namespace": "default"},
		"involvedObject": map[string]any{"apiVersion": "v1", "kind": "Node", "name": c.NodeName, "uid": n.Metadata.UID},
		"reason":         reason, "message": msg, "type": typ, "count": 1,
		"source":         map[string]any{"component": "secrets-reencrypt", "host": c.NodeName},
		"firstTimestamp": now, "lastTimestamp": now,
	}
	if err := c.API.Do(ctx, http.MethodPost, "/api/v1/namespaces/default/events", "application/json", ev, nil); err != nil {
		c.logf("event %s: %v", reason, err)
	}
}

// ServeStatus is GET /v1-k3s/encrypt/status (the supervisor admits the
// server token only, as to ServeConfig).
func (c *Controller) ServeStatus(w http.ResponseWriter, r *http.Request) {
	st, err := c.Status(r.Context())
	if err != nil {
		c.logf("status: %v", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

// ServeConfig is PUT /v1-k3s/encrypt/config.
func (c *Controller) ServeConfig(w http.ResponseWriter, r *http.Request) {
	var req Request
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, "a JSON request: "+err.Error(), http.StatusBadRequest)
		return
	}
	msg, err := c.Apply(r.Context(), req)
	if err != nil {
		c.logf("%v", err)
		code := http.StatusInternalServerError
		if errors.Is(err, errRefused) {
			code = http.StatusBadRequest
		}
		http.Error(w, strings.TrimPrefix(err.Error(), errRefused.Error()+": "), code)
		return
	}
	c.logf("%s", msg)
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, msg)
}
