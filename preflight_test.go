package duplex_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

// fakePreflight reports findings and records how it was called.
type fakePreflight struct {
	mu       sync.Mutex
	findings []duplex.Finding
	calls    []duplex.CheckParams
}

func (f *fakePreflight) Check(_ context.Context, p duplex.CheckParams) (*duplex.Report, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, p)
	r := &duplex.Report{A: "a", B: "b", Tables: []duplex.TableReport{{Table: customers, Findings: f.findings,
		Aspects: []duplex.Aspect{{Name: "column id", A: "bigint", B: "bigint"}, {Name: "column n", A: "bigint", B: "integer"}}}}}
	if p.Fix {
		r.Done = []string{"a: ALTER SEQUENCE s INCREMENT BY 2"}
	}
	return r, nil
}

func newPreflightSync(t *testing.T, pf duplex.Preflight) *duplex.Sync {
	t.Helper()
	a, b := newDB(t, "a", false), newDB(t, "b", false)
	src := func(db *memdb.DB) duplex.ChangeSource {
		return db.Source(memdb.SourceConfig{Slot: "sync", SkipOrigins: []string{"duplex"}})
	}
	s, err := duplex.NewSync(&duplex.SyncConfig{
		Name: "pair", Preflight: pf,
		A:           duplex.Endpoint{Name: "a", Source: src(a), Applier: a.Applier("duplex")},
		B:           duplex.Endpoint{Name: "b", Source: src(b), Applier: b.Applier("duplex")},
		DeadLetters: &deadLetters{}, Logger: testLogger(t), Options: fastOptions(),
	})
	require.NoError(t, err)
	return s
}

// TestRunRefusesOnPreflightBlockers: Check runs the Preflight without
// fixes; Run runs it with fixes and, on a blocker, returns a
// *PreflightError naming it without starting either direction.
func TestRunRefusesOnPreflightBlockers(t *testing.T) {
	t.Parallel()
	pf := &fakePreflight{findings: []duplex.Finding{
		{Table: customers, Check: "sequences", Severity: duplex.Blocker, What: "key column id is fed by sequences on both sides", Fix: "-sequences=interleave"},
		{Table: customers, Check: "columns", Severity: duplex.Warning, What: "column n is bigint on a, integer on b"},
	}}
	s := newPreflightSync(t, pf)
	r, err := s.Check(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, r.Count(duplex.Blocker))
	require.Nil(t, s.Report(), "Check does not stand for the start's report")
	err = s.Run(t.Context())
	pe, ok := errors.AsType[*duplex.PreflightError](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, 1, pe.Report.Count(duplex.Blocker))
	require.True(t, duplex.IsPermanent(err))
	require.Contains(t, err.Error(), "blocker public.customers sequences: key column id is fed by sequences on both sides fix: -sequences=interleave")
	require.Equal(t, []duplex.CheckParams{{Fix: false}, {Fix: true}}, pf.calls)
	require.Equal(t, []string{"a: ALTER SEQUENCE s INCREMENT BY 2"}, s.Report().Done)
	ab, _ := s.Pipelines()
	select {
	case <-ab.Ready():
		t.Fatal("a direction started despite a blocker")
	default:
	}
}

// TestRunStartsWithWarningsAndWritesTheReport: warnings do not stop Run;
// Report.Write prints both sides side by side, marking differences, and
// each finding with its fix.
func TestRunStartsWithWarningsAndWritesTheReport(t *testing.T) {
	t.Parallel()
	pf := &fakePreflight{findings: []duplex.Finding{
		{Table: customers, Check: "columns", Severity: duplex.Warning, What: "column n is bigint on a, integer on b", Why: "values may not fit", Fix: "ALTER TABLE ..."},
		{Table: customers, Check: "key", Severity: duplex.Fine, What: "primary key (id) on both sides"},
	}}
	s := newPreflightSync(t, pf)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	ab, ba := s.Pipelines()
	<-ab.Ready()
	<-ba.Ready()
	cancel()
	require.NoError(t, <-done)
	var out strings.Builder
	require.NoError(t, s.Report().Write(&out))
	require.Equal(t, `preflight: 0 blocker(s), 1 warning(s), 1 fine
done: a: ALTER SEQUENCE s INCREMENT BY 2

== public.customers
             a       b
  column id  bigint  bigint
  column n   bigint  integer  <>
  [warning] columns: column n is bigint on a, integer on b
      why: values may not fit
      fix: ALTER TABLE ...
  [fine] key: primary key (id) on both sides
`, out.String())
}

// TestFindingJSON: a finding's severity is its name in JSON.
func TestFindingJSON(t *testing.T) {
	t.Parallel()
	f := duplex.Finding{Table: customers, Check: "sequences", Severity: duplex.Blocker, What: "w", Fix: "f"}
	b, err := json.Marshal(f)
	require.NoError(t, err)
	require.Contains(t, string(b), `"severity":"blocker"`)
	var back duplex.Finding
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, f, back)
	require.Error(t, json.Unmarshal([]byte(`{"severity":"bad"}`), &back))
}
