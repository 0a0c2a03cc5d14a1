package flannel

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

// fakeExec records the delegate calls instead of running plugins.
type fakeExec struct {
	calls  []fakeCall
	result string
}

type fakeCall struct {
	path, command string
	conf          map[string]any
}

func (f *fakeExec) ExecPlugin(_ context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	c := fakeCall{path: path}
	for _, e := range environ {
		if v, ok := strings.CutPrefix(e, "CNI_COMMAND="); ok {
			c.command = v
		}
	}
	if err := json.Unmarshal(stdin, &c.conf); err != nil {
		return nil, err
	}
	f.calls = append(f.calls, c)
	if c.command == "ADD" {
		return []byte(f.result), nil
	}
	return nil, nil
}

func (f *fakeExec) FindInPath(plugin string, _ []string) (string, error) {
	return "/cni/" + plugin, nil
}

func (f *fakeExec) Decode(b []byte) (version.PluginInfo, error) {
	var d version.PluginDecoder
	return d.Decode(b)
}

func TestPluginDelegates(t *testing.T) {
	dir := t.TempDir()
	subnetFile := filepath.Join(dir, "subnet.env")
	dataDir := filepath.Join(dir, "data")
	conf := []byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","subnetFile":"` + subnetFile + `","dataDir":"` + dataDir + `","delegate":{"hairpinMode":true}}`)
	fx := &fakeExec{result: `{"cniVersion":"1.0.0","ips":[{"address":"10.42.0.5/24","gateway":"10.42.0.1"}]}`}
	var out, errOut bytes.Buffer
	p := &plugin{exec: fx, stdout: &out, stderr: &errOut}
	args := &skel.CmdArgs{ContainerID: "c1", Netns: "/run/netns/x", IfName: "eth0", StdinData: conf}

	// Before flannel has a lease: ADD and STATUS fail and say why.
	if err := p.add(args); err == nil || !strings.Contains(err.Error(), "is the flannel daemon running?") {
		t.Errorf("ADD without subnet.env: %v", err)
	}
	if err := p.status(args); err == nil || !strings.Contains(err.Error(), "flannel has not written the node's subnet yet") {
		t.Errorf("STATUS without subnet.env: %v", err)
	}
	os.WriteFile(subnetFile, []byte("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644)
	if err := p.status(args); err != nil {
		t.Errorf("STATUS: %v", err)
	}

	if err := p.add(args); err != nil {
		t.Fatal(err)
	}
	if len(fx.calls) != 1 || fx.calls[0].path != "/cni/bridge" || fx.calls[0].command != "ADD" {
		t.Fatalf("calls %+v", fx.calls)
	}
	if !strings.Contains(out.String(), `"10.42.0.5/24"`) {
		t.Errorf("ADD printed %q", out.String())
	}
	stored, err := os.ReadFile(filepath.Join(dataDir, "c1"))
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	json.Unmarshal(stored, &s)
	if s["hairpinMode"] != true || s["bridge"] != "cni0" || s["name"] != "cbr0" {
		t.Errorf("stored %s", stored)
	}

	// CHECK hands the stored configuration with the runtime's prevResult.
	checkConf := bytes.Replace(conf, []byte(`"type":"flannel"`), []byte(`"type":"flannel","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.42.0.5/24"}]}`), 1)
	if err := p.check(&skel.CmdArgs{ContainerID: "c1", StdinData: checkConf}); err != nil {
		t.Fatal(err)
	}
	c := fx.calls[1]
	if c.command != "CHECK" || c.conf["prevResult"] == nil || c.conf["bridge"] != "cni0" {
		t.Errorf("CHECK call %+v", c)
	}

	// DEL uses the stored configuration even after the lease changed,
	// then forgets it; a second DEL is a no-op.
	os.WriteFile(subnetFile, []byte("garbage"), 0o644)
	if err := p.del(args); err != nil {
		t.Fatal(err)
	}
	c = fx.calls[2]
	ipam, _ := json.Marshal(c.conf["ipam"])
	if c.command != "DEL" || !strings.Contains(string(ipam), "10.42.0.0/24") {
		t.Errorf("DEL call %s %s", c.command, ipam)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "c1")); !os.IsNotExist(err) {
		t.Errorf("stored configuration after DEL: %v", err)
	}
	if err := p.del(args); err != nil || len(fx.calls) != 3 {
		t.Errorf("second DEL: %v, %d calls", err, len(fx.calls))
	}
	if err := p.check(&skel.CmdArgs{ContainerID: "c1", StdinData: conf}); err == nil || !strings.Contains(err.Error(), "no delegate configuration for container c1") {
		t.Errorf("CHECK after DEL: %v", err)
	}

	// An unreadable stored configuration: DEL reports on stderr and lets
	// the runtime go on.
	os.WriteFile(filepath.Join(dataDir, "c2"), []byte("{"), 0o600)
	if err := p.del(&skel.CmdArgs{ContainerID: "c2", StdinData: conf}); err != nil || !strings.Contains(errOut.String(), "c2") {
		t.Errorf("DEL of corrupt configuration: %v, stderr %q", err, errOut.String())
	}
	os.WriteFile(subnetFile, []byte("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644)
	if err := p.add(&skel.CmdArgs{ContainerID: "..", StdinData: conf}); err == nil || !strings.Contains(err.Error(), "cannot name a file") {
		t.Errorf("container ID ..: %v", err)
	}
}
