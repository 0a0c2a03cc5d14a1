package console

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"testing"
	"time"
)

func TestRingKeepsLastLines(t *testing.T) {
	r := NewRing(3)
	fmt.Fprint(r, "a\nb\n")
	if got := r.Last(0); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("Last = %q", got)
	}
	fmt.Fprint(r, "c\nd")
	fmt.Fprint(r, "e\nf\n")
	if got, want := r.Last(0), []string{"c", "de", "f"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Last(0) = %q, want %q", got, want)
	}
	fmt.Fprint(r, "g\n")
	if got, want := r.Last(2), []string{"f", "g"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Last(2) = %q, want %q", got, want)
	}
}

func TestHandlerFormat(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf).With("phase", "system")
	log.Info("step done", "step", "mounts", "took", 1500*time.Microsecond)
	log.Error("cgroup missing", "err", errors.New("no memory controller"))
	log.Debug("hidden")
	log.WithGroup("svc").Warn("restart", slog.Int("n", 2))
	want := "ballast: step done phase=system step=mounts took=1.5ms\n" +
		"ballast: ERROR: cgroup missing phase=system err=\"no memory controller\"\n" +
		"ballast: WARNING: restart phase=system svc.n=2\n"
	if buf.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", buf.String(), want)
	}
}
