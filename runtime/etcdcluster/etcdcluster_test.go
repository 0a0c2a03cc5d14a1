package etcdcluster

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func TestConfigIsEtcdsOwnFormat(t *testing.T) {
	dir := t.TempDir()
	o := Options{DataDir: dir, NodeName: "s1", Address: netip.MustParseAddr("10.0.0.5"), Args: []string{"quota-backend-bytes=8589934592", "--auto-compaction-mode=revision"}}
	name, err := o.MemberName()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := o.MemberName(); again != name || len(name) != len("s1-")+8 {
		t.Fatalf("member name %q then %q", name, again)
	}
	if err := o.WriteConfig(name, name+"="+o.PeerURL(), New); err != nil {
		t.Fatal(err)
	}
	// etcd itself reads it back.
	cfg, err := embed.ConfigFromFile(ConfigPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != name || cfg.InitialCluster != name+"=https://10.0.0.5:2380" || cfg.ClusterState != "new" {
		t.Errorf("name %q initial %q state %q", cfg.Name, cfg.InitialCluster, cfg.ClusterState)
	}
	if cfg.QuotaBackendBytes != 8589934592 || cfg.AutoCompactionMode != "revision" {
		t.Errorf("etcd-arg: quota %d mode %q", cfg.QuotaBackendBytes, cfg.AutoCompactionMode)
	}
	var listen []string
	for _, u := range cfg.ListenClientUrls {
		listen = append(listen, u.String())
	}
	slices.Sort(listen)
	if !slices.Equal(listen, []string{"https://10.0.0.5:2379", "https://127.0.0.1:2379"}) || cfg.AdvertiseClientUrls[0].String() != "https://10.0.0.5:2379" {
		t.Errorf("client URLs %v / %v", cfg.ListenClientUrls, cfg.AdvertiseClientUrls)
	}
	if !cfg.ClientTLSInfo.ClientCertAuth || !cfg.PeerTLSInfo.ClientCertAuth || cfg.PeerTLSInfo.TrustedCAFile != filepath.Join(dir, "server/tls/etcd/peer-ca.crt") {
		t.Errorf("TLS: client %+v peer %+v", cfg.ClientTLSInfo, cfg.PeerTLSInfo)
	}
	if cfg.ElectionMs != 5000 || cfg.TickMs != 500 {
		t.Errorf("timings %d/%d", cfg.ElectionMs, cfg.TickMs)
	}
	if _, err := (Options{DataDir: dir, Address: o.Address, Args: []string{"novalue"}}).Config(name, "", New); err == nil {
		t.Error("etcd-arg without = accepted")
	}
}

func TestSnapshotFiles(t *testing.T) {
	dir := t.TempDir()
	base := time.Unix(1_700_000_000, 0)
	var made []string
	for i := range 4 {
		n := SnapshotName("etcd-snapshot", "node1", base.Add(time.Duration(i)*time.Hour))
		if i == 3 {
			n += ZipSuffix
		}
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		made = append(made, n)
	}
	// A snapshot being written and another name.
	os.WriteFile(filepath.Join(dir, "on-demand-node1-1700000000.part"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "on-demand-node1-1600000000"), []byte("y"), 0o600)
	list, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list {
		names = append(names, s.Name)
	}
	want := append([]string{"on-demand-node1-1600000000"}, made...)
	if !slices.Equal(names, want) {
		t.Fatalf("List %v, want %v", names, want)
	}
	if !list[1].Created.Equal(base) {
		t.Errorf("created %v, want %v (from the name)", list[1].Created, base)
	}
	removed, err := Prune(dir, "etcd-snapshot", 2)
	if err != nil || !slices.Equal(removed, made[:2]) {
		t.Fatalf("Prune: %v %v, want %v", removed, err, made[:2])
	}
	if _, err := Delete(dir, []string{"../etc/passwd"}); err == nil {
		t.Error("Delete took a path")
	}
	if removed, err := Delete(dir, []string{"on-demand-node1-1600000000", "missing"}); err == nil || len(removed) != 1 {
		t.Errorf("Delete of one present and one missing: %v %v", removed, err)
	}
}

func TestZipRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "on-demand-n-1700000000")
	data := []byte("snapshot bytes")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	z, err := zipSnapshot(p)
	if err != nil || z != p+ZipSuffix {
		t.Fatal(z, err)
	}
	os.Remove(p)
	out := t.TempDir()
	got, err := Unzip(z, out)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(got); string(b) != string(data) || filepath.Base(got) != filepath.Base(p) {
		t.Errorf("unzipped %s: %q", got, b)
	}
	if _, err := os.Stat(z + partSuffix); !os.IsNotExist(err) {
		t.Errorf("part file left: %v", err)
	}
}

// The temporary etcd's config: etcd reads it, and it serves the copy on
// loopback only, as a one-member cluster.
func TestTempConfig(t *testing.T) {
	dir := t.TempDir()
	o := Options{DataDir: dir, NodeName: "s1", Address: netip.MustParseAddr("10.0.0.5"), ExposeMetrics: true}
	tmp := filepath.Join(dir, "tmp")
	path := filepath.Join(tmp, "config")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := o.WriteTempConfig(path, "s1-abc", tmp); err != nil {
		t.Fatal(err)
	}
	cfg, err := embed.ConfigFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Dir != tmp || !cfg.ForceNewCluster || cfg.Name != "s1-abc" || cfg.InitialCluster != "s1-abc=https://127.0.0.1:2400" {
		t.Errorf("dir %q force %v name %q initial %q", cfg.Dir, cfg.ForceNewCluster, cfg.Name, cfg.InitialCluster)
	}
	for _, u := range append(append(cfg.ListenClientUrls, cfg.ListenPeerUrls...), cfg.ListenMetricsUrls...) {
		if u.Hostname() != "127.0.0.1" {
			t.Errorf("the temporary etcd listens on %s", u.String())
		}
	}
	if cfg.ClientTLSInfo.CertFile != filepath.Join(dir, "server/tls/etcd/server-client.crt") {
		t.Errorf("client TLS %+v", cfg.ClientTLSInfo)
	}

	// CopyMember copies the member's tree.
	src := filepath.Join(Dir(dir), "member", "snap")
	if err := os.MkdirAll(src, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "db"), []byte("bolt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CopyMember(dir, tmp); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(tmp, "member", "snap", "db")); err != nil || string(b) != "bolt" {
		t.Errorf("copied db: %q %v", b, err)
	}
}
