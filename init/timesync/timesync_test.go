package timesync

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

const ntpEpochOffset = 2208988800

func ntpTime(t time.Time) uint64 {
	secs := uint64(t.Unix() + ntpEpochOffset)
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return secs<<32 | frac
}

// fakeServer answers NTPv4 client requests with its clock shifted by
// skew, like a server whose time is skew ahead of ours.
func fakeServer(t *testing.T, skew time.Duration) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, addr, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 48 {
				continue
			}
			recv := time.Now().Add(skew)
			resp := make([]byte, 48)
			resp[0] = 0<<6 | 4<<3 | 4 // leap none, version 4, mode server
			resp[1] = 2               // stratum
			resp[2] = 6               // poll
			resp[3] = 0xEC            // precision
			binary.BigEndian.PutUint32(resp[12:], 0x7f000001)
			binary.BigEndian.PutUint64(resp[16:], ntpTime(recv.Add(-time.Minute))) // reference
			copy(resp[24:32], buf[40:48])                                          // origin = client's transmit
			binary.BigEndian.PutUint64(resp[32:], ntpTime(recv))
			binary.BigEndian.PutUint64(resp[40:], ntpTime(time.Now().Add(skew)))
			conn.WriteTo(resp, addr)
		}
	}()
	return conn.LocalAddr().String()
}

// deadServer is a UDP port that never answers.
func deadServer(t *testing.T) string {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn.LocalAddr().String()
}

type recorder struct {
	mu  sync.Mutex
	set []time.Time
}

func (r *recorder) SetClock(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set = append(r.set, t)
	return nil
}

func TestSyncSetsClock(t *testing.T) {
	skew := 3 * time.Hour
	var rec recorder
	start := time.Now()
	// The first server never answers; the second does.
	off, err := Sync(context.Background(), []string{deadServer(t), fakeServer(t, skew)}, Options{SetClock: rec.SetClock})
	if err != nil {
		t.Fatal(err)
	}
	if d := off - skew; d < -time.Second || d > time.Second {
		t.Errorf("offset %v, want about %v", off, skew)
	}
	if len(rec.set) != 1 {
		t.Fatalf("clock set %d times", len(rec.set))
	}
	if d := rec.set[0].Sub(start.Add(skew)); d < -time.Second || d > 3*time.Second {
		t.Errorf("clock set to %v, want about %v", rec.set[0], start.Add(skew))
	}
}

func TestSyncGivesUpQuickly(t *testing.T) {
	var rec recorder
	start := time.Now()
	_, err := Sync(context.Background(), []string{deadServer(t), deadServer(t), deadServer(t), deadServer(t)}, Options{SetClock: rec.SetClock, Timeout: 1500 * time.Millisecond})
	el := time.Since(start)
	if err == nil {
		t.Fatal("no error from dead servers")
	}
	if el > 2500*time.Millisecond {
		t.Errorf("Sync took %v with a 1.5 s timeout", el)
	}
	if !strings.Contains(err.Error(), "no server answered") {
		t.Errorf("error %q", err)
	}
	if len(rec.set) != 0 {
		t.Errorf("clock set without an answer")
	}
	if _, err := Sync(context.Background(), nil, Options{}); err != ErrNoServers {
		t.Errorf("no servers: %v", err)
	}
}

func TestRunKeepsSyncing(t *testing.T) {
	var rec recorder
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Run(ctx, []string{fakeServer(t, time.Minute)}, 50*time.Millisecond, Options{SetClock: rec.SetClock})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		rec.mu.Lock()
		n := len(rec.set)
		rec.mu.Unlock()
		if n >= 3 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v", err)
	}
	if len(rec.set) < 3 {
		t.Errorf("clock set %d times in 5 s at a 50 ms interval", len(rec.set))
	}
}

// An answer before the image's build time, or one that would step a sane
// clock years forward, is refused; the next server is asked.
func TestSyncRefusesAbsurdAnswers(t *testing.T) {
	var rec recorder
	floor := time.Now().Add(-24 * time.Hour)
	back := fakeServer(t, -20*365*24*time.Hour) // says 2006
	ahead := fakeServer(t, 10*365*24*time.Hour) // says 2036
	good := fakeServer(t, time.Minute)
	off, err := Sync(context.Background(), []string{back, ahead, good}, Options{SetClock: rec.SetClock, Floor: floor, Timeout: 10 * time.Second})
	if err != nil || off < 50*time.Second || off > 70*time.Second || len(rec.set) != 1 {
		t.Fatalf("offset %v, err %v, set %v", off, err, rec.set)
	}
	_, err = Sync(context.Background(), []string{back, ahead}, Options{SetClock: rec.SetClock, Floor: floor, Timeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "before this image was built") || !strings.Contains(err.Error(), "forward: refused") {
		t.Errorf("err = %v", err)
	}
}
