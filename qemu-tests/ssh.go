package qemutest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/crypto/ssh"
)

// SSH logs in as root with key on the forwarded SSH port (guest port 22
// must be in Options.Forwards) and runs cmd, returning its output
// (stdout and stderr together). A non-zero exit is an error that
// carries the output.
//
// The host key is not checked: the node made it at its first boot and
// the harness has no earlier copy to check it against.
func (m *Machine) SSH(ctx context.Context, key ssh.Signer, cmd string) (string, error) {
	port := m.HostPort(22)
	if port == 0 {
		return "", m.fail("SSH", m.current(), fmt.Errorf("guest port 22 is not forwarded: add it to Options.Forwards"))
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", m.fail("SSH", m.current(), err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if err != nil {
		return "", m.fail("SSH", m.current(), fmt.Errorf("ssh handshake with %s: %w", addr, err))
	}
	client := ssh.NewClient(cc, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return "", m.fail("SSH", m.current(), err)
	}
	defer sess.Close()
	// Separate buffers: the session copies stdout and stderr on two
	// goroutines, and a bytes.Buffer is not safe for concurrent writes.
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	if err := sess.Run(cmd); err != nil {
		return stdout.String() + stderr.String(), m.fail("SSH "+cmd, m.current(), fmt.Errorf("%w; output: %s%s", err, stdout.String(), stderr.String()))
	}
	return stdout.String() + stderr.String(), nil
}
