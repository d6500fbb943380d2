package deduppg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgstate"
)

// Config configures a [Deduper].
type Config struct {
	// Sync names the sync (duplex.Config.Name). Required.
	Sync string
	// Target names the system the changes are applied to, as the applier
	// names it in the ledger. Required.
	Target string
	// Schema is the schema holding the sync's state tables. "":
	// pgstate.DefaultSchema ("duplex").
	Schema string
}

// Deduper is a [duplex.Deduper] over the applied-changes ledger of one
// sync and target in PostgreSQL. It is safe for concurrent use. It does not
// own the pool.
type Deduper struct {
	pool       *pgxpool.Pool
	sync       string
	target     string
	seenSQL    string
	markSQL    string
	pruneSQL   string
	pruneBatch int
}

var _ duplex.Deduper = (*Deduper)(nil)

// New checks cfg, creates the state tables when they are missing
// (pgstate.Ensure) and returns a Deduper. The error joins every problem of
// cfg; an error creating the tables is classified like those of Seen.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Deduper, error) {
	var errs []error
	if pool == nil {
		errs = append(errs, &duplex.ConfigError{Field: "deduppg: pool", Reason: "is required"})
	}
	if cfg.Sync == "" {
		errs = append(errs, &duplex.ConfigError{Field: "deduppg: Config.Sync", Reason: "is required"})
	}
	if cfg.Target == "" {
		errs = append(errs, &duplex.ConfigError{Field: "deduppg: Config.Target", Reason: "is required"})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.Schema == "" {
		cfg.Schema = pgstate.DefaultSchema
	}
	if err := pgstate.Ensure(ctx, pool, cfg.Schema); err != nil {
		return nil, classify("deduppg: create state tables", err)
	}
	n := pgstate.Names(cfg.Schema)
	return &Deduper{
		pool:   pool,
		sync:   cfg.Sync,
		target: cfg.Target,
		// One primary-key probe per id, whatever the statistics say. The
		// plainer "change_id = ANY($3)" lets the planner, on a table not
		// analyzed yet (new, or grown fast), use the index for sync and
		// target only and filter the ids: a scan of the whole ledger per
		// call. The LIMIT keeps the subquery from being turned into a hash
		// join.
		seenSQL: "SELECT i.id FROM unnest($3::text[]) AS i(id), LATERAL (SELECT 1 FROM " + n.Applied +
			" a WHERE a.sync = $1 AND a.target = $2 AND a.change_id = i.id LIMIT 1) hit",
		markSQL: "INSERT INTO " + n.Applied + " (sync, target, change_id)" +
			" SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
		pruneSQL: "DELETE FROM " + n.Applied + " WHERE ctid = ANY(ARRAY(SELECT ctid FROM " + n.Applied +
			" WHERE sync = $1 AND target = $2 AND applied_at < now() - $3::bigint * interval '1 microsecond' LIMIT $4))",
		pruneBatch: 10_000,
	}, nil
}

// Seen implements [duplex.Deduper] with one query (an index probe per
// distinct id): answers[i] reports whether ids[i] is in the ledger (applied
// by the applier, or marked).
func (d *Deduper) Seen(ctx context.Context, ids []string) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := d.pool.Query(ctx, d.seenSQL, d.sync, d.target, slices.Compact(slices.Sorted(slices.Values(ids))))
	if err != nil {
		return nil, classify("deduppg: seen", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, classify("deduppg: seen", err)
	}
	if len(found) == 0 {
		return out, nil
	}
	set := make(map[string]struct{}, len(found))
	for _, id := range found {
		set[id] = struct{}{}
	}
	for i, id := range ids {
		_, out[i] = set[id]
	}
	return out, nil
}

// Mark implements [duplex.Deduper] with one statement: it inserts the ids
// that are not in the ledger yet, in its own transaction. The ids are
// sorted and deduplicated first, so that concurrent Marks of overlapping
// batches take their row locks in the same order and cannot deadlock.
func (d *Deduper) Mark(ctx context.Context, ids []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	sorted := slices.Compact(slices.Sorted(slices.Values(ids)))
	if _, err := d.pool.Exec(ctx, d.markSQL, d.sync, d.target, sorted); err != nil {
		return classify("deduppg: mark", err)
	}
	return nil
}

// Prune deletes the ledger rows of this sync and target recorded more than
// olderThan ago (by the database's clock), in batches of 10,000 rows each
// in its own transaction, and returns how many it deleted. It stops at the
// first error, returning the rows deleted until then. See the package
// documentation for how far it is safe to prune.
func (d *Deduper) Prune(ctx context.Context, olderThan time.Duration) (int64, error) {
	if olderThan < 0 {
		return 0, duplex.Permanent(fmt.Errorf("deduppg: prune: negative age %s", olderThan))
	}
	var total int64
	for {
		tag, err := d.pool.Exec(ctx, d.pruneSQL, d.sync, d.target, olderThan.Microseconds(), d.pruneBatch)
		if err != nil {
			return total, classify("deduppg: prune", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(d.pruneBatch) {
			return total, nil
		}
	}
}
