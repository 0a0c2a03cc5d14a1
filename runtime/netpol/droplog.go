package netpol

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"

	"github.com/ballast-os/ballast/runtime/processes"
)

// ReaderGroup is the NFLOG group DropLog reads: every drop goes to both
// NFLOG group 100 (for `tcpdump -ni nflog:100` and the tools k3s users
// know) and this one, because a group has only one listener.
const ReaderGroup = 101

// DropLog writes one line per packet logged to an NFLOG group (its
// policies, protocol, addresses and ports, interfaces) to a file it rotates
// by size.
type DropLog struct {
	Group   uint16
	Path    string
	MaxSize int64 // bytes before the file is rotated (10 MiB when 0)
	Keep    int   // rotated files kept (3 when 0)
}

// nfnetlink_log's numbers (linux/netfilter/nfnetlink_log.h).
const (
	nfnlSubsysULOG  = 4
	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1

	nfulaCfgCmd  = 1
	nfulaCfgMode = 2

	nfulnlCfgCmdBind   = 1
	nfulnlCfgCmdUnbind = 2
	nfulnlCopyPacket   = 2

	nfulaTimestamp   = 3
	nfulaIfindexIn   = 4
	nfulaIfindexOut  = 5
	nfulaPayload     = 9
	nfulaPrefix      = 10
	nfulaTypeMask    = 0x3fff
	netlinkNetfilter = 12 // NETLINK_NETFILTER
	copyRange        = 128
)

// Run binds the group and writes lines until ctx ends.
func (d *DropLog) Run(ctx context.Context) error {
	c, err := netlink.Dial(netlinkNetfilter, nil)
	if err != nil {
		return fmt.Errorf("nflog: %w", err)
	}
	var once sync.Once
	closeConn := func() { once.Do(func() { c.Close() }) }
	defer closeConn()
	// A listener a crashed run left is taken over: unbind first.
	_ = d.config(c, syscall.AF_UNSPEC, attr(nfulaCfgCmd, []byte{nfulnlCfgCmdUnbind}))
	if err := d.config(c, syscall.AF_UNSPEC, attr(nfulaCfgCmd, []byte{nfulnlCfgCmdBind})); err != nil {
		return fmt.Errorf("nflog: bind group %d: %w", d.Group, err)
	}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, copyRange)
	mode[4] = nfulnlCopyPacket
	if err := d.config(c, syscall.AF_UNSPEC, attr(nfulaCfgMode, mode)); err != nil {
		return fmt.Errorf("nflog: group %d copy mode: %w", d.Group, err)
	}
	go func() {
		<-ctx.Done()
		closeConn()
	}()
	f, err := os.OpenFile(d.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		msgs, err := c.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// ENOBUFS: the kernel dropped messages for a slow reader;
			// say so in the file and go on.
			if errors.Is(err, syscall.ENOBUFS) {
				fmt.Fprintf(f, "%s some logged packets were lost (the reader fell behind)\n", time.Now().UTC().Format(time.RFC3339))
				continue
			}
			return fmt.Errorf("nflog: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(nfnlSubsysULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
				continue
			}
			if line, ok := FormatPacket(m.Data[4:], ifName); ok {
				io.WriteString(f, line+"\n")
			}
		}
		d.rotate()
	}
}

func (d *DropLog) rotate() {
	max, keep := d.MaxSize, d.Keep
	if max == 0 {
		max = 10 << 20
	}
	if keep == 0 {
		keep = 3
	}
	_, _ = processes.RotateLog(d.Path, max, keep)
}

// config sends one NFULNL_MSG_CONFIG for the group and waits for the ack.
func (d *DropLog) config(c *netlink.Conn, family uint8, attrs []byte) error {
	hdr := []byte{family, 0, 0, 0} // nfgenmsg: family, version 0, group (big-endian)
	binary.BigEndian.PutUint16(hdr[2:], d.Group)
	_, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(hdr, attrs...),
	})
	return err
}

func attr(typ uint16, data []byte) []byte {
	b, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: typ, Data: data}})
	return b
}

func ifName(index uint32) string {
	if ifc, err := net.InterfaceByIndex(int(index)); err == nil {
		return ifc.Name
	}
	return fmt.Sprint(index)
}

// FormatPacket is the line for one NFULNL_MSG_PACKET's attributes:
// "2026-12-07T14:30:01Z ingress default/deny-all: TCP 10.42.1.7:43210 ->
// 10.42.0.5:8080 in=cni0 out=cni0". ifName names an interface index.
func FormatPacket(attrs []byte, ifName func(uint32) string) (string, bool) {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return "", false
	}
	ad.ByteOrder = binary.BigEndian
	var prefix, in, out string
	var payload []byte
	ts := time.Time{}
	for ad.Next() {
		switch ad.Type() & nfulaTypeMask {
		case nfulaPrefix:
			prefix = strings.TrimRight(string(ad.Bytes()), "\x00")
		case nfulaPayload:
			payload = ad.Bytes()
		case nfulaIfindexIn:
			in = ifName(ad.Uint32())
		case nfulaIfindexOut:
			out = ifName(ad.Uint32())
		case nfulaTimestamp:
			if b := ad.Bytes(); len(b) == 16 {
				ts = time.Unix(int64(binary.BigEndian.Uint64(b[:8])), int64(binary.BigEndian.Uint64(b[8:]))*1000)
			}
		}
	}
	if ad.Err() != nil || payload == nil {
		return "", false
	}
	if ts.IsZero() {
		ts = time.Now()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s", ts.UTC().Format(time.RFC3339), prefix, describeIPv4(payload))
	if in != "" {
		b.WriteString(" in=" + in)
	}
	if out != "" {
		b.WriteString(" out=" + out)
	}
	return b.String(), true
}

// describeIPv4 is "TCP 10.42.1.7:43210 -> 10.42.0.5:8080", "ICMP
// 10.42.1.7 -> 10.42.0.5 type 8 code 0", or what little a short or
// foreign packet allows.
func describeIPv4(p []byte) string {
	if len(p) < 20 || p[0]>>4 != 4 {
		return fmt.Sprintf("non-IPv4 packet (%d bytes)", len(p))
	}
	ihl := int(p[0]&0x0f) * 4
	src, _ := netip.AddrFromSlice(p[12:16])
	dst, _ := netip.AddrFromSlice(p[16:20])
	l4 := []byte(nil)
	if ihl >= 20 && ihl <= len(p) {
		l4 = p[ihl:]
	}
	switch proto := p[9]; proto {
	case 6, 17, 132:
		name := map[byte]string{6: "TCP", 17: "UDP", 132: "SCTP"}[proto]
		if len(l4) < 4 {
			return fmt.Sprintf("%s %s -> %s", name, src, dst)
		}
		return fmt.Sprintf("%s %s:%d -> %s:%d", name, src, binary.BigEndian.Uint16(l4[0:2]), dst, binary.BigEndian.Uint16(l4[2:4]))
	case 1:
		if len(l4) < 2 {
			return fmt.Sprintf("ICMP %s -> %s", src, dst)
		}
		return fmt.Sprintf("ICMP %s -> %s type %d code %d", src, dst, l4[0], l4[1])
	default:
		return fmt.Sprintf("protocol %d %s -> %s", proto, src, dst)
	}
}
