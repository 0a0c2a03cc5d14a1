// Command runc-caps is the OCI runtime the container test bed gives Docker
// on machines whose own capability bounding set lacks some capabilities
// (a sandbox without CAP_SYS_RESOURCE, for one): there `docker run
// --privileged` fails in runc with "unable to apply caps: operation not
// permitted", because a privileged container asks for every capability.
// It removes the capabilities this machine cannot grant from the
// container's (or exec'd process's) spec, then runs the real runc with
// the same arguments. Nothing else changes.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// capNames are the kernel's capability numbers, in order.
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// bounding is the set of capability names this process may grant.
func bounding() (map[string]bool, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return nil, err
			}
			have := map[string]bool{}
			for i, n := range capNames {
				if mask&(1<<uint(i)) != 0 {
					have[n] = true
				}
			}
			return have, nil
		}
	}
	return nil, fmt.Errorf("no CapBnd in /proc/self/status")
}

// filterCaps rewrites the capability lists of a process spec (a
// config.json's "process", or an exec's process.json) in place.
func filterCaps(proc map[string]any, have map[string]bool) {
	caps, _ := proc["capabilities"].(map[string]any)
	for k, v := range caps {
		list, _ := v.([]any)
		kept := []any{}
		for _, c := range list {
			if s, _ := c.(string); have[s] {
				kept = append(kept, c)
			}
		}
		caps[k] = kept
	}
}

func rewrite(path string, process bool, have map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return err
	}
	if process {
		filterCaps(spec, have)
	} else if p, ok := spec["process"].(map[string]any); ok {
		filterCaps(p, have)
	}
	out, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o600)
}

func main() {
	have, err := bounding()
	if err != nil {
		fmt.Fprintln(os.Stderr, "runc-caps:", err)
		os.Exit(1)
	}
	args := os.Args[1:]
	for i, a := range args {
		switch {
		case (a == "--bundle" || a == "-b") && i+1 < len(args):
			err = rewrite(filepath.Join(args[i+1], "config.json"), false, have)
		case strings.HasPrefix(a, "--bundle="):
			err = rewrite(filepath.Join(strings.TrimPrefix(a, "--bundle="), "config.json"), false, have)
		case (a == "--process" || a == "-p") && i+1 < len(args):
			err = rewrite(args[i+1], true, have)
		case strings.HasPrefix(a, "--process="):
			err = rewrite(strings.TrimPrefix(a, "--process="), true, have)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "runc-caps:", err)
			os.Exit(1)
		}
	}
	runc := os.Getenv("RUNC_CAPS_RUNC")
	if runc == "" {
		if runc, err = exec.LookPath("runc"); err != nil {
			fmt.Fprintln(os.Stderr, "runc-caps: runc:", err)
			os.Exit(1)
		}
	}
	if err := syscall.Exec(runc, append([]string{"runc"}, args...), os.Environ()); err != nil {
		fmt.Fprintln(os.Stderr, "runc-caps:", err)
		os.Exit(1)
	}
}
