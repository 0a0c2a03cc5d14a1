package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/mdlayher/vsock"
)

// ErrClosed is returned by calls on a client whose connection has ended.
var ErrClosed = errors.New("agent: connection closed")

// Client calls the agent over one connection. Calls may run concurrently;
// answers are matched to calls by ID, and answers to nobody's call (left
// over from an earlier connection to the same port) are dropped.
type Client struct {
	rwc io.ReadWriteCloser

	wmu sync.Mutex // serialises request lines

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan rawResponse
	err     error         // why the connection ended; set once
	done    chan struct{} // closed when the connection has ended
}

// Dial connects to an agent. network is "unix" or "tcp" (addr as for
// net.Dial), or "vsock" with addr "CID:PORT".
func Dial(ctx context.Context, network, addr string) (*Client, error) {
	var conn net.Conn
	var err error
	if network == "vsock" {
		cid, port, perr := parseVsockAddr(addr)
		if perr != nil {
			return nil, perr
		}
		conn, err = vsock.DialContext(ctx, cid, port, nil)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, addr)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: dial %s %s: %w", network, addr, err)
	}
	return NewClient(conn), nil
}

func parseVsockAddr(addr string) (cid, port uint32, err error) {
	c, p, ok := strings.Cut(addr, ":")
	if ok {
		var c64, p64 uint64
		c64, err = strconv.ParseUint(c, 10, 32)
		if err == nil {
			p64, err = strconv.ParseUint(p, 10, 32)
		}
		if err == nil {
			return uint32(c64), uint32(p64), nil
		}
	}
	return 0, 0, fmt.Errorf("agent: vsock address %q: want CID:PORT", addr)
}

// NewClient starts a client on rwc, which it owns: Close closes it.
func NewClient(rwc io.ReadWriteCloser) *Client {
	// IDs start at a random point so that answers meant for an earlier
	// client on the same port cannot be taken for ours.
	var seed [8]byte
	rand.Read(seed[:])
	c := &Client{
		rwc:     rwc,
		nextID:  binary.LittleEndian.Uint64(seed[:]) >> 16,
		pending: make(map[uint64]chan rawResponse),
		done:    make(chan struct{}),
	}
	go c.readLoop()
	return c
}

// Close ends the connection; calls in flight return ErrClosed.
func (c *Client) Close() error {
	err := c.rwc.Close()
	c.fail(ErrClosed)
	return err
}

// Done is closed when the connection has ended; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// rawResponse is Response with its result left encoded until the caller
// says what it should be.
type rawResponse struct {
	ID     uint64          `json:"id"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// parseResponse decodes one answer line.
func parseResponse(line []byte) (rawResponse, error) {
	var r rawResponse
	if err := json.Unmarshal(line, &r); err != nil {
		return rawResponse{}, fmt.Errorf("agent: decoding answer: %w", err)
	}
	if r.Error != nil && r.Error.Code == "" {
		return rawResponse{}, fmt.Errorf("agent: answer %d has an error without a code", r.ID)
	}
	return r, nil
}

func (c *Client) readLoop() {
	r := bufio.NewReaderSize(c.rwc, 64<<10)
	for {
		line, tooLong, err := readLine(r)
		if !tooLong && len(bytes.TrimSpace(line)) > 0 {
			// A line that does not decode is dropped: the guest's
			// port may carry a partial line from before we connected.
			if resp, perr := parseResponse(line); perr == nil {
				c.deliver(resp)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrClosed
			}
			c.fail(err)
			return
		}
	}
}

func (c *Client) deliver(resp rawResponse) {
	c.mu.Lock()
	ch, ok := c.pending[resp.ID]
	delete(c.pending, resp.ID)
	c.mu.Unlock()
	if ok {
		ch <- resp // buffered: never blocks
	}
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	close(c.done)
}

// Call sends method with params and decodes the answer's result into
// result (which may be nil). An error answer is returned as *Error.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	_, err := c.call(ctx, method, params, result)
	return err
}

// call is Call that also reports whether the request was sent whole.
func (c *Client) call(ctx context.Context, method string, params, result any) (sent bool, err error) {
	ch := make(chan rawResponse, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return false, fmt.Errorf("agent: %s: %w", method, err)
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	line, err := json.Marshal(Request{ID: id, Method: method, Params: params})
	if err != nil {
		return false, fmt.Errorf("agent: %s: encoding request: %w", method, err)
	}
	line = append(line, '\n')
	if err := c.write(ctx, line); err != nil {
		return false, fmt.Errorf("agent: %s: %w", method, err)
	}

	select {
	case resp := <-ch:
		if resp.Error != nil {
			return true, resp.Error
		}
		if result == nil || len(resp.Result) == 0 {
			return true, nil
		}
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return true, fmt.Errorf("agent: %s: decoding result: %w", method, err)
		}
		return true, nil
	case <-ctx.Done():
		return true, fmt.Errorf("agent: %s: %w", method, ctx.Err())
	case <-c.done:
		return true, fmt.Errorf("agent: %s: %w", method, c.Err())
	}
}

// write sends one request line; a write that blocks past ctx (a guest
// that does not read) gives up, and the connection is closed because a
// half-written line would garble the next one.
func (c *Client) write(ctx context.Context, line []byte) error {
	errc := make(chan error, 1)
	go func() {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		_, err := c.rwc.Write(line)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err != nil {
			c.rwc.Close()
			c.fail(err)
		}
		return err
	case <-ctx.Done():
		c.rwc.Close()
		c.fail(fmt.Errorf("writing a request: %w", ctx.Err()))
		return ctx.Err()
	case <-c.done:
		return c.Err()
	}
}

// Ping checks that the agent answers.
func (c *Client) Ping(ctx context.Context) error {
	var pong string
	if err := c.Call(ctx, MethodPing, nil, &pong); err != nil {
		return err
	}
	if pong != "pong" {
		return fmt.Errorf("agent: ping answered %q, want \"pong\"", pong)
	}
	return nil
}

// Status asks for the node's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := c.Call(ctx, MethodStatus, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Logs asks for the last lines of a log: "console" or a service name.
func (c *Client) Logs(ctx context.Context, p LogsParams) (*Logs, error) {
	var l Logs
	if err := c.Call(ctx, MethodLogs, p, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Exec runs a command on the node (privileged). A command that runs and
// exits non-zero is not an error: see ExecResult.ExitCode.
func (c *Client) Exec(ctx context.Context, p ExecParams) (*ExecResult, error) {
	var r ExecResult
	if err := c.Call(ctx, MethodExec, p, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Poweroff asks the node to power off (privileged). The node may go
// down before its answer arrives: a connection that ends after the
// request was sent counts as success.
func (c *Client) Poweroff(ctx context.Context) error {
	return c.shutdown(ctx, MethodPoweroff)
}

// Reboot asks the node to reboot (privileged), like Poweroff.
func (c *Client) Reboot(ctx context.Context) error {
	return c.shutdown(ctx, MethodReboot)
}

func (c *Client) shutdown(ctx context.Context, method string) error {
	sent, err := c.call(ctx, method, nil, nil)
	var answer *Error
	if err != nil && sent && !errors.As(err, &answer) && ctx.Err() == nil {
		// Sent, then the connection ended: the node is going down.
		return nil
	}
	return err
}
