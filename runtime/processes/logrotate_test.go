package processes

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRotateLog(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "kubelet.log")
	// A writer that keeps its O_APPEND descriptor across the rotation, as
	// a component process does.
	w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for gen := 1; gen <= 3; gen++ {
		w.Write(bytes.Repeat([]byte{byte('0' + gen)}, 100))
		rotated, err := RotateLog(p, 50, 2)
		if err != nil || !rotated {
			t.Fatalf("generation %d: rotated %v, %v", gen, rotated, err)
		}
	}
	if rotated, err := RotateLog(p, 50, 2); rotated || err != nil {
		t.Errorf("an empty log rotated: %v, %v", rotated, err)
	}
	w.Write([]byte("after\n"))
	for name, want := range map[string]string{
		"kubelet.log":   "after\n",
		"kubelet.log.1": strings.Repeat("3", 100),
		"kubelet.log.2": strings.Repeat("2", 100),
	} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := os.Stat(p + ".3"); !os.IsNotExist(err) {
		t.Errorf("a third copy was kept: %v", err)
	}
	if rotated, err := RotateLog(filepath.Join(dir, "absent.log"), 50, 2); rotated || err != nil {
		t.Errorf("a missing log: %v, %v", rotated, err)
	}
}

// The runner rotates a component's log while it runs.
func TestRunnerRotatesLogs(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "chatty.log")
	s := &Runner{
		Components: []Component{{Name: "chatty", LogFile: logFile, Run: func(ctx context.Context, log io.Writer) error {
			for ctx.Err() == nil {
				log.Write(bytes.Repeat([]byte("x"), 1000))
				time.Sleep(5 * time.Millisecond)
			}
			return nil
		}}},
		MaxLogSize: 4000, KeepLogs: 1, LogCheckInterval: 20 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, "a rotated copy", func() bool { _, err := os.Stat(logFile + ".1"); return err == nil })
	cancel()
	<-done
	if fi, err := os.Stat(logFile); err != nil || fi.Size() > 20000 {
		t.Errorf("log not kept small: %v, %v", fi, err)
	}
}
