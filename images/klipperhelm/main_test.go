package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHelm records the commands and answers ls with a release list.
type fakeHelm struct {
	ls    string
	fail  map[string]bool // first argument -> fail
	calls []string
	env   []string
}

func (f *fakeHelm) run(env []string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, strings.Join(args, " "))
	f.env = env
	if f.fail[args[0]] {
		return nil, os.ErrPermission
	}
	if args[0] == "ls" {
		if f.ls == "" {
			return []byte("[]"), nil
		}
		return []byte(f.ls), nil
	}
	return nil, nil
}

func setup(t *testing.T, env map[string]string, ls string) (*job, *fakeHelm, string) {
	t.Helper()
	root := t.TempDir()
	chartDir, configDir, caFilesDir, authDir, tmpDir = filepath.Join(root, "chart"), filepath.Join(root, "config"), filepath.Join(root, "ca-files"), filepath.Join(root, "auth"), filepath.Join(root, "tmp")
	serviceCA = filepath.Join(root, "sa-ca.crt")
	for _, d := range []string{chartDir, configDir, tmpDir} {
		os.MkdirAll(d, 0o755)
	}
	f := &fakeHelm{ls: ls}
	j := &job{env: func(k string) string { return env[k] }, out: &bytes.Buffer{}, helm: f.run}
	return j, f, root
}

func baseEnv() map[string]string {
	return map[string]string{"NAME": "demo", "TARGET_NAMESPACE": "apps", "CHART_NAMESPACE": "kube-system",
		"CHART":                   "https://%{KUBERNETES_API}%/static/charts/demo-1.0.0.tgz",
		"KUBERNETES_SERVICE_HOST": "10.43.0.1", "KUBERNETES_SERVICE_PORT": "443"}
}

func TestInstallFresh(t *testing.T) {
	j, f, _ := setup(t, baseEnv(), "")
	os.WriteFile(filepath.Join(configDir, "values-0-001-HelmChart-Values.yaml"), []byte("a: 1"), 0o644)
	os.WriteFile(filepath.Join(configDir, "values-0-000-HelmChart-ValuesContent.yaml"), []byte("b: 1"), 0o644)
	os.WriteFile(serviceCA, []byte("CA"), 0o644)
	if err := j.run([]string{"install", "--set-string", "x=y"}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`ls --all --filter ^demo$ --namespace apps --output json`,
		`install demo https://10.43.0.1:443/static/charts/demo-1.0.0.tgz --set-string x=y --namespace apps --values ` +
			filepath.Join(configDir, "values-0-000-HelmChart-ValuesContent.yaml") + ` --values ` + filepath.Join(configDir, "values-0-001-HelmChart-Values.yaml"),
	}
	if strings.Join(f.calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(f.calls, "\n"), strings.Join(want, "\n"))
	}
	if len(f.env) != 1 || f.env[0] != "SSL_CERT_FILE="+filepath.Join(tmpDir, "ca-bundle.pem") {
		t.Fatalf("helm env %q", f.env)
	}
}

func TestUpgradeDeployedInlineChart(t *testing.T) {
	env := baseEnv()
	env["TIMEOUT"] = "5m0s"
	j, f, _ := setup(t, env, `[{"name":"demo","revision":"2","status":"deployed","chart":"demo-1.0.0"}]`)
	os.WriteFile(filepath.Join(chartDir, "demo.tgz.base64"), []byte(base64.StdEncoding.EncodeToString([]byte("tgz-bytes"))+"\n"), 0o644)
	if err := j.run([]string{"install", "--namespace", "apps", "--version", "1.1.0"}); err != nil {
		t.Fatal(err)
	}
	tgz := filepath.Join(tmpDir, "demo.tgz")
	if got := f.calls[len(f.calls)-1]; got != "upgrade demo "+tgz+" --namespace apps --version 1.1.0 --timeout 5m0s" {
		t.Fatalf("last call %q", got)
	}
	if data, _ := os.ReadFile(tgz); string(data) != "tgz-bytes" {
		t.Fatalf("chart written %q", data)
	}
}

func TestFailedRelease(t *testing.T) {
	ls := `[{"name":"demo","revision":"1","status":"failed"}]`
	j, f, _ := setup(t, baseEnv(), ls)
	if err := j.run([]string{"install"}); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 3 || !strings.HasPrefix(f.calls[1], "uninstall demo --namespace apps --wait") || !strings.HasPrefix(f.calls[2], "install demo ") {
		t.Fatalf("reinstall calls %q", f.calls)
	}
	env := baseEnv()
	env["FAILURE_POLICY"] = "abort"
	j, f, _ = setup(t, env, ls)
	if err := j.run([]string{"install"}); err == nil || !strings.Contains(err.Error(), "abort") {
		t.Fatalf("abort: err %v", err)
	}
	if len(f.calls) != 1 {
		t.Fatalf("abort ran %q", f.calls)
	}
}

func TestPendingUpgradeRollsBack(t *testing.T) {
	j, f, _ := setup(t, baseEnv(), `[{"name":"demo","revision":"3","status":"pending-upgrade"}]`)
	if err := j.run([]string{"install"}); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 3 || f.calls[1] != "rollback demo --namespace apps --wait" || !strings.HasPrefix(f.calls[2], "upgrade demo ") {
		t.Fatalf("calls %q", f.calls)
	}
}

func TestRevisionAndHash(t *testing.T) {
	env := baseEnv()
	env["EXPECTED_RELEASE_REVISION"], env["CONFIG_HASH"] = "2", "SHA256=abc"
	j, f, _ := setup(t, env, `[{"name":"demo","revision":"2","status":"deployed"}]`)
	if err := j.run([]string{"install"}); err != nil {
		t.Fatal(err)
	}
	if last := f.calls[len(f.calls)-1]; !strings.HasPrefix(last, "upgrade demo ") || !strings.Contains(last, " --labels helmcharts.helm.cattle.io/configHash=SHA256=abc") {
		t.Fatalf("upgrade %q", last)
	}
	// Another revision than expected: nothing is done.
	env["EXPECTED_RELEASE_REVISION"] = "1"
	j, f, _ = setup(t, env, `[{"name":"demo","revision":"2","status":"deployed"}]`)
	if err := j.run([]string{"install"}); err != nil || len(f.calls) != 1 {
		t.Fatalf("stale job: %v %q", err, f.calls)
	}
	// No release yet is revision 0.
	env["EXPECTED_RELEASE_REVISION"] = "0"
	j, f, _ = setup(t, env, "")
	if err := j.run([]string{"install"}); err != nil || len(f.calls) != 2 || !strings.HasPrefix(f.calls[1], "install demo ") {
		t.Fatalf("first install: %v %q", err, f.calls)
	}
}

func TestDelete(t *testing.T) {
	j, f, _ := setup(t, baseEnv(), "")
	if err := j.run([]string{"delete"}); err != nil || len(f.calls) != 1 {
		t.Fatalf("delete of nothing: %v %q", err, f.calls)
	}
	j, f, _ = setup(t, baseEnv(), `[{"name":"demo","revision":"1","status":"deployed"}]`)
	f.fail = map[string]bool{"uninstall": true}
	if err := j.run([]string{"delete"}); err != nil {
		t.Fatalf("a failed uninstall must not fail the delete job: %v", err)
	}
	if f.calls[1] != "uninstall demo --namespace apps --wait" {
		t.Fatalf("calls %q", f.calls)
	}
}

func TestRepoChart(t *testing.T) {
	env := baseEnv()
	env["CHART"], env["REPO"], env["AUTH_PASS_CREDENTIALS"] = "demo/nginx", "https://charts.example.com", "true"
	j, f, _ := setup(t, env, "")
	os.MkdirAll(authDir, 0o755)
	os.WriteFile(filepath.Join(authDir, "username"), []byte("u\n"), 0o644)
	os.WriteFile(filepath.Join(authDir, "password"), []byte("p"), 0o644)
	os.MkdirAll(caFilesDir, 0o755)
	os.WriteFile(filepath.Join(caFilesDir, "repo.pem"), []byte("REPO-CA"), 0o644)
	if err := j.run([]string{"install"}); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(tmpDir, "ca-bundle.pem")
	if f.calls[1] != "repo add demo https://charts.example.com --force-update --username u --password p --pass-credentials --ca-file "+bundle {
		t.Fatalf("repo add %q", f.calls[1])
	}
	if f.calls[2] != "repo update demo" || !strings.HasPrefix(f.calls[3], "install demo demo/nginx ") {
		t.Fatalf("calls %q", f.calls)
	}
	if data, _ := os.ReadFile(bundle); string(data) != "REPO-CA\n" {
		t.Fatalf("bundle %q", data)
	}
	if out := j.out.(*bytes.Buffer).String(); strings.Contains(out, " p ") || !strings.Contains(out, "--password ********") {
		t.Fatalf("password not redacted:\n%s", out)
	}
}

func TestServerSideWarning(t *testing.T) {
	for v, warn := range map[string]bool{"auto": false, "false": false, "": false, "true": true} {
		env := baseEnv()
		env["SERVER_SIDE"] = v
		j, _, _ := setup(t, env, "")
		if err := j.run([]string{"install"}); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(j.out.(*bytes.Buffer).String(), "warning: SERVER_SIDE"); got != warn {
			t.Errorf("SERVER_SIDE=%q: warned %v, want %v", v, got, warn)
		}
	}
}

func TestRefusals(t *testing.T) {
	env := baseEnv()
	env["HELM_VERSION"] = "v2"
	j, _, _ := setup(t, env, "")
	if err := j.run([]string{"install"}); err == nil || !strings.Contains(err.Error(), "v2") {
		t.Fatalf("helm v2: %v", err)
	}
	j, _, _ = setup(t, baseEnv(), "")
	if err := j.run([]string{"upgrade"}); err == nil {
		t.Fatal("unknown action accepted")
	}
	env = baseEnv()
	delete(env, "KUBERNETES_SERVICE_HOST")
	j, _, _ = setup(t, env, "")
	if err := j.run([]string{"install"}); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Fatalf("no service host: %v", err)
	}
}
