package suiterun

import (
	"math/rand"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// testdata/list-tests-v1.37.2.txt is `e2e.test --list-tests` of the suite
// this module pins, cut to its 462 [Conformance] tests and a few others.
func listFixture(t *testing.T) []Test {
	t.Helper()
	f, err := os.Open("testdata/list-tests-v1.37.2.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests, err := ParseTestList(f)
	if err != nil {
		t.Fatal(err)
	}
	return tests
}

func TestParseTestList(t *testing.T) {
	in := `The following spec names can be used with 'ginkgo run --focus/skip':
    test/e2e/apps/daemon_set.go:432: [sig-apps] Daemon set [Serial] should rollback without unnecessary restarts [Conformance]
    test/e2e/common/node/pods.go:205: [sig-node] Pods should get a host IP [NodeConformance] [Conformance]
    test/e2e/storage/csi_mock/csi_attach_volume.go:70: [sig-storage] CSI Mock volume attach CSI attach test using mock driver should require VolumeAttach for drivers with attachment

`
	got, err := ParseTestList(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Test{
		{Name: "[sig-apps] Daemon set [Serial] should rollback without unnecessary restarts [Conformance]", Location: "test/e2e/apps/daemon_set.go:432"},
		{Name: "[sig-node] Pods should get a host IP [NodeConformance] [Conformance]", Location: "test/e2e/common/node/pods.go:205"},
		{Name: "[sig-storage] CSI Mock volume attach CSI attach test using mock driver should require VolumeAttach for drivers with attachment", Location: "test/e2e/storage/csi_mock/csi_attach_volume.go:70"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if got[0].SIG() != "sig-apps" || !got[0].Serial() || !got[0].Conformance() || got[1].Serial() || got[2].Conformance() {
		t.Errorf("SIG/Serial/Conformance wrong: %+v", got)
	}
	if _, err := ParseTestList(strings.NewReader("flag provided but not defined: -list-tests\n")); err == nil {
		t.Error("no error for output without tests")
	}
}

func TestSelectConformance(t *testing.T) {
	all := listFixture(t)
	tests := Select(all, Selection{})
	if len(tests) != 462 {
		t.Errorf("%d conformance tests, want 462 (v1.37.2)", len(tests))
	}
	serial := 0
	for _, tt := range tests {
		if !tt.Conformance() {
			t.Errorf("selected %q", tt.Name)
		}
		if tt.Serial() {
			serial++
		}
	}
	if serial != 29 {
		t.Errorf("%d [Serial] tests, want 29", serial)
	}
	focused := Select(all, Selection{Focus: regexp.MustCompile(`^\[sig-network\]`), Skip: regexp.MustCompile(`DNS`)})
	for _, tt := range focused {
		if tt.SIG() != "sig-network" || strings.Contains(tt.Name, "DNS") {
			t.Errorf("focus/skip selected %q", tt.Name)
		}
	}
	if len(focused) == 0 || len(focused) >= 47 {
		t.Errorf("%d sig-network tests without DNS, want some of the 47", len(focused))
	}
}

// On one node, the tests that need two are left out, and only those.
func TestSelectOneNode(t *testing.T) {
	all := listFixture(t)
	full := Select(all, Selection{Quick: true})
	one := Select(all, Selection{Quick: true, OneNode: true})
	if len(one) != len(full)-len(NeedTwoNodes) {
		t.Errorf("one node: %d tests of %d, want %d left out", len(one), len(full), len(NeedTwoNodes))
	}
	for _, tt := range one {
		if slices.Contains(NeedTwoNodes, tt.Name) {
			t.Errorf("one node: %q selected", tt.Name)
		}
	}
}

func TestQuickSample(t *testing.T) {
	all := listFixture(t)
	quick := Select(all, Selection{Quick: true})
	if len(quick) < 60 {
		t.Fatalf("quick sample has %d tests, want at least 60", len(quick))
	}
	// Pinned: a change here changes how long `make conformance QUICK=1`
	// takes; update the README's figure with it.
	if len(quick) != 70 {
		t.Errorf("quick sample has %d tests, want 70 at v1.37.2", len(quick))
	}

	// Every SIG is in it, in proportion.
	suite, sample := map[string]int{}, map[string]int{}
	for _, tt := range Select(all, Selection{}) {
		suite[tt.SIG()]++
	}
	for _, tt := range quick {
		sample[tt.SIG()]++
		if !tt.Conformance() {
			t.Errorf("not a conformance test: %q", tt.Name)
		}
	}
	for sig, n := range suite {
		if want := (n + QuickEvery - 1) / QuickEvery; sample[sig] != want {
			t.Errorf("%s: %d of its %d tests sampled, want %d", sig, sample[sig], n, want)
		}
	}
	if len(sample) != len(suite) || len(suite) != 10 {
		t.Errorf("sample has %d SIGs, the suite %d (want 10)", len(sample), len(suite))
	}

	// The same sample whatever the order e2e.test lists the tests in.
	r := rand.New(rand.NewSource(1))
	for range 5 {
		shuffled := append([]Test(nil), all...)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if again := Select(shuffled, Selection{Quick: true}); !reflect.DeepEqual(again, quick) {
			t.Fatal("the sample depends on the order of the list")
		}
	}

	// Both phases have tests, so a quick run goes through both.
	phases := Phases(quick, 2)
	if len(phases) != 2 || phases[0].Name != "parallel" || phases[1].Name != "serial" {
		t.Errorf("phases of the sample: %+v", phases)
	}
}

func TestFocusRegexp(t *testing.T) {
	all := listFixture(t)
	tests := Select(all, Selection{})
	re := regexp.MustCompile(FocusRegexp(tests))
	for _, tt := range all {
		// What ginkgo matches: the suite's description, a space, the name.
		if got := re.MatchString("Kubernetes e2e suite " + tt.Name); got != tt.Conformance() {
			t.Errorf("focus matches %q: %v", tt.Name, got)
		}
	}
	one := regexp.MustCompile(FocusRegexp(tests[:1]))
	for _, s := range []string{
		"Kubernetes e2e suite " + tests[1].Name,
		"Kubernetes e2e suite " + tests[0].Name + " and more",
		"Kubernetes e2e suite x" + tests[0].Name,
	} {
		if one.MatchString(s) {
			t.Errorf("focus on one test matches %q", s)
		}
	}
}

func TestPhases(t *testing.T) {
	tests := []Test{
		{Name: "[sig-apps] Daemon set [Serial] should rollback [Conformance]"},
		{Name: "[sig-node] Pods should get a host IP [Conformance]"},
		{Name: "[sig-scheduling] SchedulerPredicates [Serial] validates [Conformance]"},
	}
	got := Phases(tests, 4)
	want := []Phase{
		{Name: "parallel", Procs: 4, Tests: tests[1:2]},
		{Name: "serial", Procs: 1, Tests: []Test{tests[0], tests[2]}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if got := Phases(tests[1:2], 0); len(got) != 1 || got[0].Procs != 1 {
		t.Errorf("no serial tests: %+v", got)
	}
}
