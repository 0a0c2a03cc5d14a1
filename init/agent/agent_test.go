package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHandler records what the server asked of it.
type fakeHandler struct {
	privileged bool

	mu        sync.Mutex
	poweroffs int
	reboots   int
	execs     []ExecParams
}

func (h *fakeHandler) Status() Status {
	return Status{Hostname: "node-1", Boot: Boot{Ready: true, Stages: []Stage{{Name: "mount", Phase: "initramfs", DurationMS: 12}}}}
}

func (h *fakeHandler) Logs(p LogsParams) (Logs, error) {
	if p.Name != "console" {
		return Logs{}, errors.New("no log named " + p.Name)
	}
	lines := make([]string, p.Lines)
	for i := range lines {
		lines[i] = "line"
	}
	return Logs{Name: p.Name, Lines: lines}, nil
}

func (h *fakeHandler) Exec(ctx context.Context, p ExecParams) (ExecResult, error) {
	h.mu.Lock()
	h.execs = append(h.execs, p)
	h.mu.Unlock()
	if p.Argv[0] == "sleep" {
		<-ctx.Done()
		return ExecResult{}, ctx.Err()
	}
	return RunCommand(ctx, p)
}

func (h *fakeHandler) Poweroff() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.poweroffs++
	return nil
}

func (h *fakeHandler) Reboot() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reboots++
	return nil
}

func (h *fakeHandler) Privileged() bool { return h.privileged }

// pipe starts a server on one end of a net.Pipe and a client on the other.
func pipe(t *testing.T, h Handler) *Client {
	t.Helper()
	srv, cli := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, h) }()
	c := NewClient(cli)
	t.Cleanup(func() {
		c.Close()
		cancel()
		srv.Close()
		<-done
	})
	return c
}

func TestClientServer(t *testing.T) {
	h := &fakeHandler{privileged: true}
	c := pipe(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Hostname != "node-1" || !st.Boot.Ready || len(st.Boot.Stages) != 1 || st.Boot.Stages[0].DurationMS != 12 {
		t.Errorf("Status = %+v, want the handler's status", st)
	}

	logs, err := c.Logs(ctx, LogsParams{Name: "console"})
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	if len(logs.Lines) != DefaultLogLines {
		t.Errorf("Logs with lines=0 gave %d lines, want the default %d", len(logs.Lines), DefaultLogLines)
	}
	_, err = c.Logs(ctx, LogsParams{Name: "k3s", Lines: 3})
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeFailed || !strings.Contains(e.Message, "no log named k3s") {
		t.Errorf("Logs of a missing log: err = %v, want a %s error naming it", err, CodeFailed)
	}

	res, err := c.Exec(ctx, ExecParams{Argv: []string{"sh", "-c", "echo out; echo err >&2; read x; echo $x; exit 3"}, Stdin: "typed\n"})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if res.ExitCode != 3 || res.Stdout != "out\ntyped\n" || res.Stderr != "err\n" {
		t.Errorf("Exec = %+v, want exit 3, stdout out+typed, stderr err", res)
	}
	_, err = c.Exec(ctx, ExecParams{Argv: []string{"/nonexistent/command"}})
	if !errors.As(err, &e) || e.Code != CodeFailed {
		t.Errorf("Exec of a missing command: err = %v, want a %s error", err, CodeFailed)
	}

	if err := c.Poweroff(ctx); err != nil {
		t.Errorf("Poweroff: %v", err)
	}
	if err := c.Reboot(ctx); err != nil {
		t.Errorf("Reboot: %v", err)
	}
	if h.poweroffs != 1 || h.reboots != 1 {
		t.Errorf("handler saw %d poweroffs and %d reboots, want 1 and 1", h.poweroffs, h.reboots)
	}

	err = c.Call(ctx, "frobnicate", nil, nil)
	if !errors.As(err, &e) || e.Code != CodeUnknownMethod {
		t.Errorf("unknown method: err = %v, want %s", err, CodeUnknownMethod)
	}
	err = c.Call(ctx, MethodLogs, map[string]any{"name": "console", "lnies": 3}, nil)
	if !errors.As(err, &e) || e.Code != CodeBadRequest || !strings.Contains(e.Message, "lnies") {
		t.Errorf("misspelt param: err = %v, want %s naming the field", err, CodeBadRequest)
	}
}

func TestUnprivileged(t *testing.T) {
	h := &fakeHandler{}
	c := pipe(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, call := range map[string]func() error{
		"exec":     func() error { _, err := c.Exec(ctx, ExecParams{Argv: []string{"true"}}); return err },
		"poweroff": func() error { return c.Poweroff(ctx) },
		"reboot":   func() error { return c.Reboot(ctx) },
	} {
		var e *Error
		if err := call(); !errors.As(err, &e) || e.Code != CodeForbidden {
			t.Errorf("%s when not privileged: err = %v, want %s", name, err, CodeForbidden)
		}
	}
	if len(h.execs) != 0 || h.poweroffs != 0 || h.reboots != 0 {
		t.Errorf("handler was called although not privileged: %+v", h)
	}
	if _, err := c.Status(ctx); err != nil {
		t.Errorf("Status when not privileged: %v", err)
	}
}

// TestConcurrentCalls checks that a status call is answered while an
// exec is still running, and that answers reach their own callers.
func TestConcurrentCalls(t *testing.T) {
	h := &fakeHandler{privileged: true}
	c := pipe(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	slow, cancelSlow := context.WithCancel(ctx)
	slowDone := make(chan error, 1)
	go func() {
		_, err := c.Exec(slow, ExecParams{Argv: []string{"sleep"}, Timeout: 1})
		slowDone <- err
	}()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := strings.Repeat("x", i)
			res, err := c.Exec(ctx, ExecParams{Argv: []string{"printf", "%s", want}})
			if err != nil || res.Stdout != want {
				t.Errorf("call %d: %+v, %v; want stdout %q", i, res, err, want)
			}
		}()
	}
	wg.Wait()
	if _, err := c.Status(ctx); err != nil {
		t.Errorf("Status while exec runs: %v", err)
	}
	// The server's time-out (1 s) ends the slow exec.
	select {
	case err := <-slowDone:
		var e *Error
		if !errors.As(err, &e) || !strings.Contains(e.Message, "deadline") {
			t.Errorf("slow exec: err = %v, want a deadline error", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the exec time-out did not end the call")
	}
	cancelSlow()
}

func TestClientDeadline(t *testing.T) {
	// A server that reads but never answers.
	srv, cli := net.Pipe()
	defer srv.Close()
	go func() {
		r := bufio.NewReader(srv)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
		}
	}()
	c := NewClient(cli)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Ping(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ping to a silent server: err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Ping took %v past a 200ms deadline", d)
	}
}

func TestClientConnectionEnds(t *testing.T) {
	srv, cli := net.Pipe()
	c := NewClient(cli)
	go func() {
		r := bufio.NewReader(srv)
		r.ReadString('\n')
		srv.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping when the server hangs up: err = %v, want ErrClosed", err)
	}
	// Poweroff treats a hang-up after the request as the node going down.
	srv2, cli2 := net.Pipe()
	c2 := NewClient(cli2)
	go func() {
		r := bufio.NewReader(srv2)
		r.ReadString('\n')
		srv2.Close()
	}()
	if err := c2.Poweroff(ctx); err != nil {
		t.Errorf("Poweroff when the node hangs up: %v, want nil", err)
	}
}

// TestServerLines drives the server with raw lines: each gets exactly
// one answer, bad ones included, and serving goes on.
func TestServerLines(t *testing.T) {
	in := strings.Join([]string{
		`{"id":1,"method":"ping"}`,
		`not json`,
		``,
		`{"id":2,"method":"ping"}` + "\r",
		`{"id":3}`,
		`{"id":4,"method":"exec","params":{"argv":[]}}`,
		`{"id":5,"method":"logs","params":"console"}`,
		`{"id":6,"method":"poweroff","params":{"now":true}}`,
		`{"id":7,"method":"status"}`,
	}, "\n") + "\n" + strings.Repeat("a", MaxLine+10) + "\n" + `{"id":8,"method":"ping"}`
	out := runServer(t, in, &fakeHandler{privileged: true})
	want := map[uint64]string{1: "", 2: "", 3: CodeBadRequest, 4: CodeBadRequest, 5: CodeBadRequest, 6: CodeBadRequest, 7: "", 8: ""}
	var zeroIDs int
	for _, r := range out {
		if r.ID == 0 {
			if r.Error == nil || r.Error.Code != CodeBadRequest {
				t.Errorf("answer with ID 0 = %+v, want a bad request", r)
			}
			zeroIDs++
			continue
		}
		code, ok := want[r.ID]
		if !ok {
			t.Errorf("unexpected answer %+v", r)
			continue
		}
		delete(want, r.ID)
		got := ""
		if r.Error != nil {
			got = r.Error.Code
		}
		if got != code {
			t.Errorf("answer %d: error %q, want %q (%+v)", r.ID, got, code, r.Error)
		}
	}
	if zeroIDs != 2 {
		t.Errorf("got %d ID-0 answers, want 2 (not json, too long)", zeroIDs)
	}
	for id := range want {
		t.Errorf("no answer for request %d", id)
	}
}

// rwBuffer feeds in to the server and collects what it writes.
type rwBuffer struct {
	r  *strings.Reader
	mu sync.Mutex
	w  strings.Builder
}

func (b *rwBuffer) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *rwBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Write(p)
}

func runServer(t testing.TB, in string, h Handler) []rawResponse {
	t.Helper()
	rw := &rwBuffer{r: strings.NewReader(in)}
	if err := Serve(context.Background(), rw, h); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	var out []rawResponse
	for _, line := range strings.Split(strings.TrimSuffix(rw.w.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		if len(line) > MaxLine {
			t.Fatalf("answer of %d bytes, longer than MaxLine", len(line))
		}
		r, err := parseResponse([]byte(line))
		if err != nil {
			t.Fatalf("server wrote an answer the client cannot parse: %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

func TestRunCommandCapsOutput(t *testing.T) {
	res, err := RunCommand(context.Background(), ExecParams{Argv: []string{"head", "-c", "3000000", "/dev/zero"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stdout) > MaxExecOutput+100 || !strings.Contains(res.Stdout, "truncated") {
		t.Errorf("stdout is %d bytes, want it capped at %d with a note", len(res.Stdout), MaxExecOutput)
	}
	b, _ := json.Marshal(Response{ID: 1, Result: res})
	if len(b) > MaxLine {
		t.Logf("NUL output escapes to %d bytes; the server answers with an error instead", len(b))
	}
}

func TestRunCommandTimeoutKillsGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	// The background sleep keeps stdout open: only a group kill ends it.
	_, err := RunCommand(ctx, ExecParams{Argv: []string{"sh", "-c", "sleep 30 & sleep 30"}})
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v after a 300ms time-out", d)
	}
}
