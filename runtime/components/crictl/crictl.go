// Package crictl is the runtime's crictl personality (`crictl`, `k3s
// crictl`). cri-tools' crictl is package main upstream, so the image carries
// it as an executable of its own (Path), and this runs it with k3s's
// defaults: the config the agent writes, which names this node's container
// runtime, so `crictl ps` works with no flags.
package crictl

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/ballast-os/ballast/runtime/componentargs"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
)

// Path is where the image carries cri-tools' crictl.
const Path = "/usr/lib/ballast/bin/crictl"

// Main execs crictl with args; it returns only when that fails.
func Main(args []string) int {
	argv, env, err := command(args, os.Environ(), os.Stat)
	if err == nil {
		err = syscall.Exec(Path, argv, env)
	}
	fmt.Fprintln(os.Stderr, "crictl:", err)
	return 1
}

// command is crictl's argv and environment: CRI_CONFIG_FILE defaults to
// the agent's crictl.yaml under the default data dir, as in k3s; before
// any agent wrote it (and with no endpoint given), the endpoint defaults
// to k3s's containerd socket.
func command(args, environ []string, stat func(string) (os.FileInfo, error)) ([]string, []string, error) {
	if _, err := stat(Path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("%s is missing: the image carries cri-tools' crictl there", Path)
		}
		return nil, nil, err
	}
	env := append([]string(nil), environ...)
	if !hasEnv(env, "CRI_CONFIG_FILE") {
		cfg := datadir.Layout{Root: config.DefaultDataDir}.CrictlConfig()
		env = append(env, "CRI_CONFIG_FILE="+cfg)
		if _, err := stat(cfg); err != nil && !hasEnv(env, "CONTAINER_RUNTIME_ENDPOINT") {
			env = append(env, "CONTAINER_RUNTIME_ENDPOINT=unix://"+componentargs.ContainerdSocket)
		}
	}
	return append([]string{"crictl"}, args...), env, nil
}

func hasEnv(env []string, name string) bool {
	for _, kv := range env {
		if len(kv) > len(name) && kv[:len(name)+1] == name+"=" {
			return true
		}
	}
	return false
}
