package loadbalancer

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers every connection with its name.
func echoServer(t *testing.T, name string) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, name)
			c.Close()
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }
}

func ask(t *testing.T, addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestFailoverAndFollow(t *testing.T) {
	a, stopA := echoServer(t, "a")
	b, stopB := echoServer(t, "b")
	defer stopB()
	lb := &LoadBalancer{Default: a, DialTimeout: time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = lb.Serve(ctx, ln) }()
	if got := ask(t, ln.Addr().String()); got != "a" {
		t.Fatalf("default server: got %q", got)
	}
	lb.SetServers([]string{a, b})
	if got := ask(t, ln.Addr().String()); got != "a" {
		t.Errorf("current server kept: got %q", got)
	}
	stopA()
	if got := ask(t, ln.Addr().String()); got != "b" {
		t.Errorf("after a stopped: got %q", got)
	}
	if s := lb.Servers(); s[0] != b {
		t.Errorf("b not current: %v", s)
	}
	lb.SetServers(nil)
	if s := lb.Servers(); len(s) != 2 || s[1] != a {
		t.Errorf("default stays the fallback: %v", s)
	}
}
