package certs

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Cert is one certificate file's first certificate.
type Cert struct {
	Path     string
	Subject  string
	NotAfter time.Time
	CA       bool
}

// List reads every certificate under <dataDir>/server/tls and
// <dataDir>/agent (not their subdirectories' containerd or kubelet
// state), sorted by path.
func List(dataDir string) ([]Cert, error) {
	var out []Cert
	walk := func(root string, depth int) error {
		return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == root && os.IsNotExist(err) {
					return filepath.SkipDir
				}
				return err
			}
			if d.IsDir() {
				if rel, _ := filepath.Rel(root, p); rel != "." && strings.Count(rel, string(filepath.Separator))+1 > depth {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(p, ".crt") {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b, _ := pem.Decode(data)
			if b == nil || b.Type != "CERTIFICATE" {
				return nil
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			out = append(out, Cert{Path: p, Subject: c.Subject.CommonName, NotAfter: c.NotAfter, CA: c.IsCA})
			return nil
		})
	}
	if err := walk(filepath.Join(dataDir, "server", "tls"), 2); err != nil {
		return nil, err
	}
	if err := walk(filepath.Join(dataDir, "agent"), 0); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// Status of a certificate at now: OK, WARNING inside the renewal window
// (a leaf is renewed at the next check or start; a CA is not), or
// EXPIRED.
func (c Cert) Status(now time.Time) string {
	switch left := c.NotAfter.Sub(now); {
	case left <= 0:
		return "EXPIRED"
	case left < RenewWithin:
		return "WARNING"
	}
	return "OK"
}

// PrintTable writes certs as `k3s certificate check` shows them.
func PrintTable(w io.Writer, certs []Cert, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILENAME\tSUBJECT\tEXPIRES\tRESIDUAL TIME\tSTATUS")
	for _, c := range certs {
		left := c.NotAfter.Sub(now)
		residual := fmt.Sprintf("%dd", int(left.Hours()/24))
		if left <= 0 {
			residual = "0d"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Path, c.Subject, c.NotAfter.UTC().Format(time.RFC3339), residual, c.Status(now))
	}
	return tw.Flush()
}
