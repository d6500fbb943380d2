package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/duplexsync/duplex"
)

// RepairFunc repairs one key of a table whose rows differ between the two
// sides, by deciding the row through the sync's resolvers and writing it
// where it differs; (*duplex.Sync).Reconcile has this signature. It reports
// what it did; an error means the key could not be repaired now.
type RepairFunc func(ctx context.Context, table duplex.Table, key duplex.Key) (duplex.ActionResult, error)

// DefaultMaxKeys is the default of ReconcilerConfig.MaxKeys.
const DefaultMaxKeys = 100

// OutcomeError counts, in RepairReport.Outcomes, the keys whose repair
// failed.
const OutcomeError duplex.Outcome = "error"

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	// Repair repairs one key. Required.
	Repair RepairFunc
	// ChunkSize is how many keys of the side with more rows in a range are
	// compared at a time (the other side's keys in the same span are read
	// with them). 0: the Checker's.
	ChunkSize int
	// Concurrency is how many keys are repaired at once; Repair must then
	// be safe for concurrent use ((*duplex.Sync).Reconcile with appliers
	// safe for concurrent use, such as applypg's, is). Keys are still
	// repaired once each, and RepairReport.Keys is then in no set order.
	// 0 or 1: one at a time, in key order.
	Concurrency int
	// MaxKeys is how many keys RepairReport.Keys lists. 0: DefaultMaxKeys;
	// negative: none.
	MaxKeys int
	// Logger receives logs. nil: the Checker's.
	Logger *slog.Logger
}

// Reconciler repairs what a Checker found: for each mismatched range it
// reads the keys and row hashes of both sides, finds the keys whose
// compared columns differ or that exist on one side only, and repairs each
// through Repair, so the sync's authority and conflict rules decide. It is
// also how two systems that held data before the sync started are brought
// together (onboarding): check, then reconcile every mismatched range.
type Reconciler struct {
	c   *Checker
	cfg ReconcilerConfig
	log *slog.Logger
}

// NewReconciler returns a Reconciler of the ranges c reports.
func NewReconciler(c *Checker, cfg ReconcilerConfig) (*Reconciler, error) {
	var errs []error
	if c == nil {
		errs = append(errs, &duplex.ConfigError{Field: "Checker", Reason: "is nil"})
	}
	if cfg.Repair == nil {
		errs = append(errs, &duplex.ConfigError{Field: "Repair", Reason: "is required"})
	}
	if cfg.ChunkSize < 0 {
		errs = append(errs, &duplex.ConfigError{Field: "ChunkSize", Reason: "is negative"})
	}
	if cfg.Concurrency < 0 {
		errs = append(errs, &duplex.ConfigError{Field: "Concurrency", Reason: "is negative"})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = c.cfg.ChunkSize
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Logger == nil {
		cfg.Logger = c.cfg.Logger
	}
	return &Reconciler{c: c, cfg: cfg, log: cfg.Logger.With("component", "reconcile")}, nil
}

// DiffKind says how a key's rows differ.
type DiffKind uint8

// How a key's rows can differ.
const (
	// DiffValues: both sides have the key, with different compared values.
	DiffValues DiffKind = iota + 1
	// OnlyA: only side A has the key.
	OnlyA
	// OnlyB: only side B has the key.
	OnlyB
)

// String returns "values", "only_a" or "only_b".
func (d DiffKind) String() string {
	switch d {
	case DiffValues:
		return "values"
	case OnlyA:
		return "only_a"
	case OnlyB:
		return "only_b"
	}
	return "diff(" + fmt.Sprint(uint8(d)) + ")"
}

// Difference is one key whose rows differ between the sides.
type Difference struct {
	Table duplex.Table
	Key   duplex.Key
	Kind  DiffKind
}

// KeyResult is what the repair of one key did.
type KeyResult struct {
	Key  duplex.Key
	Kind DiffKind
	// Outcome and Detail come from Repair's result; Outcome is
	// OutcomeError when Repair failed, with Err set.
	Outcome duplex.Outcome
	Detail  string
	Err     error
}

// RepairReport is what reconciling one table's report did.
type RepairReport struct {
	Table duplex.Table
	// Ranges is the number of mismatched ranges examined.
	Ranges int
	// Differing is the number of keys found to differ (each repaired once).
	Differing int
	// Outcomes counts the repaired keys by outcome ("applied",
	// "unchanged", "dead_lettered", ..., OutcomeError).
	Outcomes map[duplex.Outcome]int
	// Keys lists the first MaxKeys keys with what was done to them.
	Keys []KeyResult
	// Started is when the reconciliation began; Duration how long it took.
	Started  time.Time
	Duration time.Duration
}

// Reconcile repairs every key that differs in rep's mismatched ranges.
// rep must come from the Reconciler's Checker. The keys are read again:
// what changed since the check is taken into account. A failed repair does
// not stop the others; Reconcile then returns the report with an error
// naming the first failure. A read error or the end of ctx stops it (the
// report says what was done).
func (r *Reconciler) Reconcile(ctx context.Context, rep *Report) (*RepairReport, error) {
	out := &RepairReport{Outcomes: map[duplex.Outcome]int{}, Started: time.Now()}
	if rep == nil {
		return out, duplex.Permanent(errors.New("reconcile: Reconcile: nil report"))
	}
	out.Table = rep.Table
	var mu sync.Mutex
	var failed int
	var first error
	repair := func(ctx context.Context, d Difference) error {
		res, err := r.cfg.Repair(ctx, d.Table, d.Key)
		if err != nil && ctx.Err() != nil {
			return context.Cause(ctx)
		}
		kr := KeyResult{Key: d.Key, Kind: d.Kind, Outcome: res.Outcome, Detail: res.Detail}
		if err != nil {
			kr.Outcome, kr.Err = OutcomeError, err
			r.log.WarnContext(ctx, "repair failed", "table", d.Table.String(), "key", d.Key.String(), slog.Any("err", err))
		} else {
			r.log.DebugContext(ctx, "repaired", "table", d.Table.String(), "key", d.Key.String(), "kind", d.Kind.String(), "outcome", res.Outcome)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			if first == nil {
				first = fmt.Errorf("reconcile: table %s key %s: %w", d.Table, d.Key, err)
			}
		}
		out.Outcomes[kr.Outcome]++
		if len(out.Keys) < r.cfg.MaxKeys {
			out.Keys = append(out.Keys, kr)
		}
		return nil
	}
	var err error
	if r.cfg.Concurrency <= 1 {
		err = r.diff(ctx, rep, func(ctx context.Context, d Difference) error {
			out.Differing++
			return repair(ctx, d)
		}, &out.Ranges)
	} else {
		wctx, cancel := context.WithCancelCause(ctx)
		work := make(chan Difference)
		var wg sync.WaitGroup
		for range r.cfg.Concurrency {
			wg.Go(func() {
				for d := range work {
					if err := repair(wctx, d); err != nil {
						cancel(err)
					}
				}
			})
		}
		err = r.diff(wctx, rep, func(ctx context.Context, d Difference) error {
			select {
			case work <- d:
				out.Differing++
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}, &out.Ranges)
		close(work)
		wg.Wait()
		if err == nil && wctx.Err() != nil {
			err = context.Cause(wctx)
		}
		cancel(nil)
	}
	out.Duration = time.Since(out.Started)
	r.log.InfoContext(ctx, "reconciled", "table", out.Table.String(), "ranges", out.Ranges, "differing", out.Differing,
		"outcomes", fmt.Sprint(sortedOutcomes(out.Outcomes)), "duration", out.Duration)
	if err != nil {
		return out, err
	}
	if failed > 0 {
		return out, fmt.Errorf("reconcile: %s: %d of %d repairs failed; first: %w", out.Table, failed, out.Differing, first)
	}
	return out, nil
}

func sortedOutcomes(m map[duplex.Outcome]int) []string {
	out := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return out
}

// Diff calls fn with every key that differs in rep's mismatched ranges,
// without repairing anything (a dry run); an error from fn stops it. It
// reads each range in pages of ChunkSize keys of the side with more rows.
func (r *Reconciler) Diff(ctx context.Context, rep *Report, fn func(context.Context, Difference) error) error {
	return r.diff(ctx, rep, fn, nil)
}

// diff is Diff, counting the ranges examined in *ranges when not nil.
func (r *Reconciler) diff(ctx context.Context, rep *Report, fn func(context.Context, Difference) error, ranges *int) error {
	if rep == nil || rep.meta == nil {
		return duplex.Permanent(errors.New("reconcile: Diff: the report does not come from a Checker"))
	}
	m := rep.meta
	for _, rg := range rep.Mismatched {
		if ranges != nil {
			*ranges++
		}
		if err := r.diffRange(ctx, m, rg, fn); err != nil {
			return err
		}
	}
	return nil
}

type keyHash struct {
	key  []string
	hash string
}

func (r *Reconciler) diffRange(ctx context.Context, m *tableMeta, rg Range, fn func(context.Context, Difference) error) error {
	driver := 0
	if rg.CountB > rg.CountA {
		driver = 1
	}
	other := 1 - driver
	n := r.cfg.ChunkSize
	cur := rg.lo
	for {
		page, err := r.rows(ctx, m, driver, cur, rg.hi, n)
		if err != nil {
			return err
		}
		hi := rg.hi
		if len(page) >= n {
			hi = page[len(page)-1].key
		}
		theirs, err := r.rows(ctx, m, other, cur, hi, 0)
		if err != nil {
			return err
		}
		byKey := make(map[string]keyHash, len(theirs))
		for _, kh := range theirs {
			byKey[strings.Join(kh.key, "\x00")] = kh
		}
		onlyDriver, onlyOther := OnlyA, OnlyB
		if driver == 1 {
			onlyDriver, onlyOther = OnlyB, OnlyA
		}
		var diffs []Difference
		add := func(side int, texts []string, kind DiffKind) error {
			k, err := m.decodeKey(side, texts)
			if err != nil {
				return err
			}
			diffs = append(diffs, Difference{Table: m.table, Key: k, Kind: kind})
			return nil
		}
		for _, kh := range page {
			id := strings.Join(kh.key, "\x00")
			o, ok := byKey[id]
			delete(byKey, id)
			switch {
			case !ok:
				err = add(driver, kh.key, onlyDriver)
			case o.hash != kh.hash:
				err = add(driver, kh.key, DiffValues)
			}
			if err != nil {
				return err
			}
		}
		for _, kh := range theirs { // in key order
			if _, ok := byKey[strings.Join(kh.key, "\x00")]; ok {
				if err := add(other, kh.key, onlyOther); err != nil {
					return err
				}
			}
		}
		for _, d := range diffs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(ctx, d); err != nil {
				return err
			}
		}
		if len(page) < n {
			return nil
		}
		cur = hi
	}
}

// rows reads side's keys and row hashes in (lo, hi], in key order, at
// most limit of them (0: all).
func (r *Reconciler) rows(ctx context.Context, m *tableMeta, side int, lo, hi []string, limit int) ([]keyHash, error) {
	var out []keyHash
	args := append(slices.Clone(lo), hi...)
	err := r.c.query(ctx, side, m.rowsSQL(side, lo != nil, hi != nil, limit), args, func(raw [][]byte) error {
		kh := keyHash{key: make([]string, len(m.key)), hash: string(raw[len(m.key)])}
		for i := range m.key {
			kh.key[i] = string(raw[i])
		}
		out = append(out, kh)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reconcile: table %s: read keys and row hashes: %w", m.table, err)
	}
	return out, nil
}
