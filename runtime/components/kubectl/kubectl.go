// Package kubectl links upstream kubectl (k8s.io/kubectl) as `k3s kubectl`
// and as the `kubectl` personality of the runtime's multi-call binary.
package kubectl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/ballast-os/ballast/runtime/k3s"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // client auth plugins, as upstream's main imports
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/plugin"
	"k8s.io/kubectl/pkg/cmd/util"
)

// Main runs kubectl with args (without the program name) and returns its
// exit code; errors are printed the way upstream kubectl prints them.
func Main(args []string) int {
	if kc := k3s.KubectlKubeconfig(args, os.LookupEnv, os.Stat); kc != "" {
		if f, err := os.Open(kc); errors.Is(err, fs.ErrPermission) {
			fmt.Fprintf(os.Stderr, "error: unable to read %s: start the server with --write-kubeconfig-mode (or --write-kubeconfig-group) to let this user read it, or run as root\n", kc)
			return 1
		} else if err == nil {
			f.Close()
		}
		os.Setenv("KUBECONFIG", kc)
	}
	argv := append([]string{"kubectl"}, args...)
	logs.GlogSetter(cmd.GetLogVerbosity(argv)) //nolint:errcheck // as upstream
	c := cmd.NewDefaultKubectlCommandWithArgs(cmd.KubectlOptions{
		PluginHandler: cmd.NewDefaultPluginHandler(plugin.ValidPluginFilenamePrefixes),
		Arguments:     argv,
		IOStreams:     genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr},
	})
	c.SetArgs(args)
	if err := cli.RunNoErrOutput(c); err != nil {
		util.CheckErr(err) // prints and exits with kubectl's codes
		return 1
	}
	return 0
}
