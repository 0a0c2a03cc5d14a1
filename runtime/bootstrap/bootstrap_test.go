package bootstrap

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

func TestSealOpen(t *testing.T) {
	d := Data{"server/cred/passwd": {Timestamp: time.Unix(1700000000, 5).UTC(), Content: []byte("secret,server,server,k3s:server\n")}}
	sealed, err := Seal("pw", d)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "secret") {
		t.Fatalf("record holds the plain text: %s", sealed)
	}
	got, err := Open("pw", sealed)
	if err != nil || !reflect.DeepEqual(got, d) {
		t.Fatalf("Open = %v, %v; want %v", got, err, d)
	}
	if _, err := Open("other", sealed); !errors.Is(err, ErrWrongToken) {
		t.Errorf("Open with another password: %v", err)
	}
	bad, _ := Seal("pw", Data{"server/tls/etcd/client.key": {Content: []byte("x")}})
	if _, err := Open("pw", bad); err == nil {
		t.Error("a record naming a file that is not a bootstrap file opened")
	}
	if Key("pw") == Key("other") || !strings.HasPrefix(Key("pw"), "/bootstrap/") || len(Key("pw")) != len("/bootstrap/")+12 {
		t.Errorf("Key: %q %q", Key("pw"), Key("other"))
	}
}

// write puts content at rel under dir with modification time at.
func write(t *testing.T, dir, rel, content string, at time.Time) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, at, at); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, dir, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReconcile(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const (
		passwd = "server/cred/passwd"
		enc    = "server/cred/encryption-config.json"
		ca     = "server/tls/server-ca.crt"
		state  = "server/cred/encryption-state.json"
		key    = "server/tls/server-ca.key"
	)
	// Without a State (a server from before the record): by the files'
	// times, k3s's rule.
	dir := t.TempDir()
	write(t, dir, passwd, "old", t0)
	write(t, dir, enc, "same", t0)
	write(t, dir, ca, "mine", t0.Add(time.Hour))
	write(t, dir, key, "only here", t0)
	stored := Data{
		passwd: {Timestamp: t0.Add(time.Minute), Content: []byte("new")},                  // newer in the record: taken
		enc:    {Timestamp: t0.Add(-time.Hour), Content: []byte("same")},                  // same contents: left
		ca:     {Timestamp: t0.Add(time.Hour - Skew + time.Second), Content: []byte("x")}, // within the skew: taken
		state:  {Timestamp: t0, Content: []byte("{}")},                                    // missing on disk: written
	}
	var backedUp []string
	taken, err := Reconcile(dir, stored, func(p []string) error { backedUp = p; return nil })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{state, passwd, ca} // sorted
	if !reflect.DeepEqual(taken, want) || !reflect.DeepEqual(backedUp, want) {
		t.Errorf("taken %v (backed up %v), want %v", taken, backedUp, want)
	}
	if read(t, dir, passwd) != "new" || read(t, dir, ca) != "x" || read(t, dir, state) != "{}" || read(t, dir, key) != "only here" {
		t.Error("files not as the record says")
	}
	if st, _ := os.Stat(filepath.Join(dir, passwd)); !st.ModTime().Equal(t0.Add(time.Minute)) {
		t.Errorf("passwd's time %v, want the record's", st.ModTime())
	}
	if taken, err := Reconcile(dir, stored, func([]string) error { t.Error("backup called"); return nil }); err != nil || taken != nil {
		t.Errorf("second Reconcile: %v %v", taken, err)
	}

	// With a State, whatever the clocks say: a file changed only on
	// disk stays (the record takes it later), one changed only in the
	// record is taken even when the disk's time is later, one changed on
	// both is a conflict and nothing is written.
	write(t, dir, passwd, "changed here", t0.Add(-48*time.Hour))
	write(t, dir, enc, "same", t0.Add(48*time.Hour))
	stored[enc] = File{Timestamp: t0.Add(-72 * time.Hour), Content: []byte("changed elsewhere")}
	if taken, err := Reconcile(dir, stored, nil); err != nil || !reflect.DeepEqual(taken, []string{enc}) || read(t, dir, passwd) != "changed here" || read(t, dir, enc) != "changed elsewhere" {
		t.Fatalf("with a State: taken %v, %v", taken, err)
	}
	stored[passwd] = File{Timestamp: t0, Content: []byte("changed elsewhere too")}
	stored[state] = File{Timestamp: t0, Content: []byte("{\"new\":1}")}
	_, err = Reconcile(dir, stored, nil)
	var ce *ConflictError
	if !errors.As(err, &ce) || len(ce.Paths) != 1 || !strings.HasSuffix(ce.Paths[0], passwd) || !strings.Contains(err.Error(), "newer than the datastore") {
		t.Fatalf("conflict: %v", err)
	}
	if read(t, dir, state) != "{}" {
		t.Error("a refused reconcile wrote files")
	}

	// Without a State, a file on disk newer than the record by the skew
	// stays (the record takes it); encryption-state.json is always the
	// record's.
	dir = t.TempDir()
	write(t, dir, passwd, "edited", t0.Add(time.Hour))
	write(t, dir, state, "mine", t0.Add(time.Hour))
	taken, err = Reconcile(dir, Data{passwd: {Timestamp: t0, Content: []byte("x")}, state: {Timestamp: t0, Content: []byte("cluster's")}}, nil)
	if err != nil || !reflect.DeepEqual(taken, []string{state}) || read(t, dir, passwd) != "edited" || read(t, dir, state) != "cluster's" {
		t.Errorf("newer on disk without a State: taken %v, %v", taken, err)
	}
}

// testEtcd is an etcd member of its own on loopback.
func testEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Logger, cfg.LogLevel = "zap", "panic"
	u, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*u}, []url.URL{*u}
	p, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenPeerUrls = []url.URL{*p}
	cfg.ListenMetricsUrls = nil
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Clients[0].Addr().String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestStore(t *testing.T) {
	ctx := context.Background()
	s := Store{KV: testEtcd(t)}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	a, b := t.TempDir(), t.TempDir()
	write(t, a, "server/cred/passwd", "pw-a", t0)
	write(t, a, "server/tls/server-ca.crt", "ca", t0)

	if _, err := s.Load(ctx, "tok"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load of nothing: %v", err)
	}
	// The first server makes the record.
	p, err := s.Sync(ctx, "tok", a)
	if err != nil || len(p.Give) != 2 || len(p.Take) != 0 {
		t.Fatalf("first Sync: %+v %v", p, err)
	}
	// Another server with an older copy takes it at its start...
	write(t, b, "server/cred/passwd", "pw-old", t0.Add(-time.Hour))
	d, err := s.Load(ctx, "tok")
	if err != nil {
		t.Fatal(err)
	}
	if up, err := Reconcile(b, d, nil); err != nil || len(up) != 2 || read(t, b, "server/cred/passwd") != "pw-a" {
		t.Fatalf("Reconcile from the record: %v %v", up, err)
	}
	// ...and a change made on it reaches the record; the first server
	// learns it is stale.
	write(t, b, "server/cred/encryption-config.json", "enc", time.Now())
	if p, err := s.Sync(ctx, "tok", b); err != nil || !reflect.DeepEqual(p.Give, []string{"server/cred/encryption-config.json"}) {
		t.Fatalf("Sync of a change: %+v %v", p, err)
	}
	if p, err := s.Sync(ctx, "tok", a); err != nil || !reflect.DeepEqual(p.Take, []string{"server/cred/encryption-config.json"}) || len(p.Give) != 0 {
		t.Fatalf("stale on the first server: %+v %v", p, err)
	}
	// Changed on both a and the record since a last agreed: a conflict,
	// left alone on both sides.
	write(t, a, "server/cred/passwd", "pw-a2", time.Now())
	write(t, b, "server/cred/passwd", "pw-b2", time.Now())
	if p, err := s.Sync(ctx, "tok", b); err != nil || !reflect.DeepEqual(p.Give, []string{"server/cred/passwd"}) {
		t.Fatalf("Sync of b's passwd: %+v %v", p, err)
	}
	if p, err := s.Sync(ctx, "tok", a); err != nil || !reflect.DeepEqual(p.Conflicts, []string{"server/cred/passwd"}) || len(p.Give) != 0 {
		t.Fatalf("both changed: %+v %v", p, err)
	}
	if d, _ := s.Load(ctx, "tok"); string(d["server/cred/passwd"].Content) != "pw-b2" {
		t.Error("a conflicting file was given")
	}
	// Staged files go in without touching a disk.
	if err := s.Put(ctx, "tok", Data{"server/tls/client-ca.crt": {Timestamp: time.Now(), Content: []byte("new-ca")}}); err != nil {
		t.Fatal(err)
	}
	// Token rotated on b: the record moves; the old token finds another's.
	if err := s.Rekey(ctx, "tok", "tok2", Data{"server/cred/passwd": {Timestamp: time.Now(), Content: []byte("pw-new")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "tok"); !errors.Is(err, ErrOtherToken) || !strings.Contains(err.Error(), "different token") {
		t.Errorf("Load with the old token: %v", err)
	}
	d, err = s.Load(ctx, "tok2")
	if err != nil {
		t.Fatal(err)
	}
	if string(d["server/cred/passwd"].Content) != "pw-new" || string(d["server/tls/client-ca.crt"].Content) != "new-ca" || string(d["server/cred/encryption-config.json"].Content) != "enc" {
		t.Errorf("record after Rekey: %v", d.Paths())
	}
	// A write that read no record (revision 0) does not land beside
	// another token's.
	if ok, err := s.put(ctx, "tok", Data{}, 0); ok || err != nil {
		t.Errorf("put at revision 0 with another token's record there: %v %v", ok, err)
	}
	if _, err := s.Sync(ctx, "tok", a); !errors.Is(err, ErrOtherToken) {
		t.Errorf("Sync with the old token: %v", err)
	}
}
