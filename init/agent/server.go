package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Handler answers the agent's methods. The init implements it; Serve
// decodes requests, checks privileges and encodes the answers.
type Handler interface {
	Status() Status
	Logs(LogsParams) (Logs, error)
	// Exec runs a command. ctx carries the request's time-out.
	Exec(ctx context.Context, p ExecParams) (ExecResult, error)
	// Poweroff and Reboot start the shutdown and return; the answer is
	// written after they return, so they must not wait for the machine
	// to go down.
	Poweroff() error
	Reboot() error
	// Privileged reports whether exec, poweroff and reboot are allowed
	// (the cloud-config's ballast.agent.privileged).
	Privileged() bool
}

// DefaultExecTimeout applies when ExecParams.Timeout is zero.
const DefaultExecTimeout = 60 * time.Second

// DefaultLogLines applies when LogsParams.Lines is zero.
const DefaultLogLines = 200

// maxInFlight bounds the requests handled at once on one connection;
// the reader waits when it is reached.
const maxInFlight = 8

// Serve answers the requests read from rw, one JSON line each, until rw
// reports EOF (nil is returned), a read or write fails, or ctx is done.
// Requests are handled concurrently, so a status call is answered while
// a long exec runs; answers may come out of order and carry the
// request's ID. A line that cannot be decoded is answered with
// CodeBadRequest and ID 0, and serving goes on.
func Serve(ctx context.Context, rw io.ReadWriter, h Handler) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &server{w: rw, h: h}
	var wg sync.WaitGroup
	// Handlers get ctx, which is cancelled when the connection ends, so
	// that an exec does not outlive its caller.
	defer wg.Wait()
	defer cancel()

	sem := make(chan struct{}, maxInFlight)
	r := bufio.NewReaderSize(rw, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		line, tooLong, err := readLine(r)
		if tooLong {
			if werr := s.write(Response{Error: &Error{Code: CodeBadRequest, Message: fmt.Sprintf("request longer than %d bytes", MaxLine)}}); werr != nil {
				return werr
			}
		} else if len(bytes.TrimSpace(line)) > 0 {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				s.handleLine(ctx, line)
			}()
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("agent: reading request: %w", err)
		}
		if werr := s.writeErr(); werr != nil {
			return werr
		}
	}
}

// readLine reads one line of at most MaxLine bytes, without its "\n".
// A longer line is consumed up to its end and reported as tooLong. A
// last line without "\n" is returned with io.EOF.
func readLine(r *bufio.Reader) (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(chunk) > MaxLine+1 { // +1: the newline
				tooLong = true
				buf = nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if tooLong {
			return nil, true, err
		}
		buf = bytes.TrimSuffix(buf, []byte("\n"))
		buf = bytes.TrimSuffix(buf, []byte("\r"))
		return buf, false, err
	}
}

type server struct {
	h Handler

	mu     sync.Mutex // serialises writes: one response per line
	w      io.Writer
	failed error // first write error; ends Serve
}

// request is Request with its parameters left encoded until the method
// is known.
type request struct {
	ID     uint64          `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

func (s *server) handleLine(ctx context.Context, line []byte) {
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		s.write(Response{Error: &Error{Code: CodeBadRequest, Message: "decoding request: " + err.Error()}})
		return
	}
	result, err := s.call(ctx, req)
	resp := Response{ID: req.ID}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Code: CodeFailed, Message: err.Error()}
		}
		resp.Error = e
	} else {
		resp.Result = result
	}
	s.write(resp)
}

func badRequest(format string, args ...any) error {
	return &Error{Code: CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

// decodeParams decodes strictly: an unknown field is a bad request, so a
// typo on the host side is reported rather than ignored.
func decodeParams(method string, raw json.RawMessage, v any) error {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return badRequest("%s: params: %v", method, err)
	}
	return nil
}

func (s *server) call(ctx context.Context, req request) (any, error) {
	switch req.Method {
	case MethodPing:
		return "pong", nil
	case MethodStatus:
		return s.h.Status(), nil
	case MethodLogs:
		var p LogsParams
		if err := decodeParams(req.Method, req.Params, &p); err != nil {
			return nil, err
		}
		if p.Name == "" {
			return nil, badRequest("logs: params.name is required (\"console\" or a service name)")
		}
		if p.Lines < 0 {
			return nil, badRequest("logs: params.lines is %d, want >= 0", p.Lines)
		}
		if p.Lines == 0 {
			p.Lines = DefaultLogLines
		}
		return s.h.Logs(p)
	case MethodExec:
		if !s.h.Privileged() {
			return nil, forbidden(req.Method)
		}
		var p ExecParams
		if err := decodeParams(req.Method, req.Params, &p); err != nil {
			return nil, err
		}
		if len(p.Argv) == 0 || p.Argv[0] == "" {
			return nil, badRequest("exec: params.argv is empty")
		}
		if p.Timeout < 0 {
			return nil, badRequest("exec: params.timeout_s is %d, want >= 0", p.Timeout)
		}
		timeout := DefaultExecTimeout
		if p.Timeout > 0 {
			timeout = time.Duration(p.Timeout) * time.Second
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return s.h.Exec(ctx, p)
	case MethodPoweroff, MethodReboot:
		if !s.h.Privileged() {
			return nil, forbidden(req.Method)
		}
		if err := decodeParams(req.Method, req.Params, &struct{}{}); err != nil {
			return nil, err
		}
		var err error
		if req.Method == MethodPoweroff {
			err = s.h.Poweroff()
		} else {
			err = s.h.Reboot()
		}
		return nil, err
	case "":
		return nil, badRequest("request has no method")
	default:
		return nil, &Error{Code: CodeUnknownMethod, Message: fmt.Sprintf("unknown method %q", req.Method)}
	}
}

func forbidden(method string) error {
	return &Error{Code: CodeForbidden, Message: method + " is not enabled: set ballast: {agent: {privileged: true}} in the cloud-config"}
}

// write encodes resp as one line. An answer that cannot be encoded, or
// that is longer than MaxLine, is replaced by an error for the same ID.
func (s *server) write(resp Response) error {
	b, err := json.Marshal(resp)
	if err != nil {
		b, _ = json.Marshal(Response{ID: resp.ID, Error: &Error{Code: CodeFailed, Message: "encoding answer: " + err.Error()}})
	} else if len(b) > MaxLine {
		b, _ = json.Marshal(Response{ID: resp.ID, Error: &Error{Code: CodeFailed, Message: fmt.Sprintf("answer is %d bytes, longer than %d", len(b), MaxLine)}})
	}
	b = append(b, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	if _, err := s.w.Write(b); err != nil {
		s.failed = fmt.Errorf("agent: writing answer: %w", err)
		return s.failed
	}
	return nil
}

func (s *server) writeErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}
