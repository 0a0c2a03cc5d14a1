package flannel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Main runs the plugin for one CNI command and returns the exit code.
// args is the process's argv; CNI passes everything else through the
// environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
// CNI_PATH) and stdin. Errors are printed on stdout as CNI error JSON.
func Main(args []string) int {
	p := &plugin{stdout: os.Stdout, stderr: os.Stderr}
	funcs := skel.CNIFuncs{Add: p.add, Del: p.del, Check: p.check, Status: p.status}
	if e := skel.PluginMainFuncsWithError(funcs, version.All, "CNI flannel plugin (ballast k3s runtime)"); e != nil {
		if err := e.Print(); err != nil {
			fmt.Fprintf(os.Stderr, "flannel: printing error %v: %v\n", e, err)
		}
		return 1
	}
	return 0
}

type plugin struct {
	// exec runs delegates; nil runs the binaries found in CNI_PATH.
	exec   invoke.Exec
	stdout io.Writer
	stderr io.Writer
}

func (p *plugin) add(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := ReadSubnetEnv(n.SubnetFile)
	if err != nil {
		return err
	}
	d, err := DelegateConfig(n, env)
	if err != nil {
		return err
	}
	conf, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delegate configuration: %w", err)
	}
	// Stored before the delegate runs: a failed ADD is followed by a DEL,
	// which needs it to release what the delegate did set up.
	if err := store(n.DataDir, args.ContainerID, conf); err != nil {
		return err
	}
	res, err := invoke.DelegateAdd(context.Background(), d["type"].(string), conf, p.exec)
	if err != nil {
		return fmt.Errorf("delegate %s ADD: %w", d["type"], err)
	}
	if n.CNIVersion != "" {
		if res, err = res.GetAsVersion(n.CNIVersion); err != nil {
			return fmt.Errorf("delegate %s result: %w", d["type"], err)
		}
	}
	return res.PrintTo(p.stdout)
}

func (p *plugin) del(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	path, conf, err := load(n.DataDir, args.ContainerID)
	if errors.Is(err, fs.ErrNotExist) {
		// Never added, or already deleted: DEL must succeed (CNI spec).
		return nil
	} else if err != nil {
		return err
	}
	typ, err := delegateType(conf)
	if err != nil {
		// Nothing can be released with it; keep the file for a human and
		// let the runtime go on (an error would make it retry forever).
		fmt.Fprintf(p.stderr, "flannel: %s: %v; not deleting through the delegate\n", path, err)
		return nil
	}
	if err := invoke.DelegateDel(context.Background(), typ, conf, p.exec); err != nil {
		return fmt.Errorf("delegate %s DEL (configuration %s): %w", typ, path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove delegate configuration: %w", err)
	}
	return nil
}

func (p *plugin) check(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	path, conf, err := load(n.DataDir, args.ContainerID)
	if err != nil {
		return fmt.Errorf("no delegate configuration for container %s: %w", args.ContainerID, err)
	}
	var d map[string]any
	if err := json.Unmarshal(conf, &d); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	typ, ok := d["type"].(string)
	if !ok {
		return fmt.Errorf("%s: no delegate type", path)
	}
	// The delegate checks against the result the runtime cached for the
	// whole list, in the list's CNI version.
	if n.RawPrevResult != nil {
		d["prevResult"] = n.RawPrevResult
	}
	if n.CNIVersion != "" {
		d["cniVersion"] = n.CNIVersion
	}
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delegate configuration: %w", err)
	}
	if err := invoke.DelegateCheck(context.Background(), typ, b, p.exec); err != nil {
		return fmt.Errorf("delegate %s CHECK: %w", typ, err)
	}
	return nil
}

// status (CNI 1.1) reports the plugin unavailable until flannel has
// written the node's lease.
func (p *plugin) status(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := ReadSubnetEnv(n.SubnetFile); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "flannel has not written the node's subnet yet", err.Error())
	}
	return nil
}

func delegateType(conf []byte) (string, error) {
	var nc types.NetConf
	if err := json.Unmarshal(conf, &nc); err != nil {
		return "", err
	}
	if nc.Type == "" {
		return "", errors.New("no delegate type")
	}
	return nc.Type, nil
}

func storePath(dir, containerID string) (string, error) {
	// skel has validated the ID's characters; refuse anything that would
	// leave dir all the same.
	if containerID == "" || containerID != filepath.Base(containerID) || containerID == "." || containerID == ".." {
		return "", fmt.Errorf("container ID %q cannot name a file", containerID)
	}
	return filepath.Join(dir, containerID), nil
}

func store(dir, containerID string, conf []byte) error {
	p, err := storePath(dir, containerID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("store delegate configuration: %w", err)
	}
	if err := os.WriteFile(p, conf, 0o600); err != nil {
		return fmt.Errorf("store delegate configuration: %w", err)
	}
	return nil
}

func load(dir, containerID string) (string, []byte, error) {
	p, err := storePath(dir, containerID)
	if err != nil {
		return "", nil, err
	}
	b, err := os.ReadFile(p)
	return p, b, err
}
