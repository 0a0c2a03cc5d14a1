package main

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseConfig(t *testing.T) {
	c, err := parseConfig(env(map[string]string{"SRC_PORT": "80", "DEST_PROTO": "TCP", "DEST_PORT": "8080",
		"DEST_IPS": "10.43.0.10,fd00::a", "SRC_RANGES": "10.0.0.0/8, 192.168.1.7/24"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.proto != "tcp" || c.port != 80 || strings.Join(c.dests, " ") != "10.43.0.10:8080 [fd00::a]:8080" {
		t.Errorf("config %+v", c)
	}
	for addr, want := range map[string]bool{"10.1.2.3": true, "192.168.1.200": true, "192.168.2.1": false, "::ffff:10.9.9.9": true} {
		if got := c.allowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("allowed(%s) = %v, want %v", addr, got, want)
		}
	}
	mapped, err := parseConfig(env(map[string]string{"SRC_PORT": "80", "DEST_PORT": "80", "DEST_IPS": "10.43.0.10", "SRC_RANGES": "::ffff:10.0.0.0/104"}))
	if err != nil || !mapped.allowed(netip.MustParseAddr("10.1.2.3")) || mapped.allowed(netip.MustParseAddr("11.0.0.1")) {
		t.Errorf("an IPv4-mapped range: %v %+v", err, mapped.ranges)
	}
	for _, bad := range []map[string]string{
		{"SRC_PORT": "0", "DEST_PORT": "1", "DEST_IPS": "10.0.0.1"},
		{"SRC_PORT": "80", "DEST_PORT": "x", "DEST_IPS": "10.0.0.1"},
		{"SRC_PORT": "80", "DEST_PORT": "80"},
		{"SRC_PORT": "80", "DEST_PORT": "80", "DEST_IPS": "host"},
		{"SRC_PORT": "80", "DEST_PORT": "80", "DEST_IPS": "10.0.0.1", "DEST_PROTO": "SCTP"},
		{"SRC_PORT": "80", "DEST_PORT": "80", "DEST_IPS": "10.0.0.1", "SRC_RANGES": "10.0.0.0"},
	} {
		if _, err := parseConfig(env(bad)); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestForwardTCP(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				data, _ := io.ReadAll(c)
				c.Write([]byte("echo:" + string(data)))
				c.Close()
			}()
		}
	}()
	port := freePort(t, "tcp")
	c, err := parseConfig(env(map[string]string{"SRC_PORT": strconv.Itoa(port), "DEST_PORT": strconv.Itoa(up.Addr().(*net.TCPAddr).Port),
		"DEST_IPS": "127.0.0.2,127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	go serveTCP(c, "127.0.0.1:"+strconv.Itoa(port))
	var conn net.Conn
	for i := 0; i < 50; i++ {
		if conn, err = net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("hello"))
	conn.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(conn)
	if string(got) != "echo:hello" {
		t.Errorf("through the forwarder: %q", got)
	}

	// A client outside SRC_RANGES is closed on without a byte.
	c.ranges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	port2 := freePort(t, "tcp")
	go serveTCP(c, "127.0.0.1:"+strconv.Itoa(port2))
	for i := 0; i < 50; i++ {
		if conn, err = net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port2)); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("hello"))
	conn.(*net.TCPConn).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err = io.ReadAll(conn)
	var ne net.Error
	if len(got) != 0 || (errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("refused client: got %q, %v (want the connection reset or closed at once)", got, err)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("upstream saw %d connections, want 1 (the allowed client's)", n)
	}
}

func TestForwardUDP(t *testing.T) {
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := up.ReadFrom(buf)
			if err != nil {
				return
			}
			up.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	port := freePort(t, "udp")
	c, err := parseConfig(env(map[string]string{"SRC_PORT": strconv.Itoa(port), "DEST_PROTO": "UDP",
		"DEST_PORT": strconv.Itoa(up.LocalAddr().(*net.UDPAddr).Port), "DEST_IPS": "127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	go serveUDP(c, "127.0.0.1:"+strconv.Itoa(port))
	conn, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 1500)
	for i := 0; ; i++ {
		conn.Write([]byte("ping"))
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := conn.Read(buf)
		if err == nil {
			if string(buf[:n]) != "echo:ping" {
				t.Errorf("reply %q", buf[:n])
			}
			return
		}
		if i == 50 {
			t.Fatalf("no reply through the UDP forwarder: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // the forwarder may not listen yet
	}
}
