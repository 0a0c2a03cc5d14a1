package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// MaxExecOutput is how much of a command's stdout, and of its stderr, an
// ExecResult keeps: both fit in one MaxLine answer as text (binary output
// that JSON escaping blows past MaxLine is answered with CodeFailed).
const MaxExecOutput = 1 << 20

// RunCommand runs p.Argv until it exits or ctx is done, the usual body of
// a Handler's Exec. The command gets its own process group, so that a
// time-out kills what it started too. A command that cannot start, or
// that is killed by the time-out, is an error; a non-zero exit is not
// (see ExecResult.ExitCode).
//
// RunCommand waits with exec.Cmd.Wait: an init that reaps every child
// must leave this one to Wait.
func RunCommand(ctx context.Context, p ExecParams) (ExecResult, error) {
	if len(p.Argv) == 0 {
		return ExecResult{}, badRequest("exec: argv is empty")
	}
	cmd := exec.CommandContext(ctx, p.Argv[0], p.Argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Kill the whole group; the leader alone may leave children
		// holding the output pipes open.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 2 * time.Second
	if p.Stdin != "" {
		cmd.Stdin = strings.NewReader(p.Stdin)
	}
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	stdout := &cappedBuffer{max: MaxExecOutput}
	stderr := &cappedBuffer{max: MaxExecOutput}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	res := ExecResult{Stdout: stdout.String(), Stderr: stderr.String()}
	if err != nil {
		var exitErr *exec.ExitError
		switch {
		case ctx.Err() != nil:
			res.ExitCode = -1
			return res, &Error{Code: CodeFailed, Message: fmt.Sprintf("exec %q: %v", p.Argv[0], ctx.Err())}
		case errors.As(err, &exitErr):
			res.ExitCode = exitErr.ExitCode() // -1 when killed by a signal
		default:
			return res, &Error{Code: CodeFailed, Message: fmt.Sprintf("exec %q: %v", p.Argv[0], err)}
		}
	}
	return res, nil
}

// cappedBuffer keeps the first max bytes written and counts the rest.
type cappedBuffer struct {
	max     int
	buf     []byte
	dropped int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	n := min(len(p), b.max-len(b.buf))
	b.buf = append(b.buf, p[:n]...)
	b.dropped += len(p) - n
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	if b.dropped == 0 {
		return string(b.buf)
	}
	return fmt.Sprintf("%s\n[agent: output truncated, %d bytes dropped]\n", b.buf, b.dropped)
}
