package suiterun

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Summary is a run's result: per SIG and in all.
type Summary struct {
	// KubernetesVersion is the suite's (k8s.io/kubernetes in go.mod).
	KubernetesVersion string
	// ServerVersion is the cluster's, as its API server reports it; ""
	// when it could not be asked.
	ServerVersion string
	Started       time.Time
	WallTime      time.Duration
	// Sample describes the selection: "full", "quick sample", "focused".
	Sample string
	// DryRun: ginkgo walked the tests without running them.
	DryRun bool
	SIGs   []SIGCount
	// Failures are the failed tests, by name, then the suite-level ones.
	Failures []Failure
}

// SIGCount is one row of the summary.
type SIGCount struct {
	SIG                     string
	Passed, Failed, Skipped int
}

// Failure is a failed test or a failure outside any test.
type Failure struct {
	Name     string
	Error    string
	Location string
}

// Total returns the sum of all rows.
func (s *Summary) Total() SIGCount {
	t := SIGCount{SIG: "total"}
	for _, c := range s.SIGs {
		t.Passed += c.Passed
		t.Failed += c.Failed
		t.Skipped += c.Skipped
	}
	return t
}

// OK reports whether nothing failed.
func (s *Summary) OK() bool { return len(s.Failures) == 0 }

// PhaseResult is a phase's selected tests and the report of its ginkgo run
// (nil when ginkgo wrote none).
type PhaseResult struct {
	Tests  []Test
	Report *Report
}

// noResult is the error of a selected test that no report mentions: the
// run was stopped, or the suite failed before any test (see the failures
// outside tests).
const noResult = "no result: ginkgo reported nothing for this test"

// Summarize counts each phase's tests by the phase's own report: every
// report lists every spec of the suite, and a test of the other phase, or
// one not selected, is there as skipped. A selected test that the report
// does not have as passed or skipped counts as failed, missing ones too.
func Summarize(phases []PhaseResult) *Summary {
	s := &Summary{}
	rows := map[string]*SIGCount{}
	var suiteFailures []Failure
	for _, ph := range phases {
		results := map[string]SpecResult{}
		if ph.Report != nil {
			for _, r := range ph.Report.Specs {
				if r.Node != "It" {
					if r.Failed() {
						name := strings.TrimSpace("[" + r.Node + "] " + r.Name)
						suiteFailures = append(suiteFailures, Failure{Name: name, Error: r.Error, Location: r.Location})
					}
					continue
				}
				results[r.Name] = r
			}
			for _, reason := range ph.Report.SuiteFailures {
				suiteFailures = append(suiteFailures, Failure{Name: "the suite", Error: FirstLine(reason)})
			}
		}
		for _, t := range ph.Tests {
			sig := t.SIG()
			if sig == "" {
				sig = "(no SIG)"
			}
			row := rows[sig]
			if row == nil {
				row = &SIGCount{SIG: sig}
				rows[sig] = row
			}
			r, ok := results[t.Name]
			switch {
			case ok && r.Passed():
				row.Passed++
			case ok && r.Skipped():
				row.Skipped++
			case ok:
				row.Failed++
				s.Failures = append(s.Failures, Failure{Name: t.Name, Error: r.Error, Location: r.Location})
			default:
				row.Failed++
				s.Failures = append(s.Failures, Failure{Name: t.Name, Error: noResult})
			}
		}
	}
	for _, row := range rows {
		s.SIGs = append(s.SIGs, *row)
	}
	sort.Slice(s.SIGs, func(i, j int) bool { return s.SIGs[i].SIG < s.SIGs[j].SIG })
	sort.Slice(s.Failures, func(i, j int) bool { return s.Failures[i].Name < s.Failures[j].Name })
	// Each ginkgo process runs the suite-level nodes and reports their
	// failure: say it once.
	seen := map[Failure]bool{}
	for _, f := range suiteFailures {
		if !seen[f] {
			seen[f] = true
			s.Failures = append(s.Failures, f)
		}
	}
	return s
}

// WriteMarkdown writes the summary as summary.md has it.
func (s *Summary) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	t := s.Total()
	fmt.Fprintf(&b, "# Kubernetes conformance\n\n")
	fmt.Fprintf(&b, "- Suite: Kubernetes %s [Conformance] tests, %s: %d tests\n", s.KubernetesVersion, orDefault(s.Sample, "full"), t.Passed+t.Failed+t.Skipped)
	if s.ServerVersion != "" {
		fmt.Fprintf(&b, "- Cluster: API server %s\n", s.ServerVersion)
	}
	if !s.Started.IsZero() {
		fmt.Fprintf(&b, "- Started: %s\n", s.Started.UTC().Format("2006-01-02 15:04 UTC"))
	}
	fmt.Fprintf(&b, "- Wall time: %s\n", FormatDuration(s.WallTime))
	verdict := "**passed**"
	switch {
	case s.DryRun:
		verdict = "dry run: no test ran"
	case !s.OK():
		verdict = fmt.Sprintf("**failed**: %d failure(s)", len(s.Failures))
	}
	fmt.Fprintf(&b, "- Result: %s\n\n", verdict)

	fmt.Fprintf(&b, "| SIG | passed | failed | skipped |\n| --- | ---: | ---: | ---: |\n")
	for _, c := range s.SIGs {
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", c.SIG, c.Passed, c.Failed, c.Skipped)
	}
	fmt.Fprintf(&b, "| **total** | **%d** | **%d** | **%d** |\n", t.Passed, t.Failed, t.Skipped)

	if len(s.Failures) > 0 {
		fmt.Fprintf(&b, "\n## Failures\n\n")
		for _, f := range s.Failures {
			fmt.Fprintf(&b, "- %s\n", f.Name)
			msg := orDefault(f.Error, "(no message)")
			if f.Location != "" {
				msg += " (" + f.Location + ")"
			}
			fmt.Fprintf(&b, "  `%s`\n", strings.ReplaceAll(msg, "`", "'"))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// FormatDuration writes a run time for people: "4.2s", "3m12s", "1h42m3s".
func FormatDuration(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}
