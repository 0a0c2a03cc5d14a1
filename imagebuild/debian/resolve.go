package debian

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// universe is a set of installable packages indexed for resolution.
type universe struct {
	byName    map[string][]*Package // highest version first
	providers map[string][]provided
}

type provided struct {
	pkg     *Package
	version string // "" for an unversioned Provides
}

func newUniverse() *universe {
	return &universe{byName: map[string][]*Package{}, providers: map[string][]provided{}}
}

func (u *universe) add(p *Package) {
	u.byName[p.Name] = append(u.byName[p.Name], p)
	if p.Provides == "" {
		return
	}
	rels, err := ParseRelations(p.Provides)
	if err != nil {
		// A malformed Provides only makes the package provide less; the
		// resolver reports whatever then goes missing.
		return
	}
	for _, alts := range rels {
		for _, r := range alts {
			v := ""
			if r.Op == "=" {
				v = r.Version
			}
			u.providers[r.Name] = append(u.providers[r.Name], provided{pkg: p, version: v})
		}
	}
}

func (u *universe) sort() {
	for _, ps := range u.byName {
		sort.SliceStable(ps, func(i, j int) bool { return CompareVersions(ps[i].Version, ps[j].Version) > 0 })
	}
}

// MissingError says a dependency could not be satisfied.
type MissingError struct {
	// Relation is the unsatisfiable dependency, alternatives included.
	Relation string
	// NeededBy is "name version" of the package that needs it, or "requested".
	NeededBy string
	// Detail explains why, when it is more than "no such package".
	Detail string
	// Where is "<suite>/<arch>" or "the lock file".
	Where string
}

func (e *MissingError) Error() string {
	msg := fmt.Sprintf("debian: package %s (needed by %s) is not available in %s", e.Relation, e.NeededBy, e.Where)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// ResolveOption changes how Resolve works.
type ResolveOption func(*resolveOptions)

type resolveOptions struct {
	ignore map[string]bool
	suite  string // FromSuite
}

// Ignoring names packages (real or virtual) that are never installed: a
// dependency on one of them counts as met. ballast builds its own
// initramfs, so it ignores "initramfs-tools" and "linux-initramfs-tool",
// which would otherwise pull udev and systemd in with the kernel.
func Ignoring(names ...string) ResolveOption {
	return func(o *resolveOptions) {
		for _, n := range names {
			o.ignore[n] = true
		}
	}
}

// FromSuite takes the requested packages from suite, another suite of the
// archive's mirror (a board's kernel from trixie-backports), and from it
// only what else they need that the archive's own suite cannot satisfy at
// the version needed: every other dependency comes from the archive's
// suite, as without the option. The suite's InRelease and Packages indexes
// are verified and cached as the archive's own are; the packages taken
// from it name it in Package.Suite, and so in the lock. The archive's own
// suite (or "") changes nothing.
func FromSuite(suite string) ResolveOption {
	return func(o *resolveOptions) { o.suite = suite }
}

// Resolve computes the closure of names over Depends and Pre-Depends and
// returns it sorted by name. A name may carry a constraint, as in a Depends
// field ("bash (>= 5.2)"). With a lock, packages it pins are used as
// pinned; others come from the indexes, which are loaded only then. Offline,
// a package the lock does not pin is an error unless the indexes are cached.
// A lock's package of a suite that this resolution does not take packages
// from (FromSuite) is not used.
func (a *Archive) Resolve(ctx context.Context, names []string, lock *Lock, opts ...ResolveOption) ([]Package, error) {
	o := resolveOptions{ignore: map[string]bool{}}
	for _, opt := range opts {
		opt(&o)
	}
	from := o.suite
	if from == a.cfg.Suite {
		from = ""
	}
	if from != "" {
		if err := checkSuiteName(from); err != nil {
			return nil, err
		}
	}
	var reqs []Alternatives
	for _, n := range names {
		rels, err := ParseRelations(n)
		if err != nil {
			return nil, fmt.Errorf("debian: requested package %q: %w", n, err)
		}
		if len(rels) != 1 {
			return nil, fmt.Errorf("debian: requested package %q: want one package", n)
		}
		reqs = append(reqs, rels[0])
	}
	r := &resolver{arch: a.cfg.Arch, ignore: o.ignore}
	r.base.where = a.cfg.Suite + "/" + a.cfg.Arch
	if from != "" {
		r.from = &layer{where: from + "/" + a.cfg.Arch}
	}
	if lock != nil {
		if err := lock.matches(a.cfg); err != nil {
			return nil, err
		}
		r.base.pinned = newUniverse()
		if r.from != nil {
			r.from.pinned = newUniverse()
		}
		for i := range lock.Packages {
			switch p := &lock.Packages[i]; {
			case p.Suite == "":
				r.base.pinned.add(p)
			case r.from != nil && p.Suite == from:
				r.from.pinned.add(p)
			}
		}
		pkgs, err := r.run(reqs, "the lock file")
		var miss *MissingError
		if err == nil || !errors.As(err, &miss) {
			return pkgs, err
		}
		// Something new since the lock was written: consult the indexes.
	}
	err := a.LoadIndexes(ctx)
	if err == nil && r.from != nil {
		r.from.index, err = a.loadSuite(ctx, from)
	}
	if err != nil {
		if lock != nil {
			return nil, fmt.Errorf("debian: the lock file does not pin everything needed, and the index is unavailable: %w", err)
		}
		return nil, err
	}
	r.base.index = a.index
	return r.run(reqs, "")
}

// checkSuiteName refuses a suite name that cannot be part of a URL path.
func checkSuiteName(s string) error {
	if s == "" || strings.ContainsAny(s, " \t\\/") || strings.Contains(s, "..") {
		return fmt.Errorf("debian: bad suite name %q", s)
	}
	return nil
}

// layer is one suite as the resolver sees it: the lock's pins of that
// suite, which win over its index.
type layer struct {
	pinned *universe // nil without a lock
	index  *universe // nil until loaded
	where  string    // "<suite>/<arch>", in errors
}

// resolver holds one resolution's state.
type resolver struct {
	arch string
	// base is the archive's suite; from, when set, the suite the
	// requested packages come from (FromSuite).
	base     layer
	from     *layer
	where    string // overrides the layers' where in errors ("the lock file")
	ignore   map[string]bool
	selected map[string]*Package
	queue    []pending
}

type pending struct {
	alts Alternatives
	by   string
}

const requested = "requested"

// run resolves reqs from scratch; where, when set, names the source in
// errors instead of the suites.
func (r *resolver) run(reqs []Alternatives, where string) ([]Package, error) {
	r.where, r.selected, r.queue = where, map[string]*Package{}, nil
	for _, req := range reqs {
		r.queue = append(r.queue, pending{alts: req, by: requested})
	}
	for len(r.queue) > 0 {
		p := r.queue[0]
		r.queue = r.queue[1:]
		if err := r.satisfy(p); err != nil {
			return nil, err
		}
	}
	out := make([]Package, 0, len(r.selected))
	for _, p := range r.selected {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// layersFor lists the suites that may satisfy p, in order of preference:
// a requested package comes from the FromSuite suite when there is one,
// a dependency from the archive's suite first.
func (r *resolver) layersFor(p pending) []*layer {
	if r.from != nil && p.by == requested {
		return []*layer{r.from}
	}
	return r.layers()
}

func (r *resolver) satisfy(p pending) error {
	var alts Alternatives
	for _, rel := range p.alts {
		if rel.appliesTo(r.arch) {
			alts = append(alts, rel)
		}
	}
	if len(alts) == 0 {
		return nil // every alternative is for another architecture
	}
	// Already satisfied by something chosen earlier, or ignored?
	for _, rel := range alts {
		if r.ignore[rel.Name] || r.archOK(rel) && r.selectedSatisfies(rel) {
			return nil
		}
	}
	layers := r.layersFor(p)
	var details []string
	for _, rel := range alts {
		c, why := r.candidate(rel, layers)
		if c != nil {
			return r.choose(c)
		}
		if why != "" {
			details = append(details, why)
		}
	}
	where := r.where
	if where == "" {
		var ws []string
		for _, l := range layers {
			ws = append(ws, l.where)
		}
		where = strings.Join(ws, " or ")
	}
	return &MissingError{Relation: p.alts.String(), NeededBy: p.by, Where: where, Detail: strings.Join(details, "; ")}
}

func (r *resolver) archOK(rel Relation) bool {
	switch rel.ArchQual {
	case "", "any", "native", r.arch:
		return true
	}
	return false
}

// layers lists every suite of the resolution, the archive's first.
func (r *resolver) layers() []*layer {
	if r.from == nil {
		return []*layer{&r.base}
	}
	return []*layer{&r.base, r.from}
}

func (r *resolver) selectedSatisfies(rel Relation) bool {
	if p, ok := r.selected[rel.Name]; ok && rel.Satisfies(p.Version) {
		return true
	}
	for _, l := range r.layers() {
		for _, pv := range l.providersOf(rel.Name) {
			if _, ok := r.selected[pv.pkg.Name]; ok && r.selected[pv.pkg.Name] == pv.pkg && providesSatisfy(rel, pv) {
				return true
			}
		}
	}
	return false
}

func providesSatisfy(rel Relation, pv provided) bool {
	if rel.Op == "" {
		return true
	}
	// A versioned dependency is met only by a versioned Provides.
	return pv.version != "" && rel.Satisfies(pv.version)
}

// versions lists the real packages called name, the lock's pins taking
// precedence over the index.
func (l *layer) versions(name string) []*Package {
	if l.pinned != nil {
		if ps := l.pinned.byName[name]; len(ps) > 0 {
			return ps
		}
	}
	if l.index != nil {
		return l.index.byName[name]
	}
	return nil
}

func (l *layer) providersOf(name string) []provided {
	var out []provided
	if l.pinned != nil {
		out = append(out, l.pinned.providers[name]...)
	}
	if l.index != nil {
		for _, pv := range l.index.providers[name] {
			if l.pinned != nil && len(l.pinned.byName[pv.pkg.Name]) > 0 {
				continue // the lock pins another version of this provider
			}
			out = append(out, pv)
		}
	}
	return out
}

// candidate picks the package that best satisfies rel from the first of
// layers that has one, or explains why none does.
func (r *resolver) candidate(rel Relation, layers []*layer) (*Package, string) {
	if !r.archOK(rel) {
		return nil, fmt.Sprintf("%s: architecture qualifier :%s does not match %s", rel.Name, rel.ArchQual, r.arch)
	}
	if sel, ok := r.selected[rel.Name]; ok {
		// Only one version of a package can be installed.
		if rel.Satisfies(sel.Version) {
			return sel, ""
		}
		return nil, fmt.Sprintf("%s %s was already chosen and does not satisfy %s", sel.Name, sel.Version, rel)
	}
	var whys []string
	for _, l := range layers {
		p, why := l.candidate(rel, r.selected)
		if p != nil {
			return p, ""
		}
		if why != "" {
			if len(layers) > 1 {
				why = l.where + ": " + why
			}
			whys = append(whys, why)
		}
	}
	return nil, strings.Join(whys, "; ")
}

// candidate picks the package of l that best satisfies rel, or explains
// why none does.
func (l *layer) candidate(rel Relation, selected map[string]*Package) (*Package, string) {
	var why string
	if vs := l.versions(rel.Name); len(vs) > 0 {
		for _, p := range vs {
			if rel.Satisfies(p.Version) {
				return p, ""
			}
		}
		have := make([]string, len(vs))
		for i, p := range vs {
			have[i] = p.Version
		}
		why = fmt.Sprintf("%s has only version(s) %s", rel.Name, strings.Join(have, ", "))
	}
	var best *Package
	for _, pv := range l.providersOf(rel.Name) {
		if !providesSatisfy(rel, pv) {
			continue
		}
		if sel, ok := selected[pv.pkg.Name]; ok && sel != pv.pkg {
			continue
		}
		if best == nil || betterProvider(pv.pkg, best, selected) {
			best = pv.pkg
		}
	}
	if best != nil {
		return best, ""
	}
	return nil, why
}

var priorityRank = map[string]int{"required": 0, "important": 1, "standard": 2, "optional": 3, "extra": 4}

// betterProvider orders the providers of a virtual package: one already
// chosen, then the higher priority (mawk, required, over gawk for "awk"),
// then by name for determinism.
func betterProvider(a, b *Package, selected map[string]*Package) bool {
	_, sa := selected[a.Name]
	_, sb := selected[b.Name]
	if sa != sb {
		return sa
	}
	ra, ok := priorityRank[a.Priority]
	if !ok {
		ra = 5
	}
	rb, ok := priorityRank[b.Priority]
	if !ok {
		rb = 5
	}
	if ra != rb {
		return ra < rb
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return CompareVersions(a.Version, b.Version) > 0
}

func (r *resolver) choose(p *Package) error {
	if _, ok := r.selected[p.Name]; ok {
		return nil
	}
	r.selected[p.Name] = p
	by := p.Name + " " + p.Version
	for _, f := range []struct{ name, v string }{{"Pre-Depends", p.PreDepends}, {"Depends", p.Depends}} {
		rels, err := ParseRelations(f.v)
		if err != nil {
			return fmt.Errorf("debian: package %s: %s: %w", by, f.name, err)
		}
		for _, alts := range rels {
			r.queue = append(r.queue, pending{alts: alts, by: by})
		}
	}
	return nil
}
