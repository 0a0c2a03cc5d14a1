package netpol

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/mdlayher/netlink"
)

// packetAttrs is an NFULNL_MSG_PACKET's attributes as the kernel sends
// them for a packet from src:sport to dst:dport.
func packetAttrs(t testing.TB, prefix string, proto byte, l4 []byte) []byte {
	ip := make([]byte, 20)
	ip[0] = 0x45
	ip[9] = proto
	copy(ip[12:], []byte{10, 42, 1, 7})
	copy(ip[16:], []byte{10, 42, 0, 5})
	ts := make([]byte, 16)
	binary.BigEndian.PutUint64(ts, 1796653801) // 2026-12-07T14:30:01Z
	binary.BigEndian.PutUint64(ts[8:], 250000)
	in := make([]byte, 4)
	binary.BigEndian.PutUint32(in, 3)
	b, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: 1, Data: []byte{0x08, 0x00, 2, 0}}, // NFULA_PACKET_HDR
		{Type: nfulaTimestamp, Data: ts},
		{Type: nfulaIfindexIn, Data: in},
		{Type: nfulaPrefix, Data: append([]byte(prefix), 0)},
		{Type: nfulaPayload, Data: append(ip, l4...)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFormatPacket(t *testing.T) {
	names := func(i uint32) string { return map[uint32]string{3: "cni0"}[i] }
	for _, c := range []struct {
		proto byte
		l4    []byte
		want  string
	}{
		{6, []byte{0xa8, 0xea, 0x1f, 0x90, 0, 0, 0, 0}, "TCP 10.42.1.7:43242 -> 10.42.0.5:8080"},
		{17, []byte{0x30, 0x39, 0, 53}, "UDP 10.42.1.7:12345 -> 10.42.0.5:53"},
		{1, []byte{8, 0, 0, 0}, "ICMP 10.42.1.7 -> 10.42.0.5 type 8 code 0"},
		{6, nil, "TCP 10.42.1.7 -> 10.42.0.5"},
		{47, nil, "protocol 47 10.42.1.7 -> 10.42.0.5"},
	} {
		got, ok := FormatPacket(packetAttrs(t, "ingress default/deny-all", c.proto, c.l4), names)
		want := "2026-12-07T14:30:01Z ingress default/deny-all: " + c.want + " in=cni0"
		if !ok || got != want {
			t.Errorf("proto %d: %q %v\nwant %q", c.proto, got, ok, want)
		}
	}
	if _, ok := FormatPacket([]byte{1, 2, 3}, names); ok {
		t.Error("garbage formatted")
	}
}

// FuzzFormatPacket: whatever the kernel (or a corrupted buffer) hands the
// reader, it returns a line or false, never panics.
func FuzzFormatPacket(f *testing.F) {
	f.Add(packetAttrs(f, "ingress a/b", 6, []byte{0, 80, 0, 81}))
	f.Add(packetAttrs(f, "", 1, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		FormatPacket(b, func(i uint32) string { return fmt.Sprint(i) })
	})
}
