package suiterun

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// testdata/report.json is a hand-written ginkgo JSON report of a parallel
// phase: a pass, a failure, a timeout, a test skipped at run time, a
// [Serial] test of the other phase and a non-conformance test (both listed
// as skipped, as ginkgo lists every spec it did not run), and a failed
// suite-level node, reported by each of two processes.
func TestReadReport(t *testing.T) {
	r, err := ReadReport("testdata/report.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Specs) != 9 {
		t.Fatalf("got %d specs, want 9", len(r.Specs))
	}
	got := r.Specs[2]
	want := SpecResult{
		Name:     "[sig-network] Services should serve a basic endpoint from pods [Conformance]",
		Node:     "It",
		State:    "failed",
		RunTime:  301 * time.Second,
		Error:    "failed to validate endpoints for service endpoint-test2: timed out waiting for the condition",
		Location: "e2e/network/service.go:802",
	}
	if got != want {
		t.Errorf("spec 2:\n got %+v\nwant %+v", got, want)
	}
	if s := r.Specs[0]; s.Name != "" || s.Node != "SynchronizedBeforeSuite" || !s.Passed() {
		t.Errorf("spec 0 = %+v, want the passed SynchronizedBeforeSuite", s)
	}
}

func TestReadReportRejectsOtherJSON(t *testing.T) {
	if _, err := ReadReport("testdata/ginkgo-parallel.txt"); err == nil {
		t.Fatal("no error for a file that is not a report")
	}
}

func TestSummarize(t *testing.T) {
	r, err := ReadReport("testdata/report.json")
	if err != nil {
		t.Fatal(err)
	}
	parallel := []Test{
		{Name: "[sig-node] Pods should get a host IP [NodeConformance] [Conformance]"},
		{Name: "[sig-network] Services should serve a basic endpoint from pods [Conformance]"},
		{Name: "[sig-network] DNS should provide DNS for the cluster [Conformance]"},
		{Name: "[sig-storage] Projected secret should be consumable from pods in volume [NodeConformance] [Conformance]"},
		// Selected, yet not in the report: the run stopped first.
		{Name: "[sig-cli] Kubectl client Kubectl version should check is all data is printed [Conformance]"},
	}
	// The serial phase never wrote a report; its test is in the parallel
	// phase's report as skipped, which must not count.
	serial := []Test{{Name: "[sig-apps] Daemon set [Serial] should rollback without unnecessary restarts [Conformance]"}}
	s := Summarize([]PhaseResult{{Tests: parallel, Report: r}, {Tests: serial}})

	wantRows := []SIGCount{
		{SIG: "sig-apps", Failed: 1},
		{SIG: "sig-cli", Failed: 1},
		{SIG: "sig-network", Failed: 2},
		{SIG: "sig-node", Passed: 1},
		{SIG: "sig-storage", Skipped: 1},
	}
	if !reflect.DeepEqual(s.SIGs, wantRows) {
		t.Errorf("rows:\n got %+v\nwant %+v", s.SIGs, wantRows)
	}
	if tot := s.Total(); tot != (SIGCount{SIG: "total", Passed: 1, Failed: 4, Skipped: 1}) {
		t.Errorf("total = %+v", tot)
	}
	wantFailures := []Failure{
		{Name: serial[0].Name, Error: noResult},
		{Name: parallel[4].Name, Error: noResult},
		{Name: parallel[2].Name, Error: "A suite timeout occurred", Location: "e2e/network/dns.go:50"},
		{Name: parallel[1].Name, Error: "failed to validate endpoints for service endpoint-test2: timed out waiting for the condition", Location: "e2e/network/service.go:802"},
		{Name: "[SynchronizedAfterSuite]", Error: "namespaces e2e-tests-1 were not deleted", Location: "test/e2e/e2e.go:80"},
	}
	if !reflect.DeepEqual(s.Failures, wantFailures) {
		t.Errorf("failures:\n got %+v\nwant %+v", s.Failures, wantFailures)
	}
	if s.OK() {
		t.Error("OK() with failures")
	}
}

func TestSummaryMarkdown(t *testing.T) {
	s := &Summary{
		KubernetesVersion: "v1.37.2",
		ServerVersion:     "v1.37.2",
		Started:           time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC),
		WallTime:          102*time.Minute + 3*time.Second,
		Sample:            "full",
		SIGs:              []SIGCount{{SIG: "sig-network", Passed: 46, Failed: 1}, {SIG: "sig-node", Passed: 103, Skipped: 1}},
		Failures:          []Failure{{Name: "[sig-network] Services should serve endpoints on same port and different protocols [Conformance]", Error: "dial tcp 10.43.0.12:80: `connect` refused", Location: "e2e/network/service.go:3001"}},
	}
	var b strings.Builder
	if err := s.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"- Suite: Kubernetes v1.37.2 [Conformance] tests, full: 151 tests\n",
		"- Cluster: API server v1.37.2\n",
		"- Started: 2026-12-07 08:00 UTC\n",
		"- Wall time: 1h42m3s\n",
		"- Result: **failed**: 1 failure(s)\n",
		"| SIG | passed | failed | skipped |\n| --- | ---: | ---: | ---: |\n| sig-network | 46 | 1 | 0 |\n| sig-node | 103 | 0 | 1 |\n| **total** | **149** | **1** | **1** |\n",
		"## Failures\n\n- [sig-network] Services should serve endpoints on same port and different protocols [Conformance]\n  `dial tcp 10.43.0.12:80: 'connect' refused (e2e/network/service.go:3001)`\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary.md lacks %q:\n%s", want, md)
		}
	}
}

func TestFirstLine(t *testing.T) {
	for in, want := range map[string]string{
		"\n  \nfailed to create pod: timeout\nmore":                                                "failed to create pod: timeout",
		"\x1b[1m\x1b[38;5;9mSynchronizedBeforeSuite failed on Ginkgo parallel process #1\x1b[0m\n": "SynchronizedBeforeSuite failed on Ginkgo parallel process #1",
		"": "",
	} {
		if got := FirstLine(in); got != want {
			t.Errorf("FirstLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		4213 * time.Millisecond:                    "4.2s",
		59 * time.Second:                           "59.0s",
		3*time.Minute + 12*time.Second + 1e8:       "3m12s",
		time.Hour + 42*time.Minute + 3*time.Second: "1h42m3s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
