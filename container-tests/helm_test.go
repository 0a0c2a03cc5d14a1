package containertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// demoChart is a Helm chart packaged as `helm package` would: one
// ConfigMap carrying a value and the chart's version.
func demoChart(t *testing.T, version string) []byte {
	t.Helper()
	files := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: hc-demo\nversion: " + version + "\n",
		"values.yaml": "greeting: hello\n",
		"templates/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n" +
			"data:\n  greeting: {{ .Values.greeting | quote }}\n  chartVersion: {{ .Chart.Version | quote }}\n",
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range []string{"Chart.yaml", "values.yaml", "templates/configmap.yaml"} {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: "hc-demo/" + name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(data))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkHelmChart: the Helm controller installs a HelmChart whose chart the
// supervisor serves from server/static (https://%{KUBERNETES_API}%/static/),
// upgrades it when a HelmChartConfig overrides its values and when its
// inline chartContent changes, and uninstalls it when the HelmChart is
// deleted; each step runs a klipper-helm job from the image built here.
func checkHelmChart(ctx context.Context, t *testing.T, server *Node) {
	t.Helper()
	apply := func(manifest string) {
		t.Helper()
		if out, err := server.Exec(ctx, "sh", "-c", "cat > /tmp/hc.yaml <<'EOF'\n"+manifest+"\nEOF\nk3s kubectl apply -f /tmp/hc.yaml"); err != nil {
			t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
		}
	}
	jobs := func() string {
		out, _ := server.Kubectl(ctx, "get", "helmcharts,jobs,pods", "-n", "kube-system", "-l", "helmcharts.helm.cattle.io/chart=hc-demo", "-o", "wide")
		logs, _ := server.Kubectl(ctx, "logs", "-n", "kube-system", "-l", "helmcharts.helm.cattle.io/chart=hc-demo", "--tail", "30")
		return out + "\n" + logs
	}
	// wantData waits for the release's ConfigMap to hold greeting and chartVersion.
	wantData := func(step, greeting, version string) {
		t.Helper()
		if err := WaitFor(ctx, 4*time.Minute, 3*time.Second, func() error {
			out, err := server.Kubectl(ctx, "get", "configmap", "-n", "hc-test", "hc-demo", "-o", "jsonpath={.data.greeting} {.data.chartVersion}")
			if err == nil && out != greeting+" "+version {
				err = fmt.Errorf("ConfigMap hc-test/hc-demo: %q, want %q", out, greeting+" "+version)
			}
			return err
		}); err != nil {
			t.Fatalf("%s: %v\n%s", step, err, jobs())
		}
	}

	tmp := filepath.Join(t.TempDir(), "hc-demo-0.1.0.tgz")
	if err := os.WriteFile(tmp, demoChart(t, "0.1.0"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := server.Exec(ctx, "mkdir", "-p", "/var/lib/rancher/k3s/server/static/charts"); err != nil {
		t.Fatalf("mkdir static/charts: %v %s", err, out)
	}
	if err := server.CopyIn(ctx, tmp, "/var/lib/rancher/k3s/server/static/charts/hc-demo-0.1.0.tgz"); err != nil {
		t.Fatal(err)
	}
	// The controller created its CRDs at start.
	if err := WaitFor(ctx, 2*time.Minute, 2*time.Second, func() error {
		_, err := server.Kubectl(ctx, "get", "crd", "helmcharts.helm.cattle.io", "helmchartconfigs.helm.cattle.io")
		return err
	}); err != nil {
		t.Fatalf("Helm controller CRDs: %v", err)
	}

	chart := `apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata: {name: hc-demo, namespace: kube-system}
spec:
  chart: https://%{KUBERNETES_API}%/static/charts/hc-demo-0.1.0.tgz
  targetNamespace: hc-test
  createNamespace: true
  valuesContent: |-
    greeting: hello from the HelmChart`
	apply(chart)
	wantData("install from /static/charts", "hello from the HelmChart", "0.1.0")
	// The controller replaces a finished job when it records the
	// release's revision: wait for the one that ran to show it succeeded.
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		out, err := server.Kubectl(ctx, "get", "job", "-n", "kube-system", "helm-install-hc-demo", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.status.succeeded}")
		if want := "docker.io/rancher/klipper-helm:v0.9.14-build20260309 1"; err == nil && out != want {
			err = fmt.Errorf("install job: image and succeeded %q, want %q", out, want)
		}
		return err
	}); err != nil {
		t.Error(err)
	}

	apply(`apiVersion: helm.cattle.io/v1
kind: HelmChartConfig
metadata: {name: hc-demo, namespace: kube-system}
spec:
  valuesContent: |-
    greeting: overridden by the HelmChartConfig`)
	wantData("HelmChartConfig", "overridden by the HelmChartConfig", "0.1.0")

	apply(strings.Replace(chart, "  chart: https://%{KUBERNETES_API}%/static/charts/hc-demo-0.1.0.tgz",
		"  chartContent: "+base64.StdEncoding.EncodeToString(demoChart(t, "0.2.0")), 1))
	wantData("chartContent upgrade", "overridden by the HelmChartConfig", "0.2.0")
	if out, err := server.Kubectl(ctx, "get", "secret", "-n", "hc-test", "-l", "owner=helm,name=hc-demo", "-o", "name"); err != nil || !strings.Contains(out, "sh.helm.release.v1.hc-demo.v3") {
		t.Errorf("release history after two upgrades: %v\n%s", err, out)
	}

	if out, err := server.Kubectl(ctx, "delete", "helmchart", "-n", "kube-system", "hc-demo", "--timeout", "4m"); err != nil {
		t.Fatalf("delete HelmChart: %v %s\n%s", err, out, jobs())
	}
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		out, err := server.Kubectl(ctx, "get", "configmap,secret", "-n", "hc-test", "-o", "name")
		if err == nil && (strings.Contains(out, "hc-demo")) {
			err = fmt.Errorf("left after the uninstall:\n%s", out)
		}
		return err
	}); err != nil {
		t.Error(err)
	}
	server.Kubectl(ctx, "delete", "helmchartconfig", "-n", "kube-system", "hc-demo", "--ignore-not-found")
}

// checkTraefik: Traefik, as k3s packages it, is installed by the Helm
// controller from the charts the image carries (helm-install-traefik-crd
// and helm-install-traefik Completed, traefik Running, svclb-traefik on
// every node), routes an Ingress from outside the nodes on port 80 of
// each, and a HelmChartConfig changes its values: the controller
// upgrades the release.
func checkTraefik(ctx context.Context, t *testing.T, server *Node, nodes []*Node, client *Node) {
	t.Helper()
	state := func() string {
		out, _ := server.Kubectl(ctx, "get", "helmcharts,jobs,pods,svc", "-n", "kube-system", "-o", "wide")
		logs, _ := server.Kubectl(ctx, "logs", "-n", "kube-system", "-l", "helmcharts.helm.cattle.io/chart in (traefik,traefik-crd)", "--tail", "20")
		tr, _ := server.Kubectl(ctx, "logs", "-n", "kube-system", "deploy/traefik", "--tail", "20")
		return out + "\n" + logs + "\n" + tr
	}
	// k3s's `kubectl get pods -A` for Traefik.
	if err := WaitFor(ctx, 5*time.Minute, 3*time.Second, func() error {
		out, err := server.Kubectl(ctx, "get", "pods", "-n", "kube-system", "--no-headers", "-o", "custom-columns=NAME:.metadata.name,PHASE:.status.phase,READY:.status.containerStatuses[*].ready")
		if err != nil {
			return err
		}
		want := map[string]string{"helm-install-traefik-crd-": "Succeeded", "helm-install-traefik-": "Succeeded", "traefik-": "Running true"}
		for prefix, w := range want {
			found := false
			for _, l := range strings.Split(out, "\n") {
				f := strings.Fields(l)
				if len(f) < 2 || !strings.HasPrefix(f[0], prefix) || (prefix == "helm-install-traefik-" && strings.HasPrefix(f[0], "helm-install-traefik-crd-")) {
					continue
				}
				if strings.Join(f[1:len(strings.Fields(w))+1], " ") == w {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("no pod %s* %s:\n%s", prefix, w, out)
			}
		}
		if n := strings.Count(out, "svclb-traefik-"); n != len(nodes) {
			return fmt.Errorf("%d svclb-traefik pods, want one on each of %d nodes:\n%s", n, len(nodes), out)
		}
		return nil
	}); err != nil {
		t.Fatalf("Traefik: %v\n%s", err, state())
	}

	const ingress = `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: testserver, namespace: default}
spec:
  rules:
  - host: testserver.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: testserver, port: {number: 80}}}}`
	if out, err := server.Exec(ctx, "sh", "-c", "cat > /tmp/ing.yaml <<'EOF'\n"+ingress+"\nEOF\nk3s kubectl apply -f /tmp/ing.yaml"); err != nil {
		t.Fatalf("apply Ingress: %v\n%s", err, out)
	}
	// The default IngressClass was given to it, and each node's port 80
	// (its svclb-traefik pod) reaches the pods through Traefik.
	if out, err := server.Kubectl(ctx, "get", "ingress", "testserver", "-o", "jsonpath={.spec.ingressClassName}"); err != nil || out != "traefik" {
		t.Errorf("Ingress class %q %v, want traefik (the default class)", out, err)
	}
	// viaIngress asks ip:80 for the Ingress's host.
	viaIngress := func(ip string) error {
		out, err := client.Exec(ctx, "curl", "-sS", "--max-time", "5", "-H", "Host: testserver.example", "http://"+ip+"/")
		if err == nil && !strings.Contains(out, "hello from ballast testserver") {
			err = fmt.Errorf("%q", out)
		}
		return err
	}
	for _, n := range nodes {
		if err := WaitFor(ctx, 2*time.Minute, 2*time.Second, func() error { return viaIngress(n.IP) }); err != nil {
			t.Errorf("Ingress through Traefik on %s:80: %v\n%s", n.Name, err, state())
		}
	}
	// Published: the Ingress carries the traefik Service's addresses.
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		out, err := server.Kubectl(ctx, "get", "ingress", "testserver", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}")
		if err == nil && out == "" {
			err = fmt.Errorf("Ingress status has no address")
		}
		return err
	}); err != nil {
		t.Error(err)
	}

	// A HelmChartConfig: the controller upgrades the release with it.
	const config = `apiVersion: helm.cattle.io/v1
kind: HelmChartConfig
metadata: {name: traefik, namespace: kube-system}
spec:
  valuesContent: |-
    deployment:
      podAnnotations:
        ballast.test/config: applied
    logs:
      access:
        enabled: true`
	if out, err := server.Exec(ctx, "sh", "-c", "cat > /tmp/hcc.yaml <<'EOF'\n"+config+"\nEOF\nk3s kubectl apply -f /tmp/hcc.yaml"); err != nil {
		t.Fatalf("apply HelmChartConfig: %v\n%s", err, out)
	}
	if err := WaitFor(ctx, 4*time.Minute, 3*time.Second, func() error {
		out, err := server.Kubectl(ctx, "get", "deploy", "-n", "kube-system", "traefik", "-o", `jsonpath={.spec.template.metadata.annotations.ballast\.test/config} {.spec.template.spec.containers[0].args}`)
		if err == nil && (!strings.HasPrefix(out, "applied ") || !strings.Contains(out, "--accesslog=true")) {
			err = fmt.Errorf("traefik Deployment after the HelmChartConfig: %q", out)
		}
		return err
	}); err != nil {
		t.Fatalf("%v\n%s", err, state())
	}
	if err := WaitFor(ctx, 3*time.Minute, 3*time.Second, func() error { return viaIngress(server.IP) }); err != nil {
		t.Errorf("Ingress after the upgrade: %v\n%s", err, state())
	}
	server.Kubectl(ctx, "delete", "ingress", "testserver")
}
