package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/ballast-os/ballast/conformance/suitebin"
	"github.com/ballast-os/ballast/conformance/suiterun"
)

func runRun(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "run", "[--kubeconfig FILE | --bed containers|qemu] [--out out/conformance] [--parallel N] [--focus REGEX] [--skip REGEX] [--quick] [--list | --dry-run]")
	var bf buildFlags
	bf.register(fs)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig `file` of the cluster under test (default: $KUBECONFIG; none: the run brings up its own, see --bed)")
	bed := fs.String("bed", "", "with no kubeconfig, the cluster the run brings up with the suite's images preloaded: `containers` (a server and an agent on the container test bed; the default) or qemu (one node booted from the default image; the default with --quick)")
	nodeImage := fs.String("node-image", "", "containers: the runtime's OCI image (default: out/ballast-cluster-test-x86_64.oci.tar of the checkout: make image-oci)")
	keep := fs.Bool("keep", false, "leave the cluster the run brought up running")
	out := fs.String("out", "out/conformance", "output `dir`: e2e.log, JUnit XML, JSON reports, summary.md")
	parallel := fs.Int("parallel", 0, "ginkgo processes for the tests that are not [Serial] (default: 2 per CPU, at least 4, on a cluster of containers or your own; 2 on the QEMU node, which TCG makes slow)")
	focus := fs.String("focus", "", "run only the conformance tests whose name matches `regex`")
	skip := fs.String("skip", "", "leave out the conformance tests whose name matches `regex`")
	quick := fs.Bool("quick", false, fmt.Sprintf("run the fixed quick sample: every %dth conformance test of each SIG", suiterun.QuickEvery))
	list := fs.Bool("list", false, "print the selected tests and exit: no cluster needed")
	dryRun := fs.Bool("dry-run", false, "walk the selected tests with ginkgo --dry-run, reports and summary included, without running them: no cluster needed")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sel := suiterun.Selection{Quick: *quick}
	var err error
	if sel.Focus, err = compile("focus", *focus); err != nil {
		return err
	}
	if sel.Skip, err = compile("skip", *skip); err != nil {
		return err
	}
	if *parallel < 0 {
		return fmt.Errorf("%w: --parallel must be at least 1", errUsage)
	}
	if *kubeconfig != "" && *bed != "" {
		return fmt.Errorf("%w: --kubeconfig and --bed: give one", errUsage)
	}
	if *bed == "" && *kubeconfig == "" {
		*bed = bedContainers
		if *quick {
			*bed = bedQEMU
		}
	}
	if *parallel == 0 {
		*parallel = defaultParallel(*bed)
	}
	if *bed != "" && *bed != bedContainers && *bed != bedQEMU {
		return fmt.Errorf("%w: --bed %q: want %s or %s", errUsage, *bed, bedContainers, bedQEMU)
	}

	suite, bo, err := bf.build(ctx, env)
	if err != nil {
		return err
	}
	all, err := suiterun.ListTests(ctx, suite.Path("e2e.test"))
	if err != nil {
		return err
	}
	if *bed == bedQEMU {
		sel.OneNode = true
		fmt.Fprintf(env.Stdout, "one node: left out %s\n", strings.Join(suiterun.NeedTwoNodes, "; "))
	}
	tests := suiterun.Select(all, sel)
	if len(tests) == 0 {
		return fmt.Errorf("%w: no conformance test matches the selection", errUsage)
	}
	sample := "full"
	switch {
	case *quick:
		sample = "quick sample"
	case *focus != "" || *skip != "":
		sample = "focused"
	}
	if *list {
		for _, t := range tests {
			fmt.Fprintln(env.Stdout, t.Name)
		}
		fmt.Fprintf(env.Stdout, "%d tests (%s)\n", len(tests), sample)
		return nil
	}

	if *dryRun {
		sample += ", dry run"
	}
	kc := *kubeconfig
	if kc != "" {
		kc = abs(env, kc)
	}
	outDir := abs(env, *out)
	var sum *suiterun.Summary
	if kc == "" && !*dryRun {
		repo := filepath.Dir(bo.ModuleDir)
		ni := *nodeImage
		if ni == "" {
			ni = filepath.Join(repo, "out", "ballast-cluster-test-x86_64.oci.tar")
		}
		b, err := startBed(ctx, env, bedOptions{kind: *bed, repo: repo, nodeImage: abs(env, ni), outDir: outDir, offline: bf.offline})
		if err != nil {
			return fmt.Errorf("bringing up the cluster: %w", err)
		}
		defer func() {
			if *keep {
				fmt.Fprintf(env.Stdout, "the cluster keeps running (--keep): kubeconfig %s\n", b.Kubeconfig)
				return
			}
			b.Close()
		}()
		kc = b.Kubeconfig
		defer func() {
			if sum != nil && !sum.OK() {
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				path := filepath.Join(outDir, "cluster", "logs.txt")
				if err := os.WriteFile(path, []byte(b.Diagnose(dctx)), 0o644); err == nil {
					fmt.Fprintf(env.Stdout, "the nodes' logs: %s\n", path)
				}
			}
		}()
	}
	sum, err = suiterun.Run(ctx, suiterun.Options{
		E2ETest:           suite.Path("e2e.test"),
		Ginkgo:            suite.Path("ginkgo"),
		Kubectl:           suite.Path("kubectl"),
		KubernetesVersion: suite.KubernetesVersion,
		Kubeconfig:        kc,
		DryRun:            *dryRun,
		OutDir:            outDir,
		Tests:             tests,
		Sample:            sample,
		Parallel:          *parallel,
		RepoRoot:          suitebin.KubernetesSource(ctx, bo),
		Log:               env.Stdout,
	})
	if sum != nil {
		printSummary(env, sum, outDir)
	}
	if err != nil {
		return err
	}
	if !sum.OK() {
		if n := sum.Total().Failed; n > 0 {
			return fmt.Errorf("%w: %d of %d", errFailed, n, len(tests))
		}
		return fmt.Errorf("%w: the suite failed outside its tests", errFailed)
	}
	return nil
}

// defaultParallel is a ginkgo process per CPU, and at least two: most
// conformance tests wait on the cluster, not on this machine.
// defaultParallel: the suite's tests mostly wait (for pods, for
// timeouts), so twice the CPUs keeps a machine busy: the full suite on the
// container bed ran with 4 processes on 2 cores in 45 minutes, without a
// kube-system pod restarting. A QEMU node under TCG is the bottleneck
// there: 2.
func defaultParallel(bed string) int {
	if bed == bedQEMU {
		return 2
	}
	return max(4, 2*runtime.NumCPU())
}

func compile(name, expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: --%s: %v", errUsage, name, err)
	}
	return re, nil
}

// printSummary shows the table and the failures on the terminal; the same
// is in summary.md.
func printSummary(env Env, s *suiterun.Summary, outDir string) {
	w := env.Stdout
	fmt.Fprintf(w, "\n%-22s %7s %7s %7s\n", "SIG", "passed", "failed", "skipped")
	rows := append(s.SIGs[:len(s.SIGs):len(s.SIGs)], s.Total())
	for _, c := range rows {
		fmt.Fprintf(w, "%-22s %7d %7d %7d\n", c.SIG, c.Passed, c.Failed, c.Skipped)
	}
	for i, f := range s.Failures {
		if i == 0 {
			fmt.Fprintf(w, "\nfailed:\n")
		}
		msg := f.Error
		if msg == "" {
			msg = "(no message)"
		}
		fmt.Fprintf(w, "  %s\n      %s\n", f.Name, strings.TrimSpace(msg+" "+parens(f.Location)))
	}
	fmt.Fprintf(w, "\nKubernetes %s conformance (%s): wall time %s; summary, JUnit and logs in %s\n",
		s.KubernetesVersion, s.Sample, suiterun.FormatDuration(s.WallTime), outDir)
}

func parens(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}
