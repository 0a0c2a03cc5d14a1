// Package suiterun runs the upstream Kubernetes [Conformance] tests against
// a cluster the way Sonobuoy and hydrophone do: ginkgo runs e2e.test with
// the tests that may share the cluster on several processes, then the
// [Serial] ones on one; a line per finished test; JUnit XML, ginkgo's JSON
// report and a summary per SIG under the output directory.
//
// It drives programs that suitebin builds and never imports Kubernetes:
// the test names come from `e2e.test --list-tests`, the results from
// ginkgo's report files and its output stream.
package suiterun

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Test is one spec of the e2e suite.
type Test struct {
	// Name is the spec's full text, as `e2e.test --list-tests` prints it
	// and as ginkgo matches --focus against it, e.g. "[sig-node] Pods
	// should get a host IP [NodeConformance] [Conformance]".
	Name string
	// Location is the source file and line of the spec, "file.go:123".
	Location string
}

var sigTag = regexp.MustCompile(`\[(sig-[a-z0-9-]+)\]`)

// SIG returns the special interest group that owns the test ("sig-node"),
// from the first [sig-...] tag in its name; "" when it has none.
func (t Test) SIG() string {
	if m := sigTag.FindStringSubmatch(t.Name); m != nil {
		return m[1]
	}
	return ""
}

// Serial reports whether the test must run alone on the cluster.
func (t Test) Serial() bool { return strings.Contains(t.Name, "[Serial]") }

// Conformance reports whether the test belongs to the conformance suite.
func (t Test) Conformance() bool { return strings.Contains(t.Name, "[Conformance]") }

// ListTests asks e2e.test for every spec it holds. It needs no cluster.
func ListTests(ctx context.Context, e2eTest string) ([]Test, error) {
	cmd := exec.CommandContext(ctx, e2eTest, "--list-tests")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-tests: %w\n%s", e2eTest, err, stderr.String())
	}
	tests, err := ParseTestList(bytes.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("%s --list-tests: %w", e2eTest, err)
	}
	return tests, nil
}

// listLine is one spec in `e2e.test --list-tests`: indented
// "path/file.go:123: full name".
var listLine = regexp.MustCompile(`^\s+(\S+\.go:\d+): (.+)$`)

// ParseTestList reads the output of `e2e.test --list-tests`. Lines that
// name no spec (the heading) are skipped; a list without a single spec is
// an error.
func ParseTestList(r io.Reader) ([]Test, error) {
	var tests []Test
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m := listLine.FindStringSubmatch(sc.Text()); m != nil {
			tests = append(tests, Test{Name: m[2], Location: m[1]})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(tests) == 0 {
		return nil, fmt.Errorf("no tests listed")
	}
	return tests, nil
}

// Selection says which conformance tests a run runs.
type Selection struct {
	// Focus keeps only the tests whose name it matches; nil keeps all.
	Focus *regexp.Regexp
	// Skip drops the tests whose name it matches; nil drops none.
	Skip *regexp.Regexp
	// Quick starts from QuickSample instead of every conformance test.
	Quick bool
	// OneNode leaves out NeedTwoNodes: the cluster has a single node.
	OneNode bool
}

// NeedTwoNodes are the conformance tests that fail by design on a
// one-node cluster (the suite asks for two schedulable nodes; the others
// that need two skip themselves on one). The one-node quick run leaves
// them out; the full run on the container bed has two nodes and runs them.
var NeedTwoNodes = []string{
	"[sig-architecture] Conformance Tests should have at least two untainted nodes [Conformance]",
}

// Select returns the conformance tests of all that s selects, sorted by
// name. Focus and Skip match the name as ParseTestList has it (ginkgo
// itself would match "Kubernetes e2e suite " + name).
func Select(all []Test, s Selection) []Test {
	var tests []Test
	for _, t := range all {
		if t.Conformance() {
			tests = append(tests, t)
		}
	}
	sortByName(tests)
	if s.Quick {
		tests = QuickSample(tests)
	}
	var out []Test
	for _, t := range tests {
		if s.Focus != nil && !s.Focus.MatchString(t.Name) {
			continue
		}
		if s.Skip != nil && s.Skip.MatchString(t.Name) {
			continue
		}
		if s.OneNode && slices.Contains(NeedTwoNodes, t.Name) {
			continue
		}
		out = append(out, t)
	}
	return out
}

// QuickEvery is the quick sample's stride: every 7th conformance test of
// each SIG. At v1.37.2 that is 70 of the 462 tests, 4 of them [Serial].
const QuickEvery = 7

// QuickSample is the fixed sample `--quick` runs: within each SIG, the
// tests sorted by name, the first and then every QuickEvery-th. Taking it
// per SIG keeps every SIG in the sample (sig-architecture has one test)
// and its share close to the SIG's share of the suite; sorting by name
// makes it the same sample on every machine and every run, and a test
// added upstream moves it only within its own SIG.
func QuickSample(tests []Test) []Test {
	bySIG := map[string][]Test{}
	for _, t := range tests {
		bySIG[t.SIG()] = append(bySIG[t.SIG()], t)
	}
	var out []Test
	for _, ts := range bySIG {
		sortByName(ts)
		for i := 0; i < len(ts); i += QuickEvery {
			out = append(out, ts[i])
		}
	}
	sortByName(out)
	return out
}

func sortByName(tests []Test) {
	sort.SliceStable(tests, func(i, j int) bool { return tests[i].Name < tests[j].Name })
}

// FocusRegexp matches exactly the given tests in ginkgo's --focus, which
// sees "<suite description> <full name>": each name is quoted and must end
// the text, after a space. Go's regexp factors the names' common prefixes,
// so even all 462 compile and match quickly.
func FocusRegexp(tests []Test) string {
	names := make([]string, len(tests))
	for i, t := range tests {
		names[i] = regexp.QuoteMeta(t.Name)
	}
	sort.Strings(names)
	return " (?:" + strings.Join(names, "|") + ")$"
}

// Phase is one ginkgo run: the tests that may share the cluster, on several
// processes, or the [Serial] ones, alone.
type Phase struct {
	Name  string // "parallel" or "serial"
	Tests []Test
	Procs int
}

// Phases splits tests into the parallel phase (on procs processes) and the
// serial one, leaving out a phase without tests.
func Phases(tests []Test, procs int) []Phase {
	if procs < 1 {
		procs = 1
	}
	par := Phase{Name: "parallel", Procs: procs}
	ser := Phase{Name: "serial", Procs: 1}
	for _, t := range tests {
		if t.Serial() {
			ser.Tests = append(ser.Tests, t)
		} else {
			par.Tests = append(par.Tests, t)
		}
	}
	var out []Phase
	for _, p := range []Phase{par, ser} {
		if len(p.Tests) > 0 {
			out = append(out, p)
		}
	}
	return out
}
