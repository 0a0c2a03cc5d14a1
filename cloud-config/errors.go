package cloudconfig

import (
	"sort"
	"strconv"
	"strings"
)

// Error is one problem in a cloud-config, at a place in a file.
//
// Source is the name given to Parse (a path, "user-data", "fw_cfg"...);
// Line and Column are 1-based and 0 when unknown (a Config built in code,
// or a YAML syntax error, which yaml.v3 reports by line only). Key is the
// dotted path of the offending key, list items as [i]:
// "write_files[2].permissions", `ballast.sysctls["net.ipv4.ip_forward"]`.
type Error struct {
	Source  string
	Line    int
	Column  int
	Key     string
	Message string
}

// Error formats as "source:line:column: key: message", leaving out what
// is unknown.
func (e *Error) Error() string {
	return formatDiagnostic(e.Source, e.Line, e.Column, e.Key, e.Message)
}

// Warning is a problem that does not stop the config from being applied
// (an unknown k3s option: k3s itself only warns about those). It has the
// same fields as Error.
type Warning Error

// String formats like Error.Error.
func (w Warning) String() string {
	return formatDiagnostic(w.Source, w.Line, w.Column, w.Key, w.Message)
}

func formatDiagnostic(source string, line, col int, key, msg string) string {
	var b strings.Builder
	b.WriteString(source)
	if line > 0 {
		b.WriteString(":" + strconv.Itoa(line))
		if col > 0 {
			b.WriteString(":" + strconv.Itoa(col))
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if key != "" {
		b.WriteString(key + ": ")
	}
	b.WriteString(msg)
	return b.String()
}

// ErrorList is every error found in one cloud-config, in file order. Parse
// returns it (as error) when anything is wrong; errors.As finds it, and
// through Unwrap also each *Error.
type ErrorList struct {
	Errors []*Error
}

// Error is one line per error.
func (l *ErrorList) Error() string {
	lines := make([]string, len(l.Errors))
	for i, e := range l.Errors {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As and errors.Is see each *Error.
func (l *ErrorList) Unwrap() []error {
	errs := make([]error, len(l.Errors))
	for i, e := range l.Errors {
		errs[i] = e
	}
	return errs
}

// sortDiagnostics orders by position; those without a line go last, in the
// order they were found.
func sortDiagnostics[T any](ds []T, pos func(T) (int, int)) {
	sort.SliceStable(ds, func(i, j int) bool {
		li, ci := pos(ds[i])
		lj, cj := pos(ds[j])
		if (li == 0) != (lj == 0) {
			return lj == 0
		}
		if li != lj {
			return li < lj
		}
		return ci < cj
	})
}
