// Command svclb forwards one port of a LoadBalancer Service on the node it
// runs on: the image docker.io/rancher/klipper-lb:v0.4.9 on a ballast node,
// started by the runtime's ServiceLB controller once per Service port in
// the Service's svclb DaemonSet, with the environment k3s gives klipper-lb:
//
//	SRC_PORT    the port it listens on (the container's hostPort)
//	SRC_RANGES  comma-separated CIDRs clients may come from (default all)
//	DEST_PROTO  TCP or UDP
//	DEST_PORT   the port it forwards to
//	DEST_IPS    comma-separated addresses it forwards to: the Service's
//	            ClusterIPs, or the node's own IPs (NodePort) when the
//	            Service's externalTrafficPolicy is Local
//
// klipper-lb installs iptables DNAT rules in the pod; this forwards in user
// space instead, so the image is one static program, the pod needs no
// NET_ADMIN and no forwarding sysctl, and what it does can be read in its
// log (one line per refused client). The client's address is lost behind
// it either way (klipper-lb masquerades). It uses the standard library
// only: the image builder compiles it from its embedded source.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const version = "ballast-svclb-1"

// config is the forwarder's environment, checked.
type config struct {
	proto   string // "tcp" or "udp"
	port    int
	ranges  []netip.Prefix
	dests   []string // host:port
	timeout time.Duration
}

func parseConfig(getenv func(string) string) (config, error) {
	var c config
	switch p := strings.ToUpper(getenv("DEST_PROTO")); p {
	case "TCP", "":
		c.proto = "tcp"
	case "UDP":
		c.proto = "udp"
	default:
		return c, fmt.Errorf("DEST_PROTO=%s: only TCP and UDP are forwarded", p)
	}
	var err error
	if c.port, err = portOf("SRC_PORT", getenv("SRC_PORT")); err != nil {
		return c, err
	}
	destPort, err := portOf("DEST_PORT", getenv("DEST_PORT"))
	if err != nil {
		return c, err
	}
	for _, s := range splitList(getenv("SRC_RANGES")) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return c, fmt.Errorf("SRC_RANGES: %q is not a CIDR", s)
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			// ::ffff:10.0.0.0/104 is 10.0.0.0/8: clients are matched unmapped.
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		c.ranges = append(c.ranges, p.Masked())
	}
	for _, s := range splitList(getenv("DEST_IPS")) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return c, fmt.Errorf("DEST_IPS: %q is not an IP address", s)
		}
		c.dests = append(c.dests, netip.AddrPortFrom(a.Unmap(), uint16(destPort)).String())
	}
	if len(c.dests) == 0 {
		return c, errors.New("DEST_IPS is empty: nothing to forward to")
	}
	c.timeout = 2 * time.Minute
	return c, nil
}

func portOf(name, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%s=%q: want a port number", name, v)
	}
	return n, nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// allowed says whether a client may use the forwarder: no ranges means
// everyone.
func (c config) allowed(addr netip.Addr) bool {
	if len(c.ranges) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range c.ranges {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println(version)
		return
	}
	c, err := parseConfig(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "svclb:", err)
		os.Exit(2)
	}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		<-sigs
		os.Exit(0)
	}()
	addr := ":" + strconv.Itoa(c.port)
	fmt.Fprintf(os.Stderr, "svclb: forwarding %s %s to %s\n", strings.ToUpper(c.proto), addr, strings.Join(c.dests, ", "))
	if c.proto == "udp" {
		err = serveUDP(c, addr)
	} else {
		err = serveTCP(c, addr)
	}
	fmt.Fprintln(os.Stderr, "svclb:", err)
	os.Exit(1)
}

// serveTCP accepts connections and splices each to the first destination
// that answers.
func serveTCP(c config, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors or the like: wait and accept again
			// rather than drop every open connection by exiting.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			fmt.Fprintf(os.Stderr, "svclb: accept: %v; retrying in %v\n", err, delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go forwardTCP(c, conn.(*net.TCPConn))
	}
}

// refusals limits the log lines about refused clients to one a second.
var refusals struct {
	sync.Mutex
	last    time.Time
	dropped int
}

func logRefused(from netip.Addr) {
	refusals.Lock()
	defer refusals.Unlock()
	if time.Since(refusals.last) < time.Second {
		refusals.dropped++
		return
	}
	more := ""
	if refusals.dropped > 0 {
		more = fmt.Sprintf(" (and %d more since the last line)", refusals.dropped)
	}
	refusals.last, refusals.dropped = time.Now(), 0
	fmt.Fprintf(os.Stderr, "svclb: refused %s: not in SRC_RANGES%s\n", from, more)
}

func forwardTCP(c config, in *net.TCPConn) {
	defer in.Close()
	from := in.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
	if !c.allowed(from) {
		in.SetLinger(0) // reset, not a clean close: the port is not theirs
		logRefused(from)
		return
	}
	var out net.Conn
	var err error
	for _, d := range c.dests {
		if out, err = net.DialTimeout("tcp", d, 10*time.Second); err == nil {
			break
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "svclb: %s: %v\n", from, err)
		return
	}
	defer out.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(out, in)
		out.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(in, out)
	in.CloseWrite()
	wg.Wait()
}

// maxUDPSessions bounds the upstream sockets: a flood of (spoofed)
// sources cannot take every descriptor.
const maxUDPSessions = 4096

// udpSession is one client's upstream socket and when either side last
// sent.
type udpSession struct {
	up   *net.UDPConn
	last atomic.Int64 // unix nanoseconds
}

func (s *udpSession) touch() { s.last.Store(time.Now().UnixNano()) }

// serveUDP keeps one upstream socket per client, dropped once neither
// side has sent for c.timeout.
func serveUDP(c config, addr string) error {
	l, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	pc := l.(*net.UDPConn)
	var mu sync.Mutex
	sessions := map[netip.AddrPort]*udpSession{}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		if !c.allowed(from.Addr()) {
			logRefused(from.Addr())
			continue
		}
		mu.Lock()
		s := sessions[from]
		if s == nil {
			if len(sessions) >= maxUDPSessions {
				mu.Unlock()
				fmt.Fprintf(os.Stderr, "svclb: %s: %d UDP sessions open already, datagram dropped\n", from, maxUDPSessions)
				continue
			}
			up, err := dialUDP(c)
			if err != nil {
				mu.Unlock()
				fmt.Fprintf(os.Stderr, "svclb: %s: %v\n", from, err)
				continue
			}
			s = &udpSession{up: up}
			s.touch()
			sessions[from] = s
			go func(from netip.AddrPort, s *udpSession) {
				reply := make([]byte, 64<<10)
				for {
					idle := time.Until(time.Unix(0, s.last.Load()).Add(c.timeout))
					if idle <= 0 {
						break
					}
					s.up.SetReadDeadline(time.Now().Add(idle))
					n, err := s.up.Read(reply)
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						continue // the client may have sent meanwhile: look again
					}
					if err != nil {
						break
					}
					s.touch()
					pc.WriteToUDPAddrPort(reply[:n], from)
				}
				mu.Lock()
				delete(sessions, from)
				s.up.Close() // under the lock: no write races the close
				mu.Unlock()
			}(from, s)
		}
		s.touch()
		s.up.Write(buf[:n])
		mu.Unlock()
	}
}

func dialUDP(c config) (*net.UDPConn, error) {
	var err error
	for _, d := range c.dests {
		var conn net.Conn
		if conn, err = net.Dial("udp", d); err == nil {
			return conn.(*net.UDPConn), nil
		}
	}
	return nil, err
}
