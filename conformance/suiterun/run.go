package suiterun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Options are the inputs of Run.
type Options struct {
	// E2ETest, Ginkgo and Kubectl are the suite's programs (suitebin).
	E2ETest, Ginkgo, Kubectl string
	// KubernetesVersion is the suite's, for the summary.
	KubernetesVersion string
	// Kubeconfig reaches the cluster under test.
	Kubeconfig string
	// DryRun has ginkgo walk the selected tests without running them
	// (ginkgo --dry-run, one process): the whole run, reports and
	// summary included, without a cluster; Kubeconfig may be "".
	DryRun bool
	// OutDir receives e2e.log, the reports and summary.md.
	OutDir string
	// Tests are the selected tests (Select).
	Tests []Test
	// Sample names the selection in the summary ("quick sample"...).
	Sample string
	// Parallel is the number of ginkgo processes for the tests that are
	// not [Serial].
	Parallel int
	// RepoRoot is k8s.io/kubernetes's source tree (the module cache's
	// copy), where e2e.test looks for files it does not embed; "" leaves
	// e2e.test's default.
	RepoRoot string
	// Log receives a line per finished test and the phases' headings.
	Log io.Writer
}

// Files Run writes under OutDir.
const (
	LogFile     = "e2e.log"
	SummaryFile = "summary.md"
)

// ReportFile is the ginkgo JSON report of a phase; JUnitFile is the JUnit
// XML e2e.test itself writes for it (the file Sonobuoy collects).
func ReportFile(phase string) string { return "report_" + phase + ".json" }
func JUnitFile(phase string) string  { return "junit_" + phase + "_01.xml" }

// Run runs the selected tests against the cluster, phase by phase, and
// writes the summary. The error is for a run that could not happen or was
// interrupted; failed tests are in the summary (Summary.OK).
func Run(ctx context.Context, o Options) (*Summary, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if len(o.Tests) == 0 {
		return nil, errors.New("no conformance test selected")
	}
	var err error
	for _, p := range []*string{&o.OutDir, &o.Kubeconfig, &o.E2ETest, &o.Ginkgo, &o.Kubectl} {
		// ginkgo runs e2e.test in e2e.test's directory: every path it
		// is given must be absolute.
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return nil, err
			}
		}
	}
	if o.Kubeconfig != "" || !o.DryRun {
		if _, err := os.Stat(o.Kubeconfig); err != nil {
			return nil, fmt.Errorf("kubeconfig: %w", err)
		}
	}
	if o.DryRun {
		// ginkgo refuses --dry-run on several processes.
		o.Parallel = 1
	}
	if err := os.MkdirAll(filepath.Join(o.OutDir, "e2e-output"), 0o755); err != nil {
		return nil, err
	}
	phases := Phases(o.Tests, o.Parallel)
	for _, name := range []string{"parallel", "serial"} {
		// A stale report would stand for a phase that did not run.
		os.Remove(filepath.Join(o.OutDir, ReportFile(name)))
		os.Remove(filepath.Join(o.OutDir, JUnitFile(name)))
	}
	logf, err := os.Create(filepath.Join(o.OutDir, LogFile))
	if err != nil {
		return nil, err
	}
	defer logf.Close()

	start := time.Now()
	server := ""
	if !o.DryRun {
		server = serverVersion(ctx, o.Kubectl, o.Kubeconfig)
	}
	if server != "" {
		fmt.Fprintf(o.Log, "cluster: Kubernetes %s; suite: %s\n", server, o.KubernetesVersion)
	}

	prog := &progress{w: o.Log, total: len(o.Tests), width: len(fmt.Sprint(len(o.Tests)))}
	var results []PhaseResult
	var runErr error
	for _, ph := range phases {
		if ctx.Err() != nil {
			break
		}
		switch {
		case o.DryRun:
			fmt.Fprintf(o.Log, "dry run of the %s phase: %d tests\n", ph.Name, len(ph.Tests))
		case ph.Procs > 1:
			fmt.Fprintf(o.Log, "running %d tests on %d ginkgo processes\n", len(ph.Tests), ph.Procs)
		default:
			fmt.Fprintf(o.Log, "running %d [Serial] tests one by one\n", len(ph.Tests))
		}
		parser := newStreamParser(ph.Tests, prog.outcome)
		parser.onPlan = func(will, of int) {
			if will != len(ph.Tests) {
				fmt.Fprintf(o.Log, "warning: ginkgo will run %d specs, %d were selected: the names did not all match\n", will, len(ph.Tests))
			}
		}
		err := runPhase(ctx, o, ph, io.MultiWriter(logf, parser))
		parser.Close()
		rep, rerr := ReadReport(filepath.Join(o.OutDir, ReportFile(ph.Name)))
		if rerr != nil {
			rep = nil
			if err == nil {
				err = fmt.Errorf("the %s phase left no report: %w", ph.Name, rerr)
			}
		}
		results = append(results, PhaseResult{Tests: ph.Tests, Report: rep})
		if err != nil && runErr == nil {
			runErr = err
		}
	}
	// A phase that never started has its tests counted as failed.
	for _, ph := range phases[len(results):] {
		results = append(results, PhaseResult{Tests: ph.Tests})
	}
	sum := Summarize(results)
	sum.KubernetesVersion, sum.ServerVersion = o.KubernetesVersion, server
	sum.Started, sum.WallTime, sum.Sample, sum.DryRun = start, time.Since(start), o.Sample, o.DryRun
	if err := writeSummary(filepath.Join(o.OutDir, SummaryFile), sum); err != nil {
		return sum, err
	}
	if ctx.Err() != nil {
		return sum, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if runErr != nil && sum.OK() {
		// ginkgo failed, yet every test passed: say why, do not hide it.
		return sum, runErr
	}
	return sum, nil
}

// progress prints a line per finished test, counting over the phases:
// "[ 12/462] PASS [sig-network] Services should ... (4.2s)".
type progress struct {
	w            io.Writer
	total, width int
	done         int
}

func (p *progress) outcome(oc Outcome) {
	if oc.Suite {
		// A suite-level node is no test: no count, and only if it failed.
		if oc.State == "FAIL" {
			fmt.Fprintf(p.w, "%*s FAIL [%s] (%s)\n", 2*p.width+3, "", oc.Name, FormatDuration(oc.Duration))
		}
		return
	}
	p.done++
	state := oc.State
	if oc.Detail != "" {
		state += " (" + strings.ToLower(oc.Detail) + ")"
	}
	fmt.Fprintf(p.w, "[%*d/%d] %s %s (%s)\n", p.width, p.done, p.total, state, oc.Name, FormatDuration(oc.Duration))
}

// runPhase runs ginkgo once. A non-zero exit is not an error by itself:
// ginkgo exits 1 when a test fails, and the report says which.
func runPhase(ctx context.Context, o Options, ph Phase, out io.Writer) error {
	args := GinkgoArgs(o, ph)
	fmt.Fprintf(out, "# %s phase: %d tests\n# %s\n", ph.Name, len(ph.Tests), describeArgs(o.Ginkgo, args))
	cmd := exec.CommandContext(ctx, o.Ginkgo, args...)
	cmd.Dir = o.OutDir
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+o.Kubeconfig,
		"PATH="+filepath.Dir(o.Kubectl)+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = out, out
	// ginkgo leaves an interrupt to its test processes, which get it from
	// the terminal with it: give them a process group of their own and
	// interrupt the group, so that a signal to this program alone (make,
	// CI) stops the tests too and ginkgo still writes its reports. Kill
	// the group only if that takes too long.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = 2 * time.Minute
	err := cmd.Run()
	if ctx.Err() != nil && cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever is left of the group
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 && ctx.Err() == nil {
		return fmt.Errorf("ginkgo (%s phase) exited with status %d: see %s", ph.Name, ee.ExitCode(), filepath.Join(o.OutDir, LogFile))
	}
	if err != nil {
		return fmt.Errorf("ginkgo (%s phase): %w", ph.Name, err)
	}
	return nil
}

// GinkgoArgs are ginkgo's arguments for a phase: the flags upstream's
// conformance image gives (test/conformance/image/go-runner), the exact
// tests of the phase, reports under OutDir, and -v so that every finished
// spec shows in the stream.
func GinkgoArgs(o Options, ph Phase) []string {
	args := []string{
		"--focus=" + FocusRegexp(ph.Tests),
		"--no-color",
		"-v",
		// ginkgo v2's default suite timeout is 1h; upstream sets 24h.
		"--timeout=24h",
		"--output-dir=" + o.OutDir,
		"--json-report=" + ReportFile(ph.Name),
	}
	if ph.Procs > 1 {
		args = append(args, fmt.Sprintf("--procs=%d", ph.Procs))
	}
	if o.DryRun {
		args = append(args, "--dry-run")
	}
	args = append(args, o.E2ETest, "--")
	return append(args, E2EArgs(o, ph)...)
}

// E2EArgs are e2e.test's own flags for a phase.
func E2EArgs(o Options, ph Phase) []string {
	args := []string{
		"--kubeconfig=" + o.Kubeconfig,
		// skeleton: a cluster of no known cloud, as Sonobuoy runs it.
		"--provider=skeleton",
		"--report-dir=" + o.OutDir,
		"--report-prefix=" + ph.Name + "_",
		// Log dumps ssh into nodes with cluster/ scripts; not here.
		"--disable-log-dump",
		"--e2e-output-dir=" + filepath.Join(o.OutDir, "e2e-output"),
		"--kubectl-path=" + o.Kubectl,
		// E2E_VERBOSITY's default in the conformance image.
		"-v=4",
	}
	if o.RepoRoot != "" {
		args = append(args, "--repo-root="+o.RepoRoot)
	}
	return args
}

// describeArgs prints a command line for e2e.log with the focus, which
// lists every test name, shortened.
func describeArgs(prog string, args []string) string {
	var b strings.Builder
	b.WriteString(prog)
	for _, a := range args {
		if strings.HasPrefix(a, "--focus=") && len(a) > 200 {
			a = "--focus=<the phase's test names>"
		}
		b.WriteString(" " + a)
	}
	return b.String()
}

func writeSummary(path string, s *Summary) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := s.WriteMarkdown(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// serverVersion asks the cluster for its version; "" when it does not say.
func serverVersion(ctx context.Context, kubectl, kubeconfig string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig="+kubeconfig, "version", "-o", "json").Output()
	if err != nil && len(out) == 0 {
		return ""
	}
	var v struct {
		ServerVersion struct {
			GitVersion string `json:"gitVersion"`
		} `json:"serverVersion"`
	}
	if json.Unmarshal(out, &v) != nil {
		return ""
	}
	return v.ServerVersion.GitVersion
}
