// Preflight: the check of both systems' schemas for the traps of a two-way sync, run by
// Sync.Check and before Sync.Run.

package duplex

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Preflight inspects both systems of a two-way sync for the traps that are
// not in the change stream but in the schemas around it: triggers that
// fire on applied rows, keys fed by sequences on both sides, unique and
// foreign keys, schemas that differ. check/checkpg is the PostgreSQL one.
type Preflight interface {
	// Check inspects both systems and reports, table by table. With
	// p.Fix it first makes the changes it was configured to make (an
	// explicit option, such as interleaving sequences) and reports them in
	// Report.Done; without, it changes nothing. A nil error with blockers
	// in the report means the sync must not start.
	Check(ctx context.Context, p CheckParams) (*Report, error)
}

// CheckParams are the parameters of Preflight.Check.
type CheckParams struct {
	// Fix makes the changes the Preflight's options ask for. Sync.Run
	// sets it; Sync.Check does not.
	Fix bool
}

// Severity grades a Finding.
type Severity uint8

const (
	// Fine: nothing to do; the finding says why.
	Fine Severity = iota
	// Warning: the sync can run, but something will not behave as a user
	// may expect (the finding says what and how to fix it).
	Warning
	// Blocker: the sync would corrupt or lose data; it does not start.
	Blocker
)

// String returns "fine", "warning" or "blocker".
func (s Severity) String() string {
	switch s {
	case Fine:
		return "fine"
	case Warning:
		return "warning"
	case Blocker:
		return "blocker"
	}
	return fmt.Sprintf("severity(%d)", uint8(s))
}

// MarshalText implements encoding.TextMarshaler: the String form.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Severity) UnmarshalText(b []byte) error {
	for _, v := range []Severity{Fine, Warning, Blocker} {
		if v.String() == string(b) {
			*s = v
			return nil
		}
	}
	return fmt.Errorf("duplex: unknown severity %q", b)
}

// Finding is one conclusion of a Preflight about one table (or about the
// sync as a whole when Table is zero).
type Finding struct {
	// Table is the table the finding is about; zero for the whole sync.
	Table Table `json:"table"`
	// Check names the kind of check: "table", "key", "columns",
	// "checks", "unique", "foreign_keys", "triggers", "sequences",
	// "replica_identity", "rows", "sample" or "privileges".
	Check string `json:"check"`
	// Severity grades it.
	Severity Severity `json:"severity"`
	// What is what was found, naming columns, constraints and sides.
	What string `json:"what"`
	// Why says why it matters (or why it does not).
	Why string `json:"why,omitempty"`
	// Fix is the SQL or the option that fixes it; "" when there is none
	// to apply.
	Fix string `json:"fix,omitempty"`
}

// String formats f on one line: "blocker public.t sequences: what (why) fix: ...".
func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Severity.String())
	if f.Table != (Table{}) {
		b.WriteString(" " + f.Table.String())
	}
	b.WriteString(" " + f.Check + ": " + f.What)
	if f.Why != "" {
		b.WriteString(" (" + f.Why + ")")
	}
	if f.Fix != "" {
		b.WriteString(" fix: " + f.Fix)
	}
	return b.String()
}

// Aspect is one line of a table's side-by-side view: what each system
// has ("id bigint NOT NULL", "sequence customers_id_seq INCREMENT 1").
type Aspect struct {
	Name string `json:"name"`
	A    string `json:"a"`
	B    string `json:"b"`
}

// TableReport is one synced table in a Report: both systems side by side
// and the findings about it.
type TableReport struct {
	Table    Table     `json:"table"`
	Aspects  []Aspect  `json:"aspects"`
	Findings []Finding `json:"findings"`
}

// Report is the outcome of a Preflight check.
type Report struct {
	// A and B name the two systems.
	A string `json:"a"`
	B string `json:"b"`
	// Tables are the synced tables, in the configured order.
	Tables []TableReport `json:"tables"`
	// Findings are those about the sync as a whole (privileges).
	Findings []Finding `json:"findings"`
	// Done lists the changes the check made (CheckParams.Fix), as SQL.
	Done []string `json:"done,omitempty"`
}

// All returns every finding, the sync's first, then table by table.
func (r *Report) All() []Finding {
	out := append([]Finding(nil), r.Findings...)
	for _, t := range r.Tables {
		out = append(out, t.Findings...)
	}
	return out
}

// Count returns how many findings have severity s.
func (r *Report) Count(s Severity) int {
	n := 0
	for _, f := range r.All() {
		if f.Severity == s {
			n++
		}
	}
	return n
}

// Write prints r for a person: per table the side-by-side view, then the
// findings, worst first, each with why and the fix.
func (r *Report) Write(w io.Writer) error {
	a, b := r.A, r.B
	if a == "" {
		a = "a"
	}
	if b == "" {
		b = "b"
	}
	var out strings.Builder
	fmt.Fprintf(&out, "preflight: %d blocker(s), %d warning(s), %d fine\n", r.Count(Blocker), r.Count(Warning), r.Count(Fine))
	for _, d := range r.Done {
		fmt.Fprintf(&out, "done: %s\n", d)
	}
	writeFindings(&out, r.Findings)
	for _, t := range r.Tables {
		fmt.Fprintf(&out, "\n== %s\n", t.Table)
		tw := tabwriter.NewWriter(&out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  \t%s\t%s\n", a, b)
		for _, as := range t.Aspects {
			mark := ""
			if as.A != as.B {
				mark = "  <>"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s%s\n", as.Name, orDash(as.A), orDash(as.B), mark)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		writeFindings(&out, t.Findings)
	}
	_, err := io.WriteString(w, out.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeFindings prints fs worst first.
func writeFindings(out *strings.Builder, fs []Finding) {
	for _, s := range []Severity{Blocker, Warning, Fine} {
		for _, f := range fs {
			if f.Severity != s {
				continue
			}
			fmt.Fprintf(out, "  [%s] %s: %s\n", f.Severity, f.Check, f.What)
			if f.Why != "" {
				fmt.Fprintf(out, "      why: %s\n", f.Why)
			}
			if f.Fix != "" {
				fmt.Fprintf(out, "      fix: %s\n", strings.ReplaceAll(f.Fix, "\n", "\n           "))
			}
		}
	}
}

// PreflightError is Sync.Run's error when the preflight found blockers: the
// sync did not start. Report holds every finding.
type PreflightError struct {
	Report *Report
}

// Error implements error, listing the blockers.
func (e *PreflightError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "duplex: preflight found %d blocker(s); the sync did not start", e.Report.Count(Blocker))
	for _, f := range e.Report.All() {
		if f.Severity == Blocker {
			b.WriteString("\n" + f.String())
		}
	}
	return b.String()
}

// ErrorClass makes a failed preflight permanent: retrying does not help
// until someone fixes the schemas.
func (e *PreflightError) ErrorClass() ErrorClass { return ClassPermanent }

// Check runs the configured Preflight without changing anything (options
// that would fix a finding say so in it) and returns its report; with no
// Preflight configured the report is empty.
func (s *Sync) Check(ctx context.Context) (*Report, error) {
	if s.cfg.Preflight == nil {
		return &Report{A: s.cfg.A.Name, B: s.cfg.B.Name}, nil
	}
	r, err := s.cfg.Preflight.Check(ctx, CheckParams{})
	if err != nil {
		return nil, fmt.Errorf("duplex: preflight: %w", err)
	}
	return r, nil
}

// preflight runs the Preflight at start, with its fixes; it returns a
// *PreflightError when blockers remain.
func (s *Sync) preflight(ctx context.Context) error {
	if s.cfg.Preflight == nil {
		return nil
	}
	r, err := s.cfg.Preflight.Check(ctx, CheckParams{Fix: true})
	if err != nil && ctx.Err() != nil {
		return nil // stopped during the check: Run returns nil
	}
	if err != nil {
		return fmt.Errorf("duplex: preflight: %w", err)
	}
	s.reportMu.Lock()
	s.report = r
	s.reportMu.Unlock()
	for _, f := range r.All() {
		if f.Severity == Warning {
			s.cfg.Logger.WarnContext(ctx, "preflight warning", "table", f.Table.String(), "check", f.Check, "what", f.What, "fix", f.Fix)
		}
	}
	for _, d := range r.Done {
		s.cfg.Logger.InfoContext(ctx, "preflight fixed", "sql", d)
	}
	if r.Count(Blocker) > 0 {
		return &PreflightError{Report: r}
	}
	return nil
}

// Report returns the report of the preflight Run made at start, or nil
// before that (or with no Preflight configured).
func (s *Sync) Report() *Report {
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	return s.report
}
