// Package etcdcluster is what a k3s server with embedded etcd does around
// the etcd process (components/etcd): it names the member, writes etcd's
// config file at the k3s path (server/db/etcd/config), joins an existing
// cluster as a learner and promotes itself once in sync, lists and removes
// members, and gives etcd clients with the server's etcd client
// certificate.
package etcdcluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

// Ports etcd listens on, as in k3s.
const (
	ClientPort  = 2379
	PeerPort    = 2380
	MetricsPort = 2381
)

// Options describe this server's member.
type Options struct {
	DataDir  string     // the k3s data dir
	NodeName string     // the member is named <node name>-<8 hex digits>
	Address  netip.Addr // the address other servers reach this one at
	// ExposeMetrics serves /metrics on every address (etcd-expose-metrics),
	// not only on loopback.
	ExposeMetrics bool
	// Args are etcd-arg values, key=value, merged over the config.
	Args []string
}

// Dir is server/db/etcd: the member's data, its config and its name.
func Dir(dataDir string) string { return filepath.Join(dataDir, "server", "db", "etcd") }

// ConfigPath is etcd's config file.
func ConfigPath(dataDir string) string { return filepath.Join(Dir(dataDir), "config") }

func tlsFile(dataDir, name string) string {
	return filepath.Join(dataDir, "server", "tls", "etcd", name)
}

// HasData reports whether this server already is a member (etcd's WAL
// exists): it restarts from its data, whatever initial-cluster says.
func HasData(dataDir string) bool {
	_, err := os.Stat(filepath.Join(Dir(dataDir), "member", "wal"))
	return err == nil
}

// PeerURL and ClientURL are where other members and clients reach this one.
func (o Options) PeerURL() string {
	return "https://" + net.JoinHostPort(o.Address.String(), strconv.Itoa(PeerPort))
}

func (o Options) ClientURL() string {
	return "https://" + net.JoinHostPort(o.Address.String(), strconv.Itoa(ClientPort))
}

// MemberName is the name this server's member has, made once (node name
// and 8 random hex digits, as k3s names members) and kept in
// server/db/etcd/name.
func (o Options) MemberName() (string, error) {
	p := filepath.Join(Dir(o.DataDir), "name")
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	} else if err != nil && !os.IsNotExist(err) {
		return "", err
	}
	r := make([]byte, 4)
	if _, err := rand.Read(r); err != nil {
		return "", err
	}
	name := o.NodeName + "-" + hex.EncodeToString(r)
	if err := os.MkdirAll(Dir(o.DataDir), 0o700); err != nil {
		return "", err
	}
	return name, atomicfile.Write(p, []byte(name+"\n"), 0o600)
}

// State is how etcd starts: a new cluster, or joining one.
type State string

const (
	New      State = "new"
	Existing State = "existing"
)

// Config is etcd's configuration for this member; initialCluster is
// name=peerURL,... (this member included).
func (o Options) Config(name, initialCluster string, state State) (map[string]any, error) {
	metrics := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(MetricsPort))
	if o.ExposeMetrics {
		metrics = "http://" + net.JoinHostPort("0.0.0.0", strconv.Itoa(MetricsPort))
	}
	local := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ClientPort))
	listenClient := local
	if !o.Address.IsLoopback() {
		listenClient += "," + o.ClientURL()
	}
	security := func(cert, key, ca string) map[string]any {
		return map[string]any{
			"cert-file": tlsFile(o.DataDir, cert+".crt"), "key-file": tlsFile(o.DataDir, cert+".key"),
			"trusted-ca-file": tlsFile(o.DataDir, ca+".crt"), "client-cert-auth": true,
		}
	}
	c := map[string]any{
		"name":                        name,
		"data-dir":                    Dir(o.DataDir),
		"initial-cluster":             initialCluster,
		"initial-cluster-state":       string(state),
		"listen-client-urls":          listenClient,
		"advertise-client-urls":       o.ClientURL(),
		"listen-peer-urls":            o.PeerURL(),
		"initial-advertise-peer-urls": o.PeerURL(),
		"listen-metrics-urls":         metrics,
		"client-transport-security":   security("server-client", "server-client", "server-ca"),
		"peer-transport-security":     security("peer-server-client", "peer-server-client", "peer-ca"),
		// k3s's timings: a leader is given up after 5 s.
		"heartbeat-interval": 500,
		"election-timeout":   5000,
		"snapshot-count":     10000,
		"logger":             "zap",
		"log-outputs":        []string{"stderr"},
	}
	for _, a := range o.Args {
		k, v, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("etcd-arg %q: want key=value", a)
		}
		c[k] = scalar(v)
	}
	return c, nil
}

// scalar is an etcd-arg value as YAML would read it unquoted: etcd's
// config fields are typed.
func scalar(v string) any {
	if i, err := strconv.ParseInt(v, 10, 64); err == nil {
		return i
	}
	if b, err := strconv.ParseBool(v); err == nil {
		return b
	}
	return v
}

// WriteConfig writes etcd's config file.
func (o Options) WriteConfig(name, initialCluster string, state State) error {
	return o.WriteConfigWith(name, initialCluster, state, nil)
}

// WriteConfigWith is WriteConfig with extra keys (force-new-cluster for a
// cluster reset).
func (o Options) WriteConfigWith(name, initialCluster string, state State, extra map[string]any) error {
	c, err := o.Config(name, initialCluster, state)
	if err != nil {
		return err
	}
	for k, v := range extra {
		c[k] = v
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(Dir(o.DataDir), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(ConfigPath(o.DataDir), data, 0o600)
}

// TempClientPort is where a temporary etcd serves a copy of this
// member's data (WriteTempConfig), on loopback; its peer port is the
// next one. k3s uses the same port for the same job.
const TempClientPort = 2399

// WriteTempConfig writes, at path, the config of a temporary one-member
// etcd serving a copy of this member's data (copied into dataDir): the
// member's own certificates, loopback only (TempClientPort), none of the
// etcd-arg settings, and force-new-cluster, so it answers from the copy
// without the other members.
func (o Options) WriteTempConfig(path, name, dataDir string) error {
	// Without etcd-arg: one naming the member's own paths (wal-dir)
	// would have the temporary etcd rewrite the member's data.
	o.Args = nil
	c, err := o.Config(name, "", Existing)
	if err != nil {
		return err
	}
	client := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(TempClientPort))
	peer := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(TempClientPort+1))
	c["data-dir"] = dataDir
	c["listen-client-urls"], c["advertise-client-urls"] = client, client
	c["listen-peer-urls"], c["initial-advertise-peer-urls"] = peer, peer
	c["initial-cluster"] = name + "=" + peer
	c["force-new-cluster"] = true
	delete(c, "listen-metrics-urls")
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// CopyMember copies this member's data (server/db/etcd/member) into
// dir/member, for a temporary etcd; the member must not be running.
func CopyMember(dataDir, dir string) error {
	return atomicfile.CopyTree(filepath.Join(Dir(dataDir), "member"), filepath.Join(dir, "member"))
}

// ClientTLS is the TLS configuration of an etcd client: the etcd server CA
// and the client certificate (server/tls/etcd/client.crt).
func ClientTLS(dataDir string) (*tls.Config, error) {
	ca, err := os.ReadFile(tlsFile(dataDir, "server-ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no certificates", tlsFile(dataDir, "server-ca.crt"))
	}
	pair, err := tls.LoadX509KeyPair(tlsFile(dataDir, "client.crt"), tlsFile(dataDir, "client.key"))
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate: %w", err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// Client is an etcd client of endpoints with this server's client
// certificate.
func Client(dataDir string, endpoints []string) (*clientv3.Client, error) {
	tc, err := ClientTLS(dataDir)
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tc,
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// Member is one etcd member as the supervisor's /db/info lists it.
type Member struct {
	ID         string   `json:"id"` // hex
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	IsLearner  bool     `json:"isLearner,omitempty"`
}

// Members lists the cluster's members.
func Members(ctx context.Context, cli *clientv3.Client) ([]Member, error) {
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	var out []Member
	for _, m := range resp.Members {
		out = append(out, Member{ID: strconv.FormatUint(m.ID, 16), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Join adds this server to the cluster cli talks to as a learner and
// returns the initial-cluster its etcd starts with. A member left over
// with this server's peer URL (a join that did not finish, or this
// machine's earlier life with a wiped disk) is removed first.
func Join(ctx context.Context, cli *clientv3.Client, name, peerURL string) (string, error) {
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("etcd member list: %w", err)
	}
	for _, m := range resp.Members {
		for _, u := range m.PeerURLs {
			if u == peerURL {
				if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
					return "", fmt.Errorf("removing the stale member %q with this server's peer URL %s: %w", m.Name, peerURL, err)
				}
			}
		}
	}
	added, err := cli.MemberAddAsLearner(ctx, []string{peerURL})
	if err != nil {
		return "", fmt.Errorf("etcd member add %s: %w", peerURL, err)
	}
	var parts []string
	for _, m := range added.Members {
		n := m.Name
		if m.ID == added.Member.ID {
			n = name
		}
		if n == "" {
			continue // another member that has not started yet
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ","), nil
}

// Promote makes the learner named name a voting member once etcd says it
// has caught up with the leader, retrying until then or until ctx ends.
// Nothing to do when it already votes.
func Promote(ctx context.Context, cli *clientv3.Client, name string, logf func(string, ...any)) error {
	for {
		err := promoteOnce(ctx, cli, name)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errNotYet) {
			logf("etcd: promoting %s: %v", name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(3 * time.Second):
		}
	}
}

var errNotYet = errors.New("the learner is not in sync yet")

func promoteOnce(ctx context.Context, cli *clientv3.Client, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return err
	}
	for _, m := range resp.Members {
		if m.Name != name {
			continue
		}
		if !m.IsLearner {
			return nil
		}
		if _, err := cli.MemberPromote(ctx, m.ID); err != nil {
			if strings.Contains(err.Error(), "not in sync") || strings.Contains(err.Error(), "not started") {
				return errNotYet
			}
			return err
		}
		return nil
	}
	return errNotYet // not listed under its name until its etcd has started
}

// RemoveMember removes the member called name. It reports whether there
// was one: another server may have removed it first.
func RemoveMember(ctx context.Context, cli *clientv3.Client, name string) (bool, error) {
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range resp.Members {
		if m.Name != name {
			continue
		}
		if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
			if strings.Contains(err.Error(), "member not found") {
				return false, nil
			}
			return false, err
		}
		return true, nil
	}
	return false, nil
}

// Copy copies the Kubernetes objects (keys under /registry/) from src to
// dst page by page and returns how many. Events are left behind: they
// expire through leases, which a copy would not carry.
func Copy(ctx context.Context, src, dst *clientv3.Client) (int, error) {
	const prefix = "/registry/"
	end := clientv3.GetPrefixRangeEnd(prefix)
	key := prefix
	n := 0
	for {
		resp, err := src.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(500))
		if err != nil {
			return n, fmt.Errorf("reading %s: %w", key, err)
		}
		for _, kv := range resp.Kvs {
			if strings.HasPrefix(string(kv.Key), prefix+"events/") {
				continue
			}
			if _, err := dst.Put(ctx, string(kv.Key), string(kv.Value)); err != nil {
				return n, fmt.Errorf("writing %s: %w", kv.Key, err)
			}
			n++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return n, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// RemoveNode removes the member named after node (<node>-<8 hex>), for
// a node whose annotation does not name a current member. It reports
// whether there was one.
func RemoveNode(ctx context.Context, cli *clientv3.Client, node string) (bool, error) {
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range resp.Members {
		rest, ok := strings.CutPrefix(m.Name, node+"-")
		if !ok || len(rest) != 8 {
			continue
		}
		if _, err := hex.DecodeString(rest); err != nil {
			continue
		}
		return RemoveMember(ctx, cli, m.Name)
	}
	return false, nil
}
