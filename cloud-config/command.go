package cloudconfig

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// UnmarshalYAML accepts a string or a list of strings, so that code that
// yaml.Unmarshals a Config (or stores the last good one) reads what
// Parse reads.
func (c *Command) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if isNull(n) {
			return fmt.Errorf("line %d: empty command", n.Line)
		}
		*c = Command{Shell: n.Value}
		return nil
	case yaml.SequenceNode:
		var argv []string
		if err := n.Decode(&argv); err != nil {
			return err
		}
		*c = Command{Argv: argv}
		return nil
	}
	return fmt.Errorf("line %d: a command is a string or a list of strings", n.Line)
}

// MarshalYAML writes the form the command was given in.
func (c Command) MarshalYAML() (any, error) {
	if c.Argv != nil {
		return c.Argv, nil
	}
	return c.Shell, nil
}

// String is the command for logs: the shell line, or the argv quoted.
func (c Command) String() string {
	if c.Argv != nil {
		return fmt.Sprintf("%q", c.Argv)
	}
	return c.Shell
}
