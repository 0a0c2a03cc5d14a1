// Command klipperhelm is the entry program of the job image the Helm
// controller runs (k3s's rancher/klipper-helm, whose entry is a bash script
// around the helm binary): it installs, upgrades or uninstalls one release
// with /usr/bin/helm, driven by the environment and arguments
// github.com/k3s-io/helm-controller gives its helm-install-<name> and
// helm-delete-<name> jobs:
//
//	args   install [--namespace NS] [--create-namespace] [--take-ownership]
//	       [--version V] [--set k=v | --set-string k=v]...   or   delete
//	env    NAME, CHART, REPO, VERSION, TARGET_NAMESPACE, HELM_VERSION, TIMEOUT,
//	       FAILURE_POLICY (reinstall | abort), AUTH_PASS_CREDENTIALS,
//	       INSECURE_SKIP_TLS_VERIFY, PLAIN_HTTP, KUBERNETES_SERVICE_HOST/PORT,
//	       EXPECTED_RELEASE_REVISION, CONFIG_HASH
//	files  /chart/<NAME>.tgz.base64 (spec.chartContent), /config/*.yaml
//	       (values, applied in name order), /config/ca-file.pem and
//	       /ca-files/* (repository CAs), /auth/{username,password}
//
// A chart URL may name the API server as %{KUBERNETES_API}% (k3s serves its
// packaged charts at https://%{KUBERNETES_API}%/static/charts/): it becomes
// the service host and port, and the service account's CA is trusted.
//
// The controller names the release revision it saw (EXPECTED_RELEASE_REVISION)
// and a hash of the chart's configuration (CONFIG_HASH): a job that finds
// another revision does nothing (the controller runs it again with the
// revision it now sees), and an install or upgrade labels the release
// helmcharts.helm.cattle.io/configHash=<hash>, by which the controller
// knows the release is current and stops running jobs.
//
// What it does with a release already there, by its status: deployed (or
// superseded/unknown) is upgraded; failed is uninstalled and installed again
// unless FAILURE_POLICY is abort, which fails the job; pending-install and
// uninstalling are uninstalled and installed again; pending-upgrade and
// pending-rollback are rolled back, then upgraded.
//
// Standard library only: the image builder compiles it from the embedded
// source.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// configHashLabel on a release says which configuration it was made from.
const configHashLabel = "helmcharts.helm.cattle.io/configHash"

// Paths of the job's volumes, as the controller mounts them.
var (
	chartDir     = "/chart"
	configDir    = "/config"
	caFilesDir   = "/ca-files"
	authDir      = "/auth"
	tmpDir       = "/tmp"
	serviceCA    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	helmBinary   = "helm"
	terminateLog = "/dev/termination-log"
)

func main() {
	j := &job{env: os.Getenv, out: os.Stdout, helm: runHelm}
	if err := j.run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "klipper-helm: %v\n", err)
		// The pod's termination message: kubectl describe shows it.
		os.WriteFile(terminateLog, []byte(err.Error()), 0o644)
		os.Exit(1)
	}
}

// job is one run; helm runs the helm binary with args and extra
// environment, returning its standard output.
type job struct {
	env  func(string) string
	out  io.Writer
	helm func(env []string, args ...string) ([]byte, error)

	name, namespace string
	helmEnv         []string
}

func runHelm(env []string, args ...string) ([]byte, error) {
	cmd := exec.Command(helmBinary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, os.Stdout)
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	return out.Bytes(), err
}

func (j *job) exec(args ...string) ([]byte, error) {
	fmt.Fprintf(j.out, "+ helm %s\n", strings.Join(redact(args), " "))
	out, err := j.helm(j.helmEnv, args...)
	if err != nil {
		return out, fmt.Errorf("helm %s: %w", args[0], err)
	}
	return out, nil
}

// redact hides the value of --password in the command lines printed.
func redact(args []string) []string {
	out := slices.Clone(args)
	for i := range out {
		if i > 0 && out[i-1] == "--password" {
			out[i] = "********"
		}
	}
	return out
}

func (j *job) run(args []string) error {
	if len(args) == 0 || (args[0] != "install" && args[0] != "delete") {
		return fmt.Errorf("first argument must be install or delete, got %q", args)
	}
	if v := j.env("HELM_VERSION"); v != "" && v != "v3" {
		return fmt.Errorf("HELM_VERSION %q: this image runs helm v3 only (helm v2 and its tiller are gone); set spec.helmVersion to v3 or leave it out", v)
	}
	j.name = j.env("NAME")
	if j.name == "" {
		return errors.New("NAME is empty")
	}
	j.namespace = j.env("TARGET_NAMESPACE")
	if j.namespace == "" {
		j.namespace = j.env("CHART_NAMESPACE")
	}
	// spec.serverSide is auto (the controller's default: helm decides,
	// and helm v3 applies client-side), true or false.
	for _, k := range []string{"SERVER_SIDE", "FORCE_CONFLICTS"} {
		if v := j.env(k); v == "true" {
			fmt.Fprintf(j.out, "warning: %s=%s: helm v3 has no server-side apply; the release is applied client-side\n", k, v)
		}
	}
	ca, err := j.trust()
	if err != nil {
		return err
	}
	rel, err := j.release()
	if err != nil {
		return err
	}
	if args[0] == "delete" {
		return j.delete(rel)
	}
	if want := j.env("EXPECTED_RELEASE_REVISION"); want != "" {
		have := "0"
		if rel != nil {
			have = rel.Revision
		}
		if have != want {
			fmt.Fprintf(j.out, "release revision %s, not the %s the controller expected: another change came first; nothing done (the controller runs this job again)\n", have, want)
			return nil
		}
	}
	chart, err := j.chart(ca)
	if err != nil {
		return err
	}
	return j.install(rel, chart, args[1:])
}

// trust writes one CA bundle of the service account's CA (for charts the
// API server's supervisor serves) and the repository CAs, and points
// helm at it through SSL_CERT_FILE; it returns the bundle's path ("" when
// there are no CAs).
func (j *job) trust() (string, error) {
	var bundle []byte
	files := []string{serviceCA, filepath.Join(configDir, "ca-file.pem")}
	if ents, err := os.ReadDir(caFilesDir); err == nil {
		for _, e := range ents {
			// ConfigMap volumes hold ..data links and dot-dirs.
			if !strings.HasPrefix(e.Name(), ".") {
				files = append(files, filepath.Join(caFilesDir, e.Name()))
			}
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		bundle = append(append(bundle, bytes.TrimSpace(data)...), '\n')
	}
	if len(bundle) == 0 {
		return "", nil
	}
	p := filepath.Join(tmpDir, "ca-bundle.pem")
	if err := os.WriteFile(p, bundle, 0o644); err != nil {
		return "", err
	}
	j.helmEnv = append(j.helmEnv, "SSL_CERT_FILE="+p)
	return p, nil
}

// release is the release's status as helm lists it, nil when there is none.
type release struct {
	Name       string `json:"name"`
	Revision   string `json:"revision"`
	Status     string `json:"status"`
	Chart      string `json:"chart"`
	AppVersion string `json:"app_version"`
}

func (j *job) release() (*release, error) {
	out, err := j.exec("ls", "--all", "--filter", "^"+regexp.QuoteMeta(j.name)+"$", "--namespace", j.namespace, "--output", "json")
	if err != nil {
		return nil, err
	}
	var rels []release
	if err := json.Unmarshal(out, &rels); err != nil {
		return nil, fmt.Errorf("helm ls: %w", err)
	}
	for _, r := range rels {
		if r.Name == j.name {
			r.Status = strings.ToLower(r.Status)
			fmt.Fprintf(j.out, "release %s/%s: revision %s, %s, chart %s\n", j.namespace, j.name, r.Revision, r.Status, r.Chart)
			return &r, nil
		}
	}
	fmt.Fprintf(j.out, "release %s/%s: not installed\n", j.namespace, j.name)
	return nil, nil
}

func (j *job) delete(rel *release) error {
	if rel == nil {
		fmt.Fprintln(j.out, "nothing to delete")
		return nil
	}
	// As klipper-helm: a failed uninstall does not fail the job, or the
	// HelmChart could never be deleted.
	if _, err := j.uninstall(); err != nil {
		fmt.Fprintf(j.out, "warning: %v\n", err)
	}
	return nil
}

func (j *job) uninstall() ([]byte, error) {
	return j.exec("uninstall", j.name, "--namespace", j.namespace, "--wait")
}

// chart returns what to install: the inline chart written to a file, a
// URL with the API server filled in, or a repository chart after adding
// the repository.
func (j *job) chart(ca string) (string, error) {
	inline := filepath.Join(chartDir, j.name+".tgz.base64")
	if data, err := os.ReadFile(inline); err == nil {
		tgz, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(data)), ""))
		if err != nil {
			return "", fmt.Errorf("%s (spec.chartContent): not base64: %w", inline, err)
		}
		p := filepath.Join(tmpDir, j.name+".tgz")
		if err := os.WriteFile(p, tgz, 0o644); err != nil {
			return "", err
		}
		return p, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	chart := j.env("CHART")
	if chart == "" {
		return "", errors.New("neither spec.chart nor spec.chartContent is set")
	}
	if strings.Contains(chart, "%{KUBERNETES_API}%") {
		host, port := j.env("KUBERNETES_SERVICE_HOST"), j.env("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			return "", errors.New("chart names %{KUBERNETES_API}% but KUBERNETES_SERVICE_HOST/PORT are not set")
		}
		chart = strings.ReplaceAll(chart, "%{KUBERNETES_API}%", net.JoinHostPort(host, port))
	}
	repo := j.env("REPO")
	if repo == "" || strings.Contains(chart, "://") {
		return chart, nil
	}
	alias, _, _ := strings.Cut(chart, "/")
	args := []string{"repo", "add", alias, repo, "--force-update"}
	if user, err := os.ReadFile(filepath.Join(authDir, "username")); err == nil {
		pass, _ := os.ReadFile(filepath.Join(authDir, "password"))
		args = append(args, "--username", strings.TrimSpace(string(user)), "--password", strings.TrimSpace(string(pass)))
		if j.env("AUTH_PASS_CREDENTIALS") == "true" {
			args = append(args, "--pass-credentials")
		}
	}
	if ca != "" {
		args = append(args, "--ca-file", ca)
	}
	if j.env("INSECURE_SKIP_TLS_VERIFY") == "true" {
		args = append(args, "--insecure-skip-tls-verify")
	}
	if _, err := j.exec(args...); err != nil {
		return "", err
	}
	if _, err := j.exec("repo", "update", alias); err != nil {
		return "", err
	}
	return chart, nil
}

// install installs or upgrades the release; flags are the job's after
// "install".
func (j *job) install(rel *release, chart string, flags []string) error {
	common := slices.Clone(flags)
	if !slices.Contains(common, "--namespace") {
		common = append(common, "--namespace", j.namespace)
	}
	if t := j.env("TIMEOUT"); t != "" {
		common = append(common, "--timeout", t)
	}
	if h := j.env("CONFIG_HASH"); h != "" {
		common = append(common, "--labels", configHashLabel+"="+h)
	}
	if j.env("INSECURE_SKIP_TLS_VERIFY") == "true" {
		common = append(common, "--insecure-skip-tls-verify")
	}
	if j.env("PLAIN_HTTP") == "true" {
		common = append(common, "--plain-http")
	}
	values, err := filepath.Glob(filepath.Join(configDir, "*.yaml"))
	if err != nil {
		return err
	}
	slices.Sort(values)
	for _, v := range values {
		common = append(common, "--values", v)
	}
	install := func() error {
		_, err := j.exec(append([]string{"install", j.name, chart}, common...)...)
		return err
	}
	upgrade := func() error {
		_, err := j.exec(append([]string{"upgrade", j.name, chart}, common...)...)
		return err
	}
	if rel == nil {
		return install()
	}
	switch rel.Status {
	case "failed":
		if j.env("FAILURE_POLICY") == "abort" {
			return fmt.Errorf("release %s/%s failed and spec.failurePolicy is abort: fix it by hand (helm rollback or uninstall) and the job runs again", j.namespace, j.name)
		}
		fmt.Fprintln(j.out, "release failed: uninstalling and installing again (failurePolicy reinstall)")
		if _, err := j.uninstall(); err != nil {
			return err
		}
		return install()
	case "pending-install", "uninstalling":
		if _, err := j.uninstall(); err != nil {
			return err
		}
		return install()
	case "pending-upgrade", "pending-rollback":
		if _, err := j.exec("rollback", j.name, "--namespace", j.namespace, "--wait"); err != nil {
			return err
		}
		return upgrade()
	case "uninstalled":
		return install()
	default:
		return upgrade()
	}
}
