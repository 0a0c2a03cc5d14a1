package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzServe feeds random input to the server: it never panics, every
// non-blank line gets exactly one answer line, and every answer is one
// the client can parse.
func FuzzServe(f *testing.F) {
	for _, seed := range []string{
		`{"id":1,"method":"ping"}`,
		`{"id":2,"method":"status"}`,
		`{"id":3,"method":"logs","params":{"name":"console","lines":2}}`,
		`{"id":4,"method":"exec","params":{"argv":["true"],"timeout_s":1}}`,
		`{"id":5,"method":"poweroff"}`,
		`{"id":6,"method":"reboot","params":null}`,
		`{"id":7,"method":"logs","params":{"name":"x","lines":-1}}`,
		`{"id":18446744073709551615,"method":"ping"}`,
		`{"id":-1,"method":"ping"}`,
		`{"id":1.5}`,
		`[1,2,3]`,
		`null`,
		"{\"id\":1,\"method\":\"ping\"}\r\n{\"id\":2,\"method\":\"ping\"}",
		"\x00\xff\n\n",
		`{"id":1,"method":"exec","params":{"argv":[""]}}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		// Exec would run whatever the fuzzer writes: use a handler
		// that is privileged but does not run anything.
		h := &noExecHandler{fakeHandler{privileged: true}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rw := &rwBuffer{r: strings.NewReader(in)}
		if err := Serve(ctx, rw, h); err != nil {
			t.Fatalf("Serve: %v", err)
		}
		want := 0
		for _, line := range strings.Split(in, "\n") {
			if len(bytes.TrimSpace([]byte(line))) > 0 {
				want++
			}
		}
		out := rw.w.String()
		if want > 0 && !strings.HasSuffix(out, "\n") {
			t.Fatalf("output does not end in a newline: %q", out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if out == "" {
			lines = nil
		}
		if len(lines) != want {
			t.Fatalf("%d non-blank request lines, %d answers:\nin:  %q\nout: %q", want, len(lines), in, out)
		}
		for _, line := range lines {
			if _, err := parseResponse([]byte(line)); err != nil {
				t.Fatalf("answer %q does not parse: %v", line, err)
			}
		}
	})
}

type noExecHandler struct{ fakeHandler }

func (h *noExecHandler) Exec(ctx context.Context, p ExecParams) (ExecResult, error) {
	return ExecResult{Stdout: strings.Join(p.Argv, " ")}, nil
}

// FuzzParseResponse checks the client's answer parser on random lines:
// no panic, and what it accepts survives being encoded again.
func FuzzParseResponse(f *testing.F) {
	for _, seed := range []string{
		`{"id":1,"result":"pong"}`,
		`{"id":2,"result":{"boot":{"ready":true,"stages":[{"name":"mount"}]}}}`,
		`{"id":3,"error":{"code":"forbidden","message":"no"}}`,
		`{"id":4,"error":{"message":"no code"}}`,
		`{"id":5,"error":null}`,
		`{"id":"6"}`,
		`{}`,
		`garbage`,
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r, err := parseResponse([]byte(line))
		if err != nil {
			return
		}
		if r.Error != nil && r.Error.Code == "" {
			t.Fatalf("accepted an error without a code: %q", line)
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("re-encoding %q: %v", line, err)
		}
		r2, err := parseResponse(again)
		if err != nil || r2.ID != r.ID || (r2.Error == nil) != (r.Error == nil) {
			t.Fatalf("%q re-encoded as %q parses as %+v, %v", line, again, r2, err)
		}
		// Decoding into a typed result must not panic either.
		var st Status
		_ = json.Unmarshal(r.Result, &st)
	})
}
