//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// ErrNoPort is returned when no virtio-serial port has the wanted name.
var ErrNoPort = errors.New("agent: no virtio-serial port with that name")

// ErrNoVsock is returned by ServeVsock where the kernel has no vsock.
var ErrNoVsock = errors.New("agent: no /dev/vsock")

// OpenVirtioPort opens the virtio-serial port called name (the port's
// name= on the QEMU command line), creating its device node when devtmpfs
// has not (yet) made it.
func OpenVirtioPort(name string) (*os.File, error) {
	return openVirtioPort("/sys/class/virtio-ports", "/dev", name)
}

func openVirtioPort(sysDir, devDir, name string) (*os.File, error) {
	ports, err := os.ReadDir(sysDir)
	if err != nil {
		return nil, fmt.Errorf("agent: port %s: %w", name, errors.Join(ErrNoPort, err))
	}
	for _, p := range ports {
		b, err := os.ReadFile(filepath.Join(sysDir, p.Name(), "name"))
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		dev := filepath.Join(devDir, p.Name())
		if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
			if err := mknodFromSysfs(filepath.Join(sysDir, p.Name(), "dev"), dev); err != nil {
				return nil, fmt.Errorf("agent: port %s: %w", name, err)
			}
		}
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("agent: port %s: %w", name, err)
		}
		return f, nil
	}
	return nil, fmt.Errorf("agent: port %s in %s: %w", name, sysDir, ErrNoPort)
}

// mknodFromSysfs creates the character device node dev from the
// "major:minor" in the sysfs file devFile.
func mknodFromSysfs(devFile, dev string) error {
	b, err := os.ReadFile(devFile)
	if err != nil {
		return err
	}
	maj, mnr, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	major, err1 := strconv.ParseUint(maj, 10, 32)
	minor, err2 := strconv.ParseUint(mnr, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("%s: %q is not major:minor", devFile, b)
	}
	if err := unix.Mknod(dev, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(major), uint32(minor)))); err != nil {
		return fmt.Errorf("mknod %s: %w", dev, err)
	}
	return nil
}

// PortPoll is how long ServePort waits before looking again for a host
// that is not connected, or a port that is not there yet.
const PortPoll = 250 * time.Millisecond

// ServePort serves the virtio-serial port called name until ctx is done.
// The guest side of a port reads EOF while no host program is connected
// to it (and QEMU's socket lets hosts come and go), so ServePort opens
// the port again after every EOF or error, pausing PortPoll in between:
// every host connection starts with a fresh line buffer. It returns
// ctx.Err(); errors along the way go to logf when it is not nil.
func ServePort(ctx context.Context, name string, h Handler, logf func(format string, args ...any)) error {
	return servePort(ctx, h, logf, func() (*os.File, error) { return OpenVirtioPort(name) })
}

func servePort(ctx context.Context, h Handler, logf func(string, ...any), open func() (*os.File, error)) error {
	var lastErr string
	report := func(err error) {
		// Log a failure once, not every PortPoll.
		if logf != nil && err.Error() != lastErr {
			logf("agent: %v", err)
		}
		lastErr = err.Error()
	}
	for {
		f, err := open()
		if err != nil {
			report(err)
		} else {
			// Closing the file is what unblocks a read when ctx ends.
			stop := context.AfterFunc(ctx, func() { f.Close() })
			err = Serve(ctx, f, h)
			stop()
			f.Close()
			if err != nil && ctx.Err() == nil {
				report(err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(PortPoll):
		}
	}
}

// ServeVsock listens on vsock port (VsockPort) and serves each
// connection until ctx is done. It returns ErrNoVsock where the kernel
// has no /dev/vsock.
func ServeVsock(ctx context.Context, port uint32, h Handler) error {
	if _, err := os.Stat("/dev/vsock"); err != nil {
		return fmt.Errorf("agent: vsock port %d: %w", port, ErrNoVsock)
	}
	l, err := vsock.Listen(port, nil)
	if err != nil {
		return fmt.Errorf("agent: vsock port %d: %w", port, err)
	}
	return serveListener(ctx, l, h, hostOnly)
}

// hostOnly admits the hypervisor (CID 2) alone: another guest on the same
// host must not drive this node's init.
func hostOnly(a net.Addr) bool {
	v, ok := a.(*vsock.Addr)
	return ok && v.ContextID == vsock.Host
}

// serveListener serves every connection accepted on l until ctx is done;
// a connection whose peer allow refuses (nil allows all) is closed unread.
func serveListener(ctx context.Context, l net.Listener, h Handler, allow func(net.Addr) bool) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			l.Close()
			return fmt.Errorf("agent: accepting on %s: %w", l.Addr(), err)
		}
		if allow != nil && !allow(conn.RemoteAddr()) {
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			Serve(ctx, conn, h)
		}()
	}
}
