package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/dlq"
)

// benchItems is the table onboarding copies and compares.
var benchItems = duplex.Table{Schema: "public", Name: "items"}

// seedA fills a's items with rows rows (b's stay as newPair left them).
func seedA(ctx context.Context, p *pair, rows int) error {
	if _, err := p.poolA.Exec(ctx, `INSERT INTO items (id, v, payload) SELECT g, 0, repeat('x', 40) || g FROM generate_series(1, $1::int) g`, rows); err != nil {
		return fmt.Errorf("seed items in %s: %w", p.a, err)
	}
	if _, err := p.poolA.Exec(ctx, `VACUUM ANALYZE items`); err != nil {
		return fmt.Errorf("vacuum items in %s: %w", p.a, err)
	}
	return nil
}

// nativeCopy times PostgreSQL's own initial copy (copy_data = true) of
// items from a into b's empty table: from CREATE SUBSCRIPTION until the
// table's sync state is ready ('r') and b holds every row.
func nativeCopy(ctx context.Context, c *cluster, p *pair, rows int, timeout time.Duration) (map[string]float64, error) {
	slot := p.nativeSlot()
	p.native = true
	if _, err := p.poolA.Exec(ctx, "CREATE PUBLICATION "+slot+" FOR TABLE items"); err != nil {
		return nil, fmt.Errorf("create publication %s in %s: %w", slot, p.a, err)
	}
	if _, err := p.poolA.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
		return nil, fmt.Errorf("create slot %s in %s: %w", slot, p.a, err)
	}
	conn, err := c.libpqConn(p.a)
	if err != nil {
		return nil, err
	}
	// A worker of an earlier run still exiting makes the launcher wait
	// wal_retrieve_retry_interval (5 s) before it starts the copy: that is
	// the benchmark's doing, not the copy's.
	if err := waitFor(ctx, "earlier logical replication workers to exit", 30*time.Second, func(ctx context.Context) (bool, error) {
		var n int
		err := p.poolB.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'logical replication worker'`).Scan(&n)
		return n == 0, err
	}); err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := p.poolB.Exec(ctx, fmt.Sprintf("CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s WITH (create_slot = false, copy_data = true, slot_name = '%s')",
		slot, strings.ReplaceAll(conn, "'", "''"), slot, slot)); err != nil {
		return nil, fmt.Errorf("create subscription %s in %s: %w", slot, p.b, err)
	}
	err = waitFor(ctx, "the native initial copy", timeout, func(ctx context.Context) (bool, error) {
		var pending, n int
		if err := p.poolB.QueryRow(ctx, `SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'`).Scan(&pending); err != nil {
			return false, err
		}
		if pending > 0 {
			return false, nil
		}
		err := p.poolB.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n)
		return n == rows, err
	})
	if err != nil {
		return nil, err
	}
	secs := time.Since(start).Seconds()
	return map[string]float64{"secs": secs, "rows_s": float64(rows) / secs}, nil
}

// onboardSync builds a Sync of the pair's items (its slots created, as a
// real start does before onboarding).
func onboardSync(ctx context.Context, c *cluster, p *pair) (*duplex.Sync, func(), error) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var closers []func()
	closeAll := func() {
		for _, f := range closers {
			f()
		}
	}
	endpoint := func(name, db string) (duplex.Endpoint, error) {
		src, err := pglogical.New(ctx, pglogical.Config{ConnString: c.dbURL(db, nil), Sync: p.sync, System: name,
			Tables: []duplex.Table{benchItems}, SetReplicaIdentity: true, Logger: logger})
		if err != nil {
			return duplex.Endpoint{}, err
		}
		closers = append(closers, src.Close)
		if err := src.Setup(ctx, false); err != nil {
			return duplex.Endpoint{}, err
		}
		pool := p.poolA
		if name == "b" {
			pool = p.poolB
		}
		app, err := applypg.New(ctx, pool, applypg.Config{Sync: p.sync, Target: name, Logger: logger})
		if err != nil {
			return duplex.Endpoint{}, err
		}
		return duplex.Endpoint{Name: name, Source: src, Applier: app}, nil
	}
	a, err := endpoint("a", p.a)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	b, err := endpoint("b", p.b)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	s, err := duplex.NewSync(&duplex.SyncConfig{Name: p.sync, A: a, B: b, DeadLetters: dlq.NewMemory(dlq.MemoryConfig{}), Logger: logger,
		Onboarding: duplex.OnboardingConfig{Tables: []duplex.Table{benchItems}}})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return s, closeAll, nil
}

// timed runs f on a Sync of the pair and returns its reports and seconds.
func timed(ctx context.Context, s *duplex.Sync, f func(context.Context, *duplex.Sync) ([]duplex.OnboardingProgress, error)) ([]duplex.OnboardingProgress, float64, error) {
	start := time.Now()
	ps, err := f(ctx, s)
	return ps, time.Since(start).Seconds(), err
}

func onboard(ctx context.Context, s *duplex.Sync) ([]duplex.OnboardingProgress, error) {
	return s.Onboard(ctx)
}

// onboardRun times duplex's onboarding of the pair: with populated, of two
// sides holding the same rows (each compared and recorded as agreed on
// both), followed by a ReconcileTables pass over them (compare only:
// nothing differs); else of a's rows into b's empty table.
func onboardRun(ctx context.Context, c *cluster, p *pair, rows int, populated bool) (map[string]float64, error) {
	s, closeAll, err := onboardSync(ctx, c, p)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	ps, secs, err := timed(ctx, s, onboard)
	if err != nil {
		return nil, err
	}
	if len(ps) != 1 {
		return nil, fmt.Errorf("onboarding reported %d tables, want 1", len(ps))
	}
	got, what := ps[0].Copied, "copied"
	if populated {
		got, what = ps[0].Agreed, "agreed"
	}
	if got != int64(rows) {
		return nil, fmt.Errorf("onboarding %s %v rows, want %d", what, ps, rows)
	}
	m := map[string]float64{"secs": secs, "rows_s": float64(rows) / secs}
	if !populated {
		return m, nil
	}
	ps, rsecs, err := timed(ctx, s, func(ctx context.Context, s *duplex.Sync) ([]duplex.OnboardingProgress, error) {
		return s.ReconcileTables(ctx, []duplex.Table{benchItems}, 0)
	})
	if err != nil {
		return nil, err
	}
	if len(ps) != 1 || ps[0].Compared != int64(rows) {
		return nil, fmt.Errorf("reconcile compared %v keys, want %d", ps, rows)
	}
	m["reconcile_keys_s"] = float64(rows) / rsecs
	return m, nil
}
