package suiterun

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Outcome is a finished test as ginkgo's output stream shows it; the JSON
// report read after the run is the authority, this is for the live lines.
type Outcome struct {
	Name string
	// State: "PASS", "FAIL", or "SKIP".
	State string
	// Detail is ginkgo's own word when it says more than FAIL:
	// "PANICKED", "TIMEDOUT", "INTERRUPTED", "ABORTED".
	Detail   string
	Duration time.Duration
	// Suite: a suite-level node (SynchronizedBeforeSuite...), Name is its
	// type; not a test.
	Suite bool
}

// streamParser follows the output of `ginkgo -v --no-color` and calls
// onOutcome for every spec that ends. ginkgo writes a spec's end as a
// header line, "• [4.213 seconds]" or "• [FAILED] [4.213 seconds]" or
// "S [SKIPPED] [0.001 seconds]", and the spec's name on the next line; run
// on one process with -v, it writes the name when the spec starts (after a
// "------" delimiter) and only the header when a passing spec ends. Both
// shapes come out right: a header takes the name on the line after it
// when that is a known test, else the last name seen after a delimiter.
type streamParser struct {
	known     map[string]bool
	onOutcome func(Outcome)
	// onPlan receives ginkgo's "Will run N of M specs".
	onPlan func(will, of int)

	partial       []byte
	afterDelim    bool
	lastName      string
	pending       *Outcome
	pendingInline bool
}

func newStreamParser(tests []Test, onOutcome func(Outcome)) *streamParser {
	p := &streamParser{known: map[string]bool{}, onOutcome: onOutcome}
	for _, t := range tests {
		p.known[t.Name] = true
	}
	return p
}

// Write takes the stream in any chunks; it never fails.
func (p *streamParser) Write(b []byte) (int, error) {
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.line(strings.TrimRight(string(p.partial[:i]), "\r"))
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}

// Close ends the stream: a header still waiting for its name is reported
// with the last name seen.
func (p *streamParser) Close() error {
	if len(p.partial) > 0 {
		p.line(string(p.partial))
		p.partial = nil
	}
	p.flush("")
	return nil
}

var (
	// header: the denoter (• or ↺, S, P, or [NodeType] for suite nodes),
	// any [STATE] words, and the run time.
	headerLine = regexp.MustCompile(`^(\S+)((?: \[[A-Z][A-Z0-9 -]*\])*)(?: PASSED)? \[(\d+(?:\.\d+)?) seconds\]$`)
	planLine   = regexp.MustCompile(`^Will run (\d+) of (\d+) specs`)
	// nodeTag: what ginkgo puts into a failed spec's name to show which
	// node failed: "[It] should ..." or "Pods [BeforeEach] should ...".
	nodeTag = regexp.MustCompile(`\[(?:It|BeforeEach|JustBeforeEach|AfterEach|JustAfterEach|BeforeAll|AfterAll|DeferCleanup(?: \([A-Za-z]+\))?|ReportBeforeEach|ReportAfterEach)\] `)
)

const delimiter = "------------------------------"

func (p *streamParser) line(l string) {
	if p.pending != nil {
		p.flush(l)
	}
	if l == delimiter {
		p.afterDelim = true
		return
	}
	wasAfterDelim := p.afterDelim
	p.afterDelim = false
	if m := planLine.FindStringSubmatch(l); m != nil && p.onPlan != nil {
		will, _ := strconv.Atoi(m[1])
		of, _ := strconv.Atoi(m[2])
		p.onPlan(will, of)
		return
	}
	if m := headerLine.FindStringSubmatch(l); m != nil {
		o := &Outcome{State: "PASS"}
		secs, _ := strconv.ParseFloat(m[3], 64)
		o.Duration = time.Duration(secs * float64(time.Second))
		if strings.HasPrefix(m[1], "[") {
			o.Suite, o.Name = true, strings.Trim(m[1], "[]")
		}
		for _, w := range strings.Split(strings.TrimSpace(m[2]), "] [") {
			w = strings.Trim(w, "[]")
			switch {
			case w == "":
			case w == "SKIPPED":
				o.State = "SKIP"
			case w == "PENDING":
				o.State = "SKIP"
			case strings.HasPrefix(w, "FLAKEY"):
				// passed on a retry: still a pass, as ginkgo counts it
			case w == "FAILED":
				o.State = "FAIL"
			default:
				o.State, o.Detail = "FAIL", w
			}
		}
		if m[1] == "S" || m[1] == "P" {
			o.State = "SKIP"
		}
		p.pending = o
		return
	}
	if wasAfterDelim {
		if name := p.resolve(l); name != "" {
			p.lastName = name
		}
	}
}

// flush reports the pending header, named by next (the line after it) when
// that names a known test.
func (p *streamParser) flush(next string) {
	o := p.pending
	if o == nil {
		return
	}
	p.pending = nil
	if !o.Suite {
		if name := p.resolve(next); name != "" {
			o.Name = name
		} else {
			o.Name = p.lastName
		}
		if o.Name == "" {
			return
		}
		p.lastName = ""
	}
	p.onOutcome(*o)
}

// resolve maps a line of ginkgo's spec block to the test it names: the line
// is the name with node tags inserted and the labels appended
// ("[sig-x] Foo [It] bar [Conformance] [Conformance, NodeConformance]").
func (p *streamParser) resolve(l string) string {
	if l == "" || strings.HasPrefix(l, " ") {
		return ""
	}
	s := nodeTag.ReplaceAllString(l, "")
	for {
		if p.known[s] {
			return s
		}
		i := strings.LastIndex(s, " [")
		if i < 0 || !strings.HasSuffix(s, "]") {
			return ""
		}
		s = s[:i]
	}
}
