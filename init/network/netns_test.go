package network

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
)

// TestDHCPInNetns proves the DHCP client end to end without QEMU: two
// network namespaces joined by a veth pair, a DHCP server (server4) in
// one, Configure in the other. Each side runs as a re-executed copy of
// this test binary under `ip netns exec`, so every goroutine and socket
// lives in its namespace. It needs root and iproute2.
const lease = 6 // seconds: short, so the test sees a renewal

func TestDHCPInNetns(t *testing.T) {
	switch os.Getenv("BALLAST_NETNS_ROLE") {
	case "server":
		netnsServer(t)
		return
	case "client":
		netnsClient(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (runs as root in CI and the dev container)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("iproute2's ip not installed: %v", err)
	}
	id := os.Getpid()
	srv, cli := fmt.Sprintf("blt%ds", id), fmt.Sprintf("blt%dc", id)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	ip("netns", "add", srv)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", srv).Run() })
	ip("netns", "add", cli)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", cli).Run() })
	vc, vs := fmt.Sprintf("bv%dc", id), fmt.Sprintf("bv%ds", id)
	ip("link", "add", vc, "netns", cli, "type", "veth", "peer", "name", vs, "netns", srv)
	ip("-n", cli, "link", "set", vc, "name", "eth0")
	ip("-n", srv, "link", "set", vs, "name", "eth0")
	ip("-n", srv, "addr", "add", "10.77.0.1/24", "dev", "eth0")
	ip("-n", srv, "link", "set", "eth0", "up")
	ip("-n", srv, "link", "set", "lo", "up")

	server := exec.Command("ip", "netns", "exec", srv, os.Args[0], "-test.run=^TestDHCPInNetns$", "-test.v")
	server.Env = append(os.Environ(), "BALLAST_NETNS_ROLE=server")
	out, err := server.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	server.Stderr = server.Stdout
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var serverLog []string
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			serverLog = append(serverLog, sc.Text())
			mu.Unlock()
			if sc.Text() == "server ready" {
				once.Do(func() { close(ready) })
			}
		}
		io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		server.Process.Kill()
		server.Wait()
	})
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		mu.Lock()
		t.Fatalf("DHCP server did not start:\n%s", strings.Join(serverLog, "\n"))
	}

	client := exec.Command("ip", "netns", "exec", cli, os.Args[0], "-test.run=^TestDHCPInNetns$", "-test.v")
	client.Env = append(os.Environ(), "BALLAST_NETNS_ROLE=client")
	cout, err := client.CombinedOutput()
	t.Logf("client:\n%s", cout)
	if err != nil {
		t.Errorf("client failed: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	acks := 0
	for _, l := range serverLog {
		if strings.HasPrefix(l, "sent ACK") {
			acks++
		}
	}
	if acks < 2 {
		t.Errorf("server sent %d ACKs, want a first lease and at least one renewal:\n%s", acks, strings.Join(serverLog, "\n"))
	}
}

func netnsServer(t *testing.T) {
	serverIP := net.IPv4(10, 77, 0, 1).To4()
	handler := func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		var mt dhcpv4.MessageType
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			mt = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			mt = dhcpv4.MessageTypeAck
		default:
			return
		}
		resp, err := dhcpv4.NewReplyFromRequest(m,
			dhcpv4.WithMessageType(mt),
			dhcpv4.WithYourIP(net.IPv4(10, 77, 0, 100)),
			dhcpv4.WithServerIP(serverIP),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP)),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithRouter(serverIP),
			dhcpv4.WithDNS(net.IPv4(10, 77, 0, 53)),
			dhcpv4.WithDomainSearchList("lab.test"),
			dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, []byte{0x05, 0x78}), // 1400
			dhcpv4.WithOption(dhcpv4.OptNTPServers(serverIP)),
			dhcpv4.WithLeaseTime(lease),
		)
		if err != nil {
			fmt.Println("reply:", err)
			return
		}
		if _, err := conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}); err != nil {
			fmt.Println("send:", err)
			return
		}
		fmt.Printf("sent %s to %s (hostname %q)\n", mt, m.ClientHWAddr, m.HostName())
	}
	s, err := server4.NewServer("eth0", &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
	if err != nil {
		t.Fatal(err)
	}
	// A TCP service the client must reach through its new address.
	l, err := net.Listen("tcp", "10.77.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	fmt.Println("server ready")
	s.Serve() // until the parent kills us
}

func netnsClient(t *testing.T) {
	// A fake sysfs: a veth has no device behind it, so mark eth0 as wired.
	sys := t.TempDir()
	os.MkdirAll(filepath.Join(sys, "eth0/device"), 0o755)
	// A static interface alongside: a veth pair inside the namespace (the
	// dummy module is not always there); its peer up so st0 has carrier.
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "st0"}, PeerName: "st1"}); err != nil {
		t.Fatal(err)
	}
	if st1, err := netlink.LinkByName("st1"); err != nil || netlink.LinkSetUp(st1) != nil {
		t.Fatalf("st1: %v", err)
	}
	root := t.TempDir()
	cfg := &cloudconfig.Network{Interfaces: []cloudconfig.Interface{
		{Name: "st0", Addresses: []string{"192.168.50.2/24"}, Gateway: "192.168.50.1", MTU: 1300},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	st, err := Configure(ctx, cfg, Options{Root: root, SysClassNet: sys, DHCPWait: 10 * time.Second, Hostname: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("configured in %v", time.Since(start))

	eth0, _ := netlink.LinkByName("eth0")
	st0, _ := netlink.LinkByName("st0")
	if eth0.Attrs().MTU != 1400 || st0.Attrs().MTU != 1300 {
		t.Errorf("MTU eth0 %d (lease says 1400), st0 %d (config says 1300)", eth0.Attrs().MTU, st0.Attrs().MTU)
	}
	checkAddr := func(link netlink.Link, want string) {
		t.Helper()
		addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
		for _, a := range addrs {
			if a.IPNet.String() == want {
				return
			}
		}
		t.Errorf("%s lacks %s: %v", link.Attrs().Name, want, addrs)
	}
	checkAddr(eth0, "10.77.0.100/24")
	checkAddr(st0, "192.168.50.2/24")
	routes, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
	var defaults []string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			defaults = append(defaults, fmt.Sprintf("%s via %s metric %d", linkName(r.LinkIndex), r.Gw, r.Priority))
		}
	}
	want := []string{
		fmt.Sprintf("st0 via 192.168.50.1 metric %d", st0.Attrs().Index),
		fmt.Sprintf("eth0 via 10.77.0.1 metric %d", 1024+eth0.Attrs().Index),
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(defaults, "\n"), w) {
			t.Errorf("default routes %q lack %q", defaults, w)
		}
	}
	b, _ := os.ReadFile(filepath.Join(root, "etc/resolv.conf"))
	if !strings.Contains(string(b), "\nsearch lab.test\nnameserver 10.77.0.53\n") {
		t.Errorf("resolv.conf:\n%s", b)
	}
	ifs := fmt.Sprintf("%+v", st.Ifaces())
	for _, w := range []string{"Name:eth0", "Up:true Addresses:[10.77.0.100/24", "Method:dhcp", "Name:st0", "Method:static"} {
		if !strings.Contains(ifs, w) {
			t.Errorf("Ifaces() = %s lacks %q", ifs, w)
		}
	}
	if got := st.NTPServers(); len(got) != 1 || got[0] != "10.77.0.1" {
		t.Errorf("NTPServers() = %v", got)
	}
	reach := func() {
		t.Helper()
		c, err := net.DialTimeout("tcp", "10.77.0.1:8080", 3*time.Second)
		if err != nil {
			t.Errorf("server not reachable through the lease: %v", err)
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		if line != "hello 10.77.0.100\n" {
			t.Errorf("server said %q", line)
		}
	}
	reach()

	// Past the lease time the address is still there: it was renewed.
	time.Sleep((lease + 2) * time.Second)
	checkAddr(eth0, "10.77.0.100/24")
	reach()
}

func linkName(idx int) string {
	l, err := netlink.LinkByIndex(idx)
	if err != nil {
		return fmt.Sprint(idx)
	}
	return l.Attrs().Name
}
