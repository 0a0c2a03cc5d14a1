//go:build tools

// Package tools pins dependencies the packages below will import, so that
// concurrent work does not race on go.mod. Removed once they are imported.
package tools

import (
	_ "github.com/ProtonMail/go-crypto/openpgp"
	_ "github.com/beevik/ntp"
	_ "github.com/diskfs/go-diskfs"
	_ "github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/mdlayher/vsock"
	_ "github.com/u-root/u-root/pkg/cpio"
	_ "github.com/ulikunitz/xz"
	_ "github.com/vishvananda/netlink"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
	_ "gopkg.in/yaml.v3"
)
