package qemutest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// qmpPowerdown presses the ACPI power button through QEMU's QMP socket.
func qmpPowerdown(ctx context.Context, sock string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("QMP: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	r := bufio.NewReader(conn)
	// The greeting, then capabilities negotiation, then the command.
	if _, err := r.ReadBytes('\n'); err != nil {
		return fmt.Errorf("QMP greeting: %w", err)
	}
	for _, cmd := range []string{"qmp_capabilities", "system_powerdown"} {
		if _, err := fmt.Fprintf(conn, `{"execute":%q}`+"\n", cmd); err != nil {
			return fmt.Errorf("QMP %s: %w", cmd, err)
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return fmt.Errorf("QMP %s: %w", cmd, err)
			}
			var msg struct {
				Return json.RawMessage `json:"return"`
				Error  *struct {
					Desc string `json:"desc"`
				} `json:"error"`
			}
			if json.Unmarshal(line, &msg) != nil {
				continue
			}
			if msg.Error != nil {
				return fmt.Errorf("QMP %s: %s", cmd, msg.Error.Desc)
			}
			if msg.Return != nil {
				break
			}
			// An event: read on.
		}
	}
	return nil
}
