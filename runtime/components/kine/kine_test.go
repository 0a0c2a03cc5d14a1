package kine

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/runtime/componentargs"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestParseArgs(t *testing.T) {
	o, err := ParseArgs([]string{"--listen-address=unix:///run/k.sock", "--endpoint", "sqlite:///db/state.db"}, io.Discard)
	if err != nil || o.Listen != "unix:///run/k.sock" || o.Endpoint != "sqlite:///db/state.db" || o.CompactInterval != 5*time.Minute {
		t.Errorf("%+v %v", o, err)
	}
	for _, args := range [][]string{{"--endpoint=sqlite:///x"}, {"--listen-address=unix:///x"}, {"--listen-address=unix:///x", "--endpoint=sqlite:///x", "extra"}, {"--bogus"}} {
		if _, err := ParseArgs(args, io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// TestServesEtcdAPI runs kine over sqlite on a unix socket and uses it
// through the etcd v3 client, as kube-apiserver does.
func TestServesEtcdAPI(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "kine.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// The DSN the server passes (synchronous=FULL among its parameters).
		done <- Run(ctx, Options{Listen: "unix://" + sock, Endpoint: "sqlite://" + filepath.Join(dir, "state.db") + "?" + componentargs.KineSQLiteParams, CompactInterval: time.Minute})
	}()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var resp *clientv3.GetResponse
	for deadline := time.Now().Add(30 * time.Second); ; {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = cli.Put(cctx, "/registry/test/a", "one")
		if err == nil {
			resp, err = cli.Get(cctx, "/registry/test/a")
		}
		ccancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "one" {
		t.Errorf("get: %+v", resp.Kvs)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestRefusesOtherDrivers(t *testing.T) {
	err := Run(context.Background(), Options{Listen: "unix://" + filepath.Join(t.TempDir(), "s"), Endpoint: "postgres://u:p@db/k3s"})
	if err == nil || !strings.Contains(err.Error(), "only sqlite:// is linked") {
		t.Errorf("postgres endpoint: %v", err)
	}
}
