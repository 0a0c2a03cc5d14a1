//go:build linux

package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
)

func TestOpenVirtioPort(t *testing.T) {
	sys := t.TempDir()
	dev := t.TempDir()
	for port, name := range map[string]string{"vport0p0": "org.qemu.console", "vport1p1": PortName} {
		os.MkdirAll(filepath.Join(sys, port), 0o755)
		os.WriteFile(filepath.Join(sys, port, "name"), []byte(name+"\n"), 0o644)
		os.WriteFile(filepath.Join(sys, port, "dev"), []byte("251:1\n"), 0o644)
	}
	// The node exists: it is opened.
	os.WriteFile(filepath.Join(dev, "vport1p1"), nil, 0o600)
	f, err := openVirtioPort(sys, dev, PortName)
	if err != nil {
		t.Fatalf("openVirtioPort: %v", err)
	}
	if f.Name() != filepath.Join(dev, "vport1p1") {
		t.Errorf("opened %s, want %s", f.Name(), filepath.Join(dev, "vport1p1"))
	}
	f.Close()

	if _, err := openVirtioPort(sys, dev, "org.example.other"); !errors.Is(err, ErrNoPort) {
		t.Errorf("missing port: err = %v, want ErrNoPort", err)
	}
	if _, err := openVirtioPort(filepath.Join(sys, "nope"), dev, PortName); !errors.Is(err, ErrNoPort) {
		t.Errorf("no virtio-ports directory: err = %v, want ErrNoPort", err)
	}
}

func TestOpenVirtioPortMknod(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mknod needs root") // runs in CI, which is root
	}
	sys := t.TempDir()
	dev := t.TempDir()
	os.MkdirAll(filepath.Join(sys, "vport2p1"), 0o755)
	os.WriteFile(filepath.Join(sys, "vport2p1", "name"), []byte(PortName+"\n"), 0o644)
	// 1:3 is /dev/null, so the created node can be opened here.
	os.WriteFile(filepath.Join(sys, "vport2p1", "dev"), []byte("1:3\n"), 0o644)
	f, err := openVirtioPort(sys, dev, PortName)
	if err != nil {
		t.Fatalf("openVirtioPort: %v", err)
	}
	f.Close()
	fi, err := os.Stat(filepath.Join(dev, "vport2p1"))
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("created node: %v, %v; want a character device", fi, err)
	}
}

// TestServePortReconnects plays a host that connects, disconnects and
// connects again: each connection is served from a fresh open.
func TestServePortReconnects(t *testing.T) {
	conns := make(chan *os.File)
	var opens atomic.Int32
	open := func() (*os.File, error) {
		opens.Add(1)
		select {
		case f := <-conns:
			return f, nil
		default:
			return nil, ErrNoPort
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- servePort(ctx, &fakeHandler{}, t.Logf, open) }()

	for i := range 3 {
		guest, host := socketPair(t)
		conns <- guest
		c := NewClient(host)
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		if err := c.Ping(pctx); err != nil {
			t.Fatalf("connection %d: Ping: %v", i, err)
		}
		pcancel()
		c.Close() // the host goes away; the guest reads EOF
	}
	// After the last connection ends, the port is polled again; wait for
	// that before cancelling (on a loaded machine the cancel could win).
	for deadline := time.Now().Add(5 * time.Second); opens.Load() < 4 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("servePort returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("servePort did not return after ctx was cancelled")
	}
	if opens.Load() < 4 {
		t.Errorf("port opened %d times, want a poll after each connection", opens.Load())
	}
}

// socketPair returns the two ends of a unix stream socket pair, the
// guest's as an *os.File like a virtio port.
func socketPair(t *testing.T) (*os.File, net.Conn) {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	host, err := net.Dial("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := g.(*net.UnixConn).File()
	g.Close()
	if err != nil {
		t.Fatal(err)
	}
	return f, host
}

func TestServeListener(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveListener(ctx, l, &fakeHandler{}, nil) }()
	for range 2 {
		c, err := Dial(ctx, "unix", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Status(ctx); err != nil {
			t.Errorf("Status: %v", err)
		}
		c.Close()
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("serveListener returned %v, want context.Canceled", err)
	}
}

// A peer the listener does not allow is closed unread; vsock allows the
// host (CID 2) alone.
func TestServeListenerRefusesPeers(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go serveListener(ctx, l, &fakeHandler{}, func(net.Addr) bool { return false })
	c, err := Dial(ctx, "unix", l.Addr().String())
	if err == nil {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = c.Status(sctx)
		scancel()
		c.Close()
	}
	if err == nil {
		t.Error("a refused peer got an answer")
	}
	if !hostOnly(&vsock.Addr{ContextID: vsock.Host, Port: 1024}) || hostOnly(&vsock.Addr{ContextID: 7, Port: 1024}) || hostOnly(&net.UnixAddr{Name: "x"}) {
		t.Error("hostOnly admits the wrong peers")
	}
}
