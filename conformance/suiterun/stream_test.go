package suiterun

import (
	"os"
	"reflect"
	"testing"
	"time"
)

// The fixtures are real `ginkgo -v --no-color` output of a small suite
// shaped like e2e's (testdata/ginkgo-*.txt), on three processes and on one.
var fixtureTests = []Test{
	{Name: "[sig-node] Pods should pass [NodeConformance] [Conformance]"},
	{Name: "[sig-node] Pods should fail [Conformance]"},
	{Name: "[sig-node] Pods should be skipped [Conformance]"},
	{Name: "[sig-network] DNS should resolve [Conformance]"},
	{Name: "[sig-apps] Daemon set [Serial] should run serially [Conformance]"},
	{Name: "[sig-apps] Daemon set [Serial] should fail serially [Conformance]"},
}

func parseFixture(t *testing.T, file string, chunk int) ([]Outcome, []int) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var got []Outcome
	var plan []int
	p := newStreamParser(fixtureTests, func(o Outcome) { got = append(got, o) })
	p.onPlan = func(will, of int) { plan = append(plan, will, of) }
	for len(data) > 0 {
		n := min(chunk, len(data))
		p.Write(data[:n])
		data = data[n:]
	}
	p.Close()
	return got, plan
}

func TestStreamParallel(t *testing.T) {
	want := []Outcome{
		{Name: "[sig-network] DNS should resolve [Conformance]", State: "FAIL", Duration: time.Millisecond},
		{Name: "[sig-node] Pods should fail [Conformance]", State: "FAIL", Duration: 3 * time.Millisecond},
		{Name: "[sig-node] Pods should be skipped [Conformance]", State: "SKIP"},
		{Name: "[sig-node] Pods should pass [NodeConformance] [Conformance]", State: "PASS", Duration: 301 * time.Millisecond},
		{Name: "ReportAfterSuite", State: "PASS", Duration: 3 * time.Millisecond, Suite: true},
	}
	// Whole, and in pieces that split lines and the "•" rune.
	for _, chunk := range []int{1 << 20, 7, 1} {
		got, plan := parseFixture(t, "testdata/ginkgo-parallel.txt", chunk)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("chunk %d:\n got %+v\nwant %+v", chunk, got, want)
		}
		if !reflect.DeepEqual(plan, []int{4, 7}) {
			t.Errorf("plan = %v, want [4 7]", plan)
		}
	}
}

func TestStreamSerial(t *testing.T) {
	// On one process ginkgo names a passing spec only when it starts.
	want := []Outcome{
		{Name: "[sig-apps] Daemon set [Serial] should run serially [Conformance]", State: "PASS", Duration: 100 * time.Millisecond},
		{Name: "[sig-apps] Daemon set [Serial] should fail serially [Conformance]", State: "FAIL", Duration: time.Millisecond},
		{Name: "[sig-node] Pods should be skipped [Conformance]", State: "SKIP"},
		{Name: "ReportAfterSuite", State: "PASS", Duration: 2 * time.Millisecond, Suite: true},
	}
	got, _ := parseFixture(t, "testdata/ginkgo-serial.txt", 1<<20)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("\n got %+v\nwant %+v", got, want)
	}
}

func TestStreamHeaders(t *testing.T) {
	name := "[sig-node] Pods should fail [Conformance]"
	for _, c := range []struct {
		header string
		want   Outcome
	}{
		{"• [PANICKED] [1.500 seconds]", Outcome{State: "FAIL", Detail: "PANICKED", Duration: 1500 * time.Millisecond}},
		{"• [TIMEDOUT] [600.000 seconds]", Outcome{State: "FAIL", Detail: "TIMEDOUT", Duration: 600 * time.Second}},
		{"• [INTERRUPTED] [2.000 seconds]", Outcome{State: "FAIL", Detail: "INTERRUPTED", Duration: 2 * time.Second}},
		{"↺ [FLAKEY TEST - TOOK 2 ATTEMPTS TO PASS] [3.000 seconds]", Outcome{State: "PASS", Duration: 3 * time.Second}},
		{"[SynchronizedBeforeSuite] [FAILED] [30.000 seconds]", Outcome{Name: "SynchronizedBeforeSuite", State: "FAIL", Duration: 30 * time.Second, Suite: true}},
	} {
		var got []Outcome
		p := newStreamParser(fixtureTests, func(o Outcome) { got = append(got, o) })
		p.Write([]byte(c.header + "\n[sig-node] Pods [It] should fail [Conformance] [Conformance]\n"))
		p.Close()
		want := c.want
		if !want.Suite {
			want.Name = name
		}
		if len(got) != 1 || got[0] != want {
			t.Errorf("%q: got %+v, want %+v", c.header, got, want)
		}
	}
}

func TestStreamIgnoresNoise(t *testing.T) {
	var got []Outcome
	p := newStreamParser(fixtureTests, func(o Outcome) { got = append(got, o) })
	p.Write([]byte("SSSSSSSSS\nRunning in parallel across 2 processes\n  • [1.0 seconds]\n[sig-node] Pods should fail [Conformance]\n"))
	p.Close()
	if len(got) != 0 {
		t.Errorf("got %+v, want nothing", got)
	}
}
