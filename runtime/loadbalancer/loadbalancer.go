// Package loadbalancer is the agent's client-side load balancer, as k3s
// has it: a TCP listener on 127.0.0.1:6444 (lb-server-port) that the
// kubelet, kube-proxy and flannel use as their API server, passing each
// connection through unchanged (TLS included) to one of the servers'
// supervisor ports. The server list follows the cluster
// (/v1-k3s/apiservers); the --server address stays as the fallback, so an
// agent survives the server it first joined going away when others remain.
package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// LoadBalancer passes connections to the first server that accepts one,
// starting with the one that answered last.
type LoadBalancer struct {
	// Default is the --server address (host:port); tried when every
	// server in the list fails, and the list until SetServers is called.
	Default string
	// DialTimeout bounds each try (5 s).
	DialTimeout time.Duration
	// Logf receives a line when the active server changes.
	Logf func(format string, args ...any)

	mu      sync.Mutex
	servers []string
	current string
}

// SetServers replaces the server list (host:port each), keeping the
// current server when it is still listed.
func (lb *LoadBalancer) SetServers(servers []string) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.servers = slices.Clone(servers)
}

// Servers is the list connections are tried against, in order: the current
// server first, then the others, then the default when it is not listed.
func (lb *LoadBalancer) Servers() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var out []string
	if lb.current != "" {
		out = append(out, lb.current)
	}
	for _, s := range lb.servers {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if lb.Default != "" && !slices.Contains(out, lb.Default) {
		out = append(out, lb.Default)
	}
	return out
}

func (lb *LoadBalancer) logf(format string, args ...any) {
	if lb.Logf != nil {
		lb.Logf(format, args...)
	}
}

// dial connects to the first server that answers and makes it current.
func (lb *LoadBalancer) dial(ctx context.Context) (net.Conn, error) {
	timeout := lb.DialTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	var errs []error
	for _, s := range lb.Servers() {
		d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
		c, err := d.DialContext(ctx, "tcp", s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lb.mu.Lock()
		changed := lb.current != s
		lb.current = s
		lb.mu.Unlock()
		if changed {
			lb.logf("load balancer: using server %s", s)
		}
		return c, nil
	}
	if len(errs) == 0 {
		return nil, errors.New("load balancer: no servers")
	}
	return nil, fmt.Errorf("load balancer: no server answers: %w", errors.Join(errs...))
}

// Serve accepts connections on ln until ctx ends.
func (lb *LoadBalancer) Serve(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("load balancer: %w", err)
		}
		go lb.pass(ctx, c)
	}
}

func (lb *LoadBalancer) pass(ctx context.Context, c net.Conn) {
	defer c.Close()
	up, err := lb.dial(ctx)
	if err != nil {
		lb.logf("%v", err)
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	select {
	case <-done:
		// One side finished; give the other a moment to drain, as a
		// half-closed TLS stream ends with the peer's close_notify.
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
	case <-ctx.Done():
	}
}
