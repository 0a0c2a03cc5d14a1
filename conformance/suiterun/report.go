package suiterun

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
	"time"
)

// SpecResult is one spec's end, from ginkgo's JSON report.
type SpecResult struct {
	Name string
	// Node is ginkgo's node type: "It" for a test, else a suite-level
	// node such as "SynchronizedBeforeSuite".
	Node string
	// State is ginkgo's: passed, skipped, pending, failed, panicked,
	// timedout, interrupted, aborted.
	State    string
	RunTime  time.Duration
	Error    string // the failure message's first line, "" when none
	Location string // where it failed, "file.go:123"
}

// Passed, Skipped and Failed sort a state into the summary's columns:
// anything that is neither a pass nor a skip is a failure.
func (r SpecResult) Passed() bool  { return r.State == "passed" }
func (r SpecResult) Skipped() bool { return r.State == "skipped" || r.State == "pending" }
func (r SpecResult) Failed() bool  { return !r.Passed() && !r.Skipped() }

// jsonReport is the part of ginkgo's JSON report (--json-report: a list of
// types.Report, one per suite) that the summary reads.
type jsonReport struct {
	SuiteDescription           string
	SuiteSucceeded             bool
	SpecialSuiteFailureReasons []string
	SpecReports                []struct {
		ContainerHierarchyTexts []string
		LeafNodeType            string
		LeafNodeText            string
		State                   string
		RunTime                 time.Duration // nanoseconds
		Failure                 *struct {
			Message  string
			Location struct {
				FileName   string
				LineNumber int
			}
		}
	}
}

// Report is what a ginkgo JSON report says about a run.
type Report struct {
	Specs []SpecResult
	// SuiteFailures are reasons ginkgo gives for a whole suite failing
	// outside any spec (a timeout, an interrupt).
	SuiteFailures []string
}

// ReadReport reads a ginkgo JSON report file.
func ReadReport(file string) (*Report, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var reports []jsonReport
	if err := json.Unmarshal(data, &reports); err != nil {
		return nil, fmt.Errorf("%s: not a ginkgo JSON report: %w", file, err)
	}
	r := &Report{}
	for _, rep := range reports {
		r.SuiteFailures = append(r.SuiteFailures, rep.SpecialSuiteFailureReasons...)
		for _, s := range rep.SpecReports {
			var texts []string
			for _, t := range append(s.ContainerHierarchyTexts, s.LeafNodeText) {
				if t != "" {
					texts = append(texts, t)
				}
			}
			res := SpecResult{
				Name:    strings.Join(texts, " "),
				Node:    s.LeafNodeType,
				State:   s.State,
				RunTime: s.RunTime,
			}
			if f := s.Failure; f != nil {
				res.Error = FirstLine(f.Message)
				if f.Location.FileName != "" {
					res.Location = fmt.Sprintf("%s:%d", shortPath(f.Location.FileName), f.Location.LineNumber)
				}
			}
			r.Specs = append(r.Specs, res)
		}
	}
	return r, nil
}

// ansiEscape is a terminal colour code: ginkgo colours some of the
// messages it makes itself even under --no-color.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// FirstLine returns the first line of s that is not blank, trimmed and
// without colour codes.
func FirstLine(s string) string {
	s = ansiEscape.ReplaceAllString(s, "")
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}

// shortPath keeps a source path's last three elements: enough to find the
// file in k8s.io/kubernetes ("e2e/network/service.go").
func shortPath(p string) string {
	parts := strings.Split(path.Clean(p), "/")
	if len(parts) > 3 {
		parts = parts[len(parts)-3:]
	}
	return strings.Join(parts, "/")
}
