package secretsencrypt

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

// fakeAPI is the part of kube-apiserver the controller uses: nodes with
// annotations, Secrets (a PUT counts as a rewrite), Events, and /metrics
// whose reload counter goes up each time the config file's content differs
// from what it loaded last,
// as the automatic reload does.
type fakeAPI struct {
	t          *testing.T
	configPath string
	mu         sync.Mutex
	nodes      map[string]map[string]string // name -> annotations (all control-plane)
	secrets    []string                     // namespace/name
	rewrites   map[string]int
	events     []string
	loaded     string // the config the API server has
	reloads    int
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.URL.Path
	switch {
	case r.Method == http.MethodGet && p == "/metrics":
		if data, err := os.ReadFile(f.configPath); err == nil && string(data) != f.loaded {
			if f.loaded != "" {
				f.reloads++
			}
			f.loaded = string(data)
		}
		io.WriteString(w, "# HELP x\napiserver_encryption_config_controller_automatic_reloads_total{apiserver_id_hash=\"sha256:1\",status=\"success\"} "+
			itoa(f.reloads)+"\napiserver_encryption_config_controller_automatic_reloads_total{apiserver_id_hash=\"sha256:1\",status=\"failure\"} 0\n")
	case r.Method == http.MethodGet && p == "/api/v1/nodes":
		if r.URL.Query().Get("labelSelector") != "node-role.kubernetes.io/control-plane=true" {
			f.t.Errorf("nodes listed with %q", r.URL.RawQuery)
		}
		var items []any
		for name, ann := range f.nodes {
			items = append(items, map[string]any{"metadata": map[string]any{"name": name, "annotations": ann}})
		}
		json.NewEncoder(w).Encode(map[string]any{"items": items})
	case strings.HasPrefix(p, "/api/v1/nodes/"):
		name := strings.TrimPrefix(p, "/api/v1/nodes/")
		ann, ok := f.nodes[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method == http.MethodPatch {
			var patch struct {
				Metadata struct{ Annotations map[string]string }
			}
			json.NewDecoder(r.Body).Decode(&patch)
			for k, v := range patch.Metadata.Annotations {
				ann[k] = v
			}
		}
		json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{"name": name, "uid": "u-" + name, "annotations": ann}})
	case r.Method == http.MethodGet && p == "/api/v1/secrets":
		q := r.URL.Query()
		if q.Get("limit") != "20" {
			f.t.Errorf("secrets listed with limit %q", q.Get("limit"))
		}
		start := 0
		if c := q.Get("continue"); c != "" {
			start = atoi(c)
		}
		end := min(start+20, len(f.secrets))
		var items []any
		for _, s := range f.secrets[start:end] {
			ns, name, _ := strings.Cut(s, "/")
			items = append(items, map[string]any{"metadata": map[string]any{"name": name, "namespace": ns, "resourceVersion": "1"}, "data": map[string]string{"k": "dg=="}})
		}
		cont := ""
		if end < len(f.secrets) {
			cont = itoa(end)
		}
		json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{"continue": cont}, "items": items})
	case r.Method == http.MethodPut && strings.HasPrefix(p, "/api/v1/namespaces/"):
		parts := strings.Split(p, "/") // "", api, v1, namespaces, ns, secrets, name
		var body struct {
			Data map[string]string
		}
		json.NewDecoder(r.Body).Decode(&body)
		if body.Data["k"] != "dg==" {
			f.t.Errorf("secret %s rewritten changed: %+v", p, body)
		}
		f.rewrites[parts[4]+"/"+parts[6]]++
	case r.Method == http.MethodPost && p == "/api/v1/namespaces/default/events":
		var ev struct {
			Reason, Message string
			InvolvedObject  struct{ Kind, Name string }
		}
		json.NewDecoder(r.Body).Decode(&ev)
		f.events = append(f.events, ev.InvolvedObject.Kind+"/"+ev.InvolvedObject.Name+" "+ev.Reason+": "+ev.Message)
	default:
		f.t.Errorf("unexpected %s %s", r.Method, r.URL)
		http.Error(w, "unexpected", http.StatusBadRequest)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func atoi(s string) int {
	i, _ := strconv.Atoi(s)
	return i
}

func newTestController(t *testing.T, provider string, nodes ...string) (*Controller, *fakeAPI) {
	dir := t.TempDir()
	c := &Controller{
		ConfigPath:    filepath.Join(dir, "encryption-config.json"),
		StatePath:     filepath.Join(dir, "encryption-state.json"),
		Provider:      provider,
		Now:           func() time.Time { return time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC) },
		Random:        bytes.NewReader(bytes.Repeat([]byte{7}, 1024)),
		ReloadTimeout: 5 * time.Second,
	}
	if _, err := Ensure(c.ConfigPath, provider); err != nil {
		t.Fatal(err)
	}
	f := &fakeAPI{t: t, configPath: c.ConfigPath, nodes: map[string]map[string]string{}, rewrites: map[string]int{}}
	for i, n := range nodes {
		f.nodes[n] = map[string]string{}
		if i == 0 {
			c.NodeName = n
		}
	}
	for i := range 45 {
		f.secrets = append(f.secrets, "ns"+itoa(i%3)+"/s"+itoa(i))
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c.API = &kubeapi.Client{Base: srv.URL, HTTP: srv.Client()}
	// What Start records on a new server: stage start with the file's hash.
	data, _ := os.ReadFile(c.ConfigPath)
	if err := c.record(context.Background(), StageStart, Hash(data)); err != nil {
		t.Fatal(err)
	}
	c.reloads(context.Background()) // the API server has the first config
	return c, f
}

func keyNames(t *testing.T, c *Controller) []string {
	t.Helper()
	cfg, err := Read(c.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range cfg.KeyList() {
		s := k.Type + " " + k.Name
		if k.Active {
			s = "*" + s
		}
		out = append(out, s)
	}
	return out
}

func stageOf(t *testing.T, c *Controller) string {
	t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.HashMatch {
		t.Errorf("hashes: %s", st.HashError)
	}
	return st.Stage
}

func apply(c *Controller, stage string, force bool) (string, error) {
	return c.Apply(context.Background(), Request{Stage: &stage, Force: force})
}

func TestRotateKeys(t *testing.T) {
	c, f := newTestController(t, "aescbc", "server1")
	msg, err := apply(c, StageRotateKeys, false)
	if err != nil || msg != "keys rotated, reencryption finished" {
		t.Fatalf("rotate-keys: %q %v", msg, err)
	}
	if got := strings.Join(keyNames(t, c), ", "); got != "*AES-CBC aescbckey-2026-12-07T15:00:00Z, Identity identity" {
		t.Errorf("keys after rotate-keys: %s", got)
	}
	for _, s := range f.secrets {
		if f.rewrites[s] != 1 {
			t.Errorf("secret %s rewritten %d times, want 1", s, f.rewrites[s])
		}
	}
	if got := stageOf(t, c); got != StageReencryptFinished {
		t.Errorf("stage %q", got)
	}
	data, _ := os.ReadFile(c.ConfigPath)
	if ann := f.nodes["server1"][HashAnnotation]; ann != "reencrypt_finished-"+Hash(data) {
		t.Errorf("annotation %q", ann)
	}
	if st, err := c.readState(); err != nil || st.Stage != StageReencryptFinished || st.Hash != Hash(data) {
		t.Errorf("state file %+v %v", st, err)
	}
	// Two config changes, each loaded before going on.
	if f.reloads != 2 {
		t.Errorf("%d reloads, want 2", f.reloads)
	}
	if want := "Node/server1 SecretsUpdateComplete: reencrypted 45 secrets"; len(f.events) == 0 || f.events[len(f.events)-1] != want {
		t.Errorf("events %q, want last %q", f.events, want)
	}
	// rotate-keys again from reencrypt_finished.
	c.Now = func() time.Time { return time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC) }
	if _, err := apply(c, StageRotateKeys, false); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keyNames(t, c), ", "); got != "*AES-CBC aescbckey-2026-12-08T00:00:00Z, Identity identity" {
		t.Errorf("keys after a second rotate-keys: %s", got)
	}
}

func TestPrepareRotateReencrypt(t *testing.T) {
	c, f := newTestController(t, "aescbc", "server1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.runCtx = ctx
	if _, err := apply(c, StageRotate, false); err == nil || !strings.Contains(err.Error(), "incorrect stage: start found on node server1") {
		t.Errorf("rotate before prepare: %v", err)
	}
	if msg, err := apply(c, StagePrepare, false); err != nil || msg != "prepare completed successfully" {
		t.Fatalf("prepare: %q %v", msg, err)
	}
	if got := strings.Join(keyNames(t, c), ", "); got != "*AES-CBC aescbckey, AES-CBC aescbckey-2026-12-07T15:00:00Z, Identity identity" {
		t.Errorf("after prepare: %s", got)
	}
	if msg, err := apply(c, StageRotate, false); err != nil || msg != "rotate completed successfully" {
		t.Fatalf("rotate: %q %v", msg, err)
	}
	if got := strings.Join(keyNames(t, c), ", "); got != "*AES-CBC aescbckey-2026-12-07T15:00:00Z, AES-CBC aescbckey, Identity identity" {
		t.Errorf("after rotate: %s", got)
	}
	if msg, err := apply(c, StageReencryptActive, false); err != nil || msg != "reencryption started" {
		t.Fatalf("reencrypt: %q %v", msg, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		busy := c.busy
		c.mu.Unlock()
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("re-encryption did not end")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := strings.Join(keyNames(t, c), ", "); got != "*AES-CBC aescbckey-2026-12-07T15:00:00Z, Identity identity" {
		t.Errorf("after reencrypt: %s", got)
	}
	if got := stageOf(t, c); got != StageReencryptFinished {
		t.Errorf("stage %q", got)
	}
	if f.rewrites["ns0/s0"] != 1 {
		t.Errorf("rewrites %v", f.rewrites)
	}
}

func TestEnableDisable(t *testing.T) {
	c, f := newTestController(t, "aescbc", "server1")
	off := false
	if msg, err := c.Apply(context.Background(), Request{Enable: &off}); err != nil || msg != "secrets-encryption disabled" {
		t.Fatalf("disable: %q %v", msg, err)
	}
	if got := strings.Join(keyNames(t, c), ", "); got != "*Identity identity, AES-CBC aescbckey" {
		t.Errorf("after disable: %s", got)
	}
	st, _ := c.Status(context.Background())
	if *st.Enable || st.Stage != StageStart || st.ActiveKey != "" {
		t.Errorf("status after disable: %+v", st)
	}
	if f.rewrites["ns1/s1"] != 1 {
		t.Errorf("disable rewrote %v", f.rewrites)
	}
	on := true
	if msg, err := c.Apply(context.Background(), Request{Enable: &on}); err != nil || msg != "secrets-encryption enabled" {
		t.Fatalf("enable: %q %v", msg, err)
	}
	if msg, err := c.Apply(context.Background(), Request{Enable: &on}); err != nil || msg != "secrets-encryption already enabled" {
		t.Errorf("enable again: %q %v", msg, err)
	}
	if got := strings.Join(keyNames(t, c), ", "); got != "*AES-CBC aescbckey, Identity identity" {
		t.Errorf("after enable: %s", got)
	}
}

func TestRefusals(t *testing.T) {
	c, _ := newTestController(t, "secretbox", "server1")
	if _, err := apply(c, StagePrepare, false); err == nil || !strings.Contains(err.Error(), "prepare does not support secretbox key type, use rotate-keys instead") {
		t.Errorf("secretbox prepare: %v", err)
	}
	if msg, err := apply(c, StageRotateKeys, false); err != nil {
		t.Errorf("secretbox rotate-keys: %q %v", msg, err)
	} else if got := strings.Join(keyNames(t, c), ", "); got != "*XSalsa20-POLY1305 secretboxkey-2026-12-07T15:00:00Z, Identity identity" {
		t.Errorf("secretbox keys: %s", got)
	}

	// Several servers: refused, nothing changed.
	c, f := newTestController(t, "aescbc", "server1", "server2")
	f.nodes["server2"][HashAnnotation] = f.nodes["server1"][HashAnnotation]
	before, _ := os.ReadFile(c.ConfigPath)
	if _, err := apply(c, StageRotateKeys, false); err == nil || !strings.Contains(err.Error(), "this cluster has 2 servers") {
		t.Errorf("rotate-keys with two servers: %v", err)
	}
	if after, _ := os.ReadFile(c.ConfigPath); !bytes.Equal(before, after) {
		t.Error("the config changed on a refused request")
	}
	// With the cluster's bootstrap record to hand changes on: allowed
	// while every server has the same config, and the record is given
	// each change.
	recorded := 0
	c.Recorded = func(context.Context) { recorded++ }
	if msg, err := apply(c, StageRotateKeys, false); err != nil {
		t.Errorf("rotate-keys with two servers and a record: %q %v", msg, err)
	} else if recorded == 0 {
		t.Error("rotate-keys did not hand its change to the record")
	}
	f.nodes["server2"][HashAnnotation] = "start-0000"
	if st, _ := c.Status(context.Background()); st.HashMatch || !strings.Contains(st.HashError, "hash does not match between server1 and server2") {
		t.Errorf("status with differing hashes: %+v", st)
	}
	before, _ = os.ReadFile(c.ConfigPath)
	if _, err := apply(c, StageRotateKeys, false); err == nil || !strings.Contains(err.Error(), "hash does not match between server1 and server2") {
		t.Errorf("rotate-keys with server2 not restarted since: %v", err)
	}
	if after, _ := os.ReadFile(c.ConfigPath); !bytes.Equal(before, after) {
		t.Error("the config changed on a refused request")
	}

	// No config file: secrets-encryption is off.
	c, _ = newTestController(t, "aescbc", "server1")
	os.Remove(c.ConfigPath)
	if _, err := apply(c, StageRotateKeys, false); err == nil || !strings.Contains(err.Error(), "secrets-encryption is off on this server") {
		t.Errorf("without a config: %v", err)
	}
}

func TestParseReloads(t *testing.T) {
	m := `# TYPE apiserver_encryption_config_controller_automatic_reloads_total counter
apiserver_encryption_config_controller_automatic_reloads_total{apiserver_id_hash="sha256:ab",status="failure"} 1
apiserver_encryption_config_controller_automatic_reloads_total{apiserver_id_hash="sha256:ab",status="success"} 3
apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds{apiserver_id_hash="sha256:ab",status="success"} 1.7e+09
`
	if got := parseReloads([]byte(m)); got != (reloadCount{success: 3, failure: 1}) {
		t.Errorf("parseReloads: %+v", got)
	}
}
