package suiterun

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fakeTools writes a ginkgo that replays the fixtures (testdata/ginkgo-
// <phase>.txt and .json, a real run of a small suite) and records its
// arguments, and a kubectl that knows the server's version.
func fakeTools(t *testing.T) (ginkgo, kubectl, argsLog string) {
	t.Helper()
	dir := t.TempDir()
	testdata, _ := filepath.Abs("testdata")
	argsLog = filepath.Join(dir, "args")
	ginkgo = filepath.Join(dir, "ginkgo")
	script := `#!/bin/sh
printf '%s\n' "$@" >> ` + argsLog + `
echo ---- >> ` + argsLog + `
for a in "$@"; do
	case "$a" in
	--output-dir=*) out=${a#--output-dir=} ;;
	--json-report=*) report=${a#--json-report=} ;;
	esac
done
phase=${report#report_}; phase=${phase%.json}
cat ` + testdata + `/ginkgo-$phase.txt
cp ` + testdata + `/ginkgo-$phase.json "$out/$report"
exit 1
`
	write(t, ginkgo, script)
	kubectl = filepath.Join(dir, "kubectl")
	write(t, kubectl, `#!/bin/sh
echo '{"clientVersion":{"gitVersion":"v1.37.2"},"serverVersion":{"gitVersion":"v1.37.2+ballast"}}'
`)
	return ginkgo, kubectl, argsLog
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestRun(t *testing.T) {
	ginkgo, kubectl, argsLog := fakeTools(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "k3s.yaml")
	write(t, kubeconfig, "apiVersion: v1\n")
	out := filepath.Join(dir, "out")
	var log bytes.Buffer
	sum, err := Run(context.Background(), Options{
		E2ETest: "/cache/e2e.test", Ginkgo: ginkgo, Kubectl: kubectl,
		KubernetesVersion: "v1.37.2",
		Kubeconfig:        kubeconfig,
		OutDir:            out,
		Tests:             fixtureTests,
		Sample:            "quick sample",
		Parallel:          3,
		RepoRoot:          "/go/pkg/mod/k8s.io/kubernetes@v1.37.2",
		Log:               &log,
	})
	if err != nil {
		t.Fatal(err)
	}

	// A line per finished test, counted over both phases.
	wantLines := []string{
		"cluster: Kubernetes v1.37.2+ballast; suite: v1.37.2",
		"running 4 tests on 3 ginkgo processes",
		"[1/6] FAIL [sig-network] DNS should resolve [Conformance] (0.0s)",
		"[2/6] FAIL [sig-node] Pods should fail [Conformance] (0.0s)",
		"[3/6] SKIP [sig-node] Pods should be skipped [Conformance] (0.0s)",
		"[4/6] PASS [sig-node] Pods should pass [NodeConformance] [Conformance] (0.3s)",
		"running 2 [Serial] tests one by one",
		// The serial fixture ran a test of the other phase too: it is
		// not counted, and the mismatch is told.
		"warning: ginkgo will run 3 specs, 2 were selected: the names did not all match",
		"[5/6] PASS [sig-apps] Daemon set [Serial] should run serially [Conformance] (0.1s)",
		"[6/6] FAIL [sig-apps] Daemon set [Serial] should fail serially [Conformance] (0.0s)",
	}
	if got := strings.Split(strings.TrimSpace(log.String()), "\n"); strings.Join(got, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("progress:\n%s\nwant:\n%s", log.String(), strings.Join(wantLines, "\n"))
	}

	// The summary takes each phase's tests from that phase's report.
	if tot := sum.Total(); tot != (SIGCount{SIG: "total", Passed: 2, Failed: 3, Skipped: 1}) {
		t.Errorf("total = %+v", tot)
	}
	if sum.ServerVersion != "v1.37.2+ballast" || sum.Sample != "quick sample" || sum.WallTime <= 0 {
		t.Errorf("summary = %+v", sum)
	}
	md, err := os.ReadFile(filepath.Join(out, SummaryFile))
	if err != nil || !strings.Contains(string(md), "| sig-network | 0 | 1 | 0 |") {
		t.Errorf("summary.md: %v\n%s", err, md)
	}
	if e2eLog, err := os.ReadFile(filepath.Join(out, LogFile)); err != nil || !bytes.Contains(e2eLog, []byte("Summarizing 2 Failures:")) {
		t.Errorf("e2e.log lacks ginkgo's output: %v", err)
	}

	// ginkgo's and e2e.test's flags, as upstream's conformance image has them.
	args, _ := os.ReadFile(argsLog)
	phases := strings.Split(strings.TrimSuffix(string(args), "----\n"), "----\n")
	if len(phases) != 2 {
		t.Fatalf("ginkgo ran %d times, want 2:\n%s", len(phases), args)
	}
	for i, want := range []struct {
		procs string
		names []Test
		phase string
	}{{"--procs=3\n", fixtureTests[:4], "parallel"}, {"", fixtureTests[4:], "serial"}} {
		got := phases[i]
		wantArgs := fmt.Sprintf("--no-color\n-v\n--timeout=24h\n--output-dir=%s\n--json-report=report_%s.json\n%s/cache/e2e.test\n--\n"+
			"--kubeconfig=%s\n--provider=skeleton\n--report-dir=%s\n--report-prefix=%s_\n--disable-log-dump\n--e2e-output-dir=%s/e2e-output\n"+
			"--kubectl-path=%s\n-v=4\n--repo-root=/go/pkg/mod/k8s.io/kubernetes@v1.37.2\n",
			out, want.phase, want.procs, kubeconfig, out, want.phase, out, kubectl)
		focus, rest, _ := strings.Cut(got, "\n")
		if rest != wantArgs {
			t.Errorf("%s phase: ginkgo args\n%s\nwant\n%s", want.phase, rest, wantArgs)
		}
		re := regexp.MustCompile(strings.TrimPrefix(focus, "--focus="))
		for _, tt := range fixtureTests {
			selected := false
			for _, n := range want.names {
				selected = selected || n.Name == tt.Name
			}
			if re.MatchString("Kubernetes e2e suite "+tt.Name) != selected {
				t.Errorf("%s phase: focus matches %q: %v, want %v", want.phase, tt.Name, !selected, selected)
			}
		}
	}
}

func TestRunNeedsKubeconfig(t *testing.T) {
	_, err := Run(context.Background(), Options{Kubeconfig: filepath.Join(t.TempDir(), "none"), OutDir: t.TempDir(), Tests: fixtureTests})
	if err == nil || !strings.Contains(err.Error(), "kubeconfig") {
		t.Errorf("err = %v, want a missing kubeconfig", err)
	}
}
