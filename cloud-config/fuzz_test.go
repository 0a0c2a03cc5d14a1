package cloudconfig

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/examples"
)

// aliasBomb is a "billion laughs" document of a few hundred bytes: six
// levels of ten aliases each would expand to a million values. It is a
// FuzzParse seed so that the fuzzer starts from a document that reaches
// the expansion budget; TestAliasBombSeedHitsBudget checks that it does.
const aliasBomb = "#cloud-config\nk3s:\n  x:\n" +
	"  - &a [x, x, x, x, x, x, x, x, x, x]\n" +
	"  - &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n" +
	"  - &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n" +
	"  - &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n" +
	"  - &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n" +
	"  - [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"

func TestAliasBombSeedHitsBudget(t *testing.T) {
	start := time.Now()
	got := errorLines(t, aliasBomb)
	// Besides the budget's error, only k3s.x's type (a list of lists) is
	// wrong.
	budget := 0
	for _, e := range got {
		switch {
		case strings.Contains(e, "k3s.x[") && strings.Contains(e, "too many values through its aliases (more than 100000 values"):
			budget++
		case strings.Contains(e, "k3s.x: a k3s option's value is"):
		default:
			t.Errorf("unexpected error %q", e)
		}
	}
	if budget != 1 {
		t.Errorf("alias bomb seed: errors %q, want one from the expansion budget", got)
	}
	// The budget stops the expansion early, far below the million values.
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("took %v to refuse", el)
	}
}

// FuzzParse: no input panics or hangs the parser; every error names the
// source and a line; a config that parses also validates when built back
// from Go (Validate), folds (Effective) and serializes (Hash,
// K3sConfigYAML) without error.
func FuzzParse(f *testing.F) {
	seeds := []string{
		"",
		"#cloud-config\n",
		"#cloud-config\nhostname: a\n",
		"hostname: a\n",
		"#!/bin/sh\necho\n",
		"\xEF\xBB\xBF#cloud-config\r\nhostname: a\r\n",
		"#cloud-config\nhostnme: a\n",
		"#cloud-config\n- a\n",
		"#cloud-config\na: b\n---\nc: d\n",
		"#cloud-config\nntp:\n  servers: [a\n",
		"#cloud-config\n? [a]\n: b\n",
		"#cloud-config\nhostname: a\nhostname: b\n",
		"#cloud-config\nwrite_files:\n  - &f {path: /a, content: x}\n  - <<: *f\n    path: /b\n",
		"#cloud-config\nk3s:\n  a: &a [x, x]\n  b: &b [*a, *a]\n  c: [*b, *b]\n",
		"#cloud-config\nk3s: &k {a: *k}\n",
		"#cloud-config\nwrite_files:\n  - path: /x\n    encoding: gz+b64\n    content: H4sIAAAAAAAA/8tIzcnJBwCGphA2BQAAAA==\n    permissions: \"0x644\"\n",
		"#cloud-config\nusers:\n  - name: ops\n    ssh_authorized_keys: [" + sshKey("ssh-ed25519", "x") + "]\n",
		"#cloud-config\nnetwork:\n  interfaces:\n    - {name: eth0, addresses: [10.0.0.2/24], gateway: 10.0.0.1, mac: \"52:54:00:00:00:01\"}\n",
		"#cloud-config\nk3s:\n  node-label: [node-role.kubernetes.io/worker=true]\n  node-taint: a=b:NoSchedule\n",
		"#cloud-config\nruncmd:\n  - [a, [b]]\n  - {a: b}\n  - x\n",
		"#cloud-config\nballast: {sysctls: {a.b: 1}, ssh: {port: 99999999999}}\n",
		"#cloud-config\nk3s: {x: .nan, y: .inf, z: 0x1F, w: 1e400}\n",
		"#cloud-config\nwrite_files:\n  - path: /a\n    content: !!binary \"%%%\"\n",
		"#cloud-config\n\x00\n",
		"#cloud-config\nhostname: \"\xff\"\n",
		"#cloud-config\n\tbad: indent\n",
		strings.Replace(k3osConfig, "SSH_KEY", sshKey("ssh-rsa", "k"), 1),
		string(examples.DefaultCloudConfig),
		aliasBomb,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, warns, err := ParseWithWarnings("fuzz", data)
		for _, w := range warns {
			if w.Source != "fuzz" || w.Line <= 0 {
				t.Errorf("warning without position: %+v", w)
			}
		}
		if err != nil {
			if cfg != nil {
				t.Errorf("config returned with an error")
			}
			var list *ErrorList
			if !errors.As(err, &list) || len(list.Errors) == 0 {
				t.Fatalf("error is not a non-empty *ErrorList: %T %v", err, err)
			}
			for _, e := range list.Errors {
				if e.Source != "fuzz" || e.Line <= 0 || e.Message == "" {
					t.Errorf("error without position: %+v", e)
				}
			}
			return
		}
		if cfg == nil {
			t.Fatal("nil config without error")
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("parsed config fails Validate: %v", err)
		}
		eff := cfg.Effective()
		if err := eff.Validate(); err != nil {
			t.Errorf("effective config fails Validate: %v", err)
		}
		if _, err := cfg.K3sConfigYAML(); err != nil {
			t.Errorf("K3sConfigYAML: %v", err)
		}
		if Merge(cfg).Hash() != eff.Hash() {
			t.Errorf("Merge of one config differs from its Effective")
		}
		for _, wf := range cfg.WriteFiles {
			if _, err := wf.Decode(); err != nil {
				t.Errorf("validated file does not decode: %v", err)
			}
		}
	})
}
