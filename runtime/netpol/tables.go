package netpol

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// Host installs rulesets with the node's ipset and iptables-restore. The
// jumps to BALLAST-NETPOL are kept first in FORWARD and INPUT: before
// kube-proxy's and flannel's rules, which accept pod traffic.
type Host struct {
	// Run runs a command with stdin and returns its output; nil runs it.
	Run func(ctx context.Context, stdin string, name string, args ...string) (string, error)
}

func (h *Host) run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	if h.Run != nil {
		return h.Run(ctx, stdin, name, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), err
}

// hooks are the built-in chains that jump to Chain: FORWARD (traffic
// to and from pods) and INPUT (pods to the node itself, for egress).
var hooks = []string{"FORWARD", "INPUT"}

// Apply installs rs: the ipsets first (each filled under a temporary
// name and swapped in, so a set is never seen half full), then the chains
// in one iptables-restore (the kernel swaps the whole table), then the
// jumps, then what the previous ruleset had and this one has not.
func (h *Host) Apply(ctx context.Context, rs Ruleset) error {
	if err := h.applySets(ctx, rs.Sets); err != nil {
		return err
	}
	if _, err := h.run(ctx, rs.Filter, "iptables-restore", "--noflush", "-w", "5"); err != nil {
		return err
	}
	for _, hook := range hooks {
		if err := h.ensureFirst(ctx, hook); err != nil {
			return err
		}
	}
	if err := h.removeStaleChains(ctx, rs.Chains); err != nil {
		return err
	}
	return h.removeStaleSets(ctx, rs.Sets)
}

func (h *Host) applySets(ctx context.Context, sets []Set) error {
	if len(sets) == 0 {
		return nil
	}
	var b strings.Builder
	for _, s := range sets {
		// A temporary set a crash leaves is a stale bnp- set: removed.
		tmp := setPrefix + "t" + strings.TrimPrefix(s.Name, setPrefix)
		fmt.Fprintf(&b, "create %s %s family inet -exist\n", s.Name, s.Type)
		fmt.Fprintf(&b, "create %s %s family inet -exist\n", tmp, s.Type)
		fmt.Fprintf(&b, "flush %s\n", tmp)
		for _, e := range s.Entries {
			fmt.Fprintf(&b, "add %s %s\n", tmp, e)
		}
		fmt.Fprintf(&b, "swap %s %s\n", tmp, s.Name)
		fmt.Fprintf(&b, "destroy %s\n", tmp)
	}
	_, err := h.run(ctx, b.String(), "ipset", "restore")
	return err
}

// ensureFirst makes the jump to Chain the first rule of hook.
func (h *Host) ensureFirst(ctx context.Context, hook string) error {
	out, err := h.run(ctx, "", "iptables", "-w", "5", "-S", hook)
	if err != nil {
		return err
	}
	const jump = "-j " + Chain
	var rules []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, l)
		}
	}
	if len(rules) > 0 && strings.HasSuffix(rules[0], jump) {
		return nil
	}
	for _, r := range rules {
		if strings.HasSuffix(r, jump) {
			if _, err := h.run(ctx, "", "iptables", "-w", "5", "-D", hook, "-j", Chain); err != nil {
				return err
			}
		}
	}
	_, err = h.run(ctx, "", "iptables", "-w", "5", "-I", hook, "1", "-j", Chain)
	return err
}

// removeStaleChains deletes the per-pod chains no rule jumps to any more.
func (h *Host) removeStaleChains(ctx context.Context, keep []string) error {
	out, err := h.run(ctx, "", "iptables", "-w", "5", "-S")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(out, "\n") {
		name, ok := strings.CutPrefix(l, "-N ")
		if !ok || !strings.HasPrefix(name, chainPrefix) || slices.Contains(keep, name) {
			continue
		}
		if _, err := h.run(ctx, "", "iptables", "-w", "5", "-F", name); err != nil {
			return err
		}
		if _, err := h.run(ctx, "", "iptables", "-w", "5", "-X", name); err != nil {
			return err
		}
	}
	return nil
}

// removeStaleSets destroys the controller's sets that no rule names.
func (h *Host) removeStaleSets(ctx context.Context, keep []Set) error {
	out, err := h.run(ctx, "", "ipset", "list", "-n")
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(out) {
		if !strings.HasPrefix(name, setPrefix) || slices.ContainsFunc(keep, func(s Set) bool { return s.Name == name }) {
			continue
		}
		if _, err := h.run(ctx, "", "ipset", "destroy", name); err != nil {
			return err
		}
	}
	return nil
}
