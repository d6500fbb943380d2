package dlqpg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/pgstate"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// Config configures a [Store].
type Config struct {
	// Schema is the schema holding the sync's state tables. "":
	// pgstate.DefaultSchema ("duplex").
	Schema string
	// Now returns the current time, for tests. nil: time.Now.
	Now func() time.Time
}

// Store is a dead-letter queue in the table <schema>.dead_letters: a
// [duplex.DeadLetterSink] and a [dlq.Store]. It is safe for concurrent use.
// It does not own the pool.
type Store struct {
	pool  *pgxpool.Pool
	now   func() time.Time
	table string // quoted <schema>.dead_letters
}

var (
	_ duplex.DeadLetterSink = (*Store)(nil)
	_ dlq.Store             = (*Store)(nil)
)

// New creates the dead_letters table in cfg.Schema when it is missing and
// returns a Store. Concurrent callers are fine: the DDL runs under the
// same transaction-level advisory lock as pgstate.Ensure. Errors are
// classified (internal/pgutil.Classify).
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, &duplex.ConfigError{Field: "dlqpg: pool", Reason: "is required"}
	}
	if cfg.Schema == "" {
		cfg.Schema = pgstate.DefaultSchema
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	err := pgstate.EnsureDDL(ctx, pool, cfg.Schema, DDL(cfg.Schema))
	if err != nil {
		return nil, classify("dlqpg: create table "+tableName(cfg.Schema), err)
	}
	return &Store{pool: pool, now: cfg.Now, table: tableName(cfg.Schema)}, nil
}

func tableName(schema string) string {
	if schema == "" {
		schema = pgstate.DefaultSchema
	}
	return pgutil.QuoteIdent(schema) + "." + pgutil.QuoteIdent("dead_letters")
}

// DDL returns the statements that create the dead-letter table of schema
// and its indexes (idempotent), for migration tools; New runs them.
//
// One row per entry. The columns other than payload and conflict are what
// List, Depth and PendingForKey select on: direction holds the "a_to_b"
// form Filter.Direction matches, direction_from and direction_to the
// Direction itself (which is what identifies an entry: "a_to_b" alone is
// ambiguous when names contain "_to_"); table_name holds "schema.name" as
// Filter.Table matches it, table_schema and table_rel the duplex.Table
// itself; change_key holds duplex.Key.String. payload is the whole
// duplex.Change and conflict the duplex.ConflictInfo (or NULL), in a typed
// JSON encoding that keeps the Go types of values (see codec.go).
func DDL(schema string) []string {
	if schema == "" {
		schema = pgstate.DefaultSchema
	}
	t := tableName(schema)
	return []string{
		"CREATE SCHEMA IF NOT EXISTS " + pgutil.QuoteIdent(schema),
		`CREATE TABLE IF NOT EXISTS ` + t + ` (
			id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			sync text NOT NULL,
			direction text NOT NULL,
			direction_from text NOT NULL,
			direction_to text NOT NULL,
			table_name text NOT NULL,
			table_schema text NOT NULL,
			table_rel text NOT NULL,
			change_key text NOT NULL,
			change_id text NOT NULL,
			reason text NOT NULL,
			error text NOT NULL,
			attempts bigint NOT NULL,
			payload jsonb NOT NULL,
			conflict jsonb,
			status text NOT NULL DEFAULT 'pending'
				CHECK (status IN ('pending', 'retried', 'dismissed', 'resolved')),
			resolved_by text NOT NULL DEFAULT '',
			resolution text NOT NULL DEFAULT '',
			first_seen timestamptz NOT NULL,
			last_seen timestamptz NOT NULL,
			updated_at timestamptz NOT NULL,
			count bigint NOT NULL DEFAULT 1)`,
		// Added by later versions: existing tables get them too.
		`ALTER TABLE ` + t + ` ADD COLUMN IF NOT EXISTS row_key text NOT NULL DEFAULT ''`,
		`ALTER TABLE ` + t + ` ADD COLUMN IF NOT EXISTS history jsonb`,
		// One pending entry per held row (dlq.RowIdentity).
		`CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_row_idx ON ` + t +
			` (row_key) WHERE status = 'pending' AND row_key <> ''`,
		// The identity of an entry, for the re-put upsert. Changes without
		// an ID cannot be recognised and always add an entry.
		`CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_change_idx ON ` + t +
			` (sync, direction_from, direction_to, change_id) WHERE change_id <> ''`,
		`CREATE INDEX IF NOT EXISTS dead_letters_status_idx ON ` + t + ` (status, id)`,
		`CREATE INDEX IF NOT EXISTS dead_letters_direction_idx ON ` + t + ` (direction, id)`,
		`CREATE INDEX IF NOT EXISTS dead_letters_table_idx ON ` + t + ` (table_name, change_key, id)`,
		`CREATE INDEX IF NOT EXISTS dead_letters_pending_key_idx ON ` + t +
			` (direction_from, direction_to, table_schema, table_rel, change_key, first_seen, id) WHERE status = 'pending'`,
		`CREATE INDEX IF NOT EXISTS dead_letters_depth_idx ON ` + t +
			` (sync, direction, table_name, reason) WHERE status = 'pending'`,
	}
}

// classify marks err with its duplex.ErrorClass and says what failed.
func classify(what string, err error) error {
	return fmt.Errorf("%s: %w", what, pgutil.Classify(err))
}

// pgText makes s storable in a text column: PostgreSQL text holds neither
// NUL nor invalid UTF-8, so each becomes U+FFFD. The payload keeps the
// change's strings exactly; the columns other than payload and conflict
// lose such characters.
func pgText(s string) string {
	if clean(s) {
		return s
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
}

// Put implements [duplex.DeadLetterSink]. A change put again (same Sync,
// Direction and Change.ID), or a row held by a two-way merge that has a
// pending entry (same dlq.RowIdentity, kept in row_key), updates that
// entry (dlq.Absorb) and makes it pending again; it is durable when Put
// returns nil.
func (s *Store) Put(ctx context.Context, l *duplex.DeadLetter) error {
	if l == nil {
		return errNilLetter
	}
	// Two puts of one new held row racing: the partial unique index on
	// row_key lets one insert, the other finds its entry on the next turn.
	for range 3 {
		done, err := s.put(ctx, l)
		if err != nil || done {
			return err
		}
	}
	return duplex.Transient(fmt.Errorf("dlqpg: put %s: its entry kept changing under the put", l.Change.String()))
}

// put stores l in one transaction; false means a concurrent put created
// its entry first (try again).
func (s *Store) put(ctx context.Context, l *duplex.DeadLetter) (bool, error) {
	now := s.now()
	row := dlq.RowIdentity(l)
	done := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		e, stored, found, err := s.lockEntry(ctx, tx, "sync = $1 AND direction_from = $2 AND direction_to = $3 AND change_id = $4 AND change_id <> ''",
			pgText(l.Sync), pgText(l.Direction.From), pgText(l.Direction.To), pgText(l.Change.ID))
		if err == nil && !found && row != "" {
			// row_key <> '' spelled out, so a generic plan can use the
			// partial unique index.
			e, stored, found, err = s.lockEntry(ctx, tx, "row_key = $1 AND row_key <> '' AND status = 'pending'", pgText(row))
		}
		if err != nil {
			return err
		}
		if found {
			dlq.Absorb(&e, l, now) // e.History: the versions this put supersedes
		} else {
			e = dlq.NewEntry(l, now)
		}
		history, err := addHistory(stored, e.History)
		if err != nil {
			return &encodeError{err}
		}
		args, err := entryArgs(&e, row, history)
		if err != nil {
			return err
		}
		if found {
			_, err = tx.Exec(ctx, `UPDATE `+s.table+` SET sync = $1, direction = $2, direction_from = $3, direction_to = $4,
				table_name = $5, table_schema = $6, table_rel = $7, change_key = $8, change_id = $9, reason = $10,
				error = $11, attempts = $12, payload = $13, conflict = $14, status = $15, first_seen = $16,
				last_seen = $17, updated_at = $18, count = $19, history = $21,
				row_key = CASE WHEN EXISTS (SELECT FROM `+s.table+` o WHERE o.row_key = $20 AND o.status = 'pending' AND o.id <> $22)
					THEN '' ELSE $20 END
				WHERE id = $22`,
				append(args, e.ID)...)
			done = err == nil
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO `+s.table+` (sync, direction, direction_from, direction_to,
				table_name, table_schema, table_rel, change_key, change_id, reason, error, attempts,
				payload, conflict, status, first_seen, last_seen, updated_at, count, row_key, history)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
			ON CONFLICT DO NOTHING`, args...)
		done = err == nil && tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		if pgutil.SQLState(err) == "23505" {
			return false, nil // a concurrent put took the row's pending entry first
		}
		if _, ok := errors.AsType[*encodeError](err); ok {
			return false, duplex.Permanent(fmt.Errorf("dlqpg: put %s: %w", l.Change.String(), err))
		}
		return false, classify("dlqpg: put "+l.Change.String(), err)
	}
	return done, nil
}

// encodeError is a value the payload codec cannot store.
type encodeError struct{ err error }

func (e *encodeError) Error() string { return e.err.Error() }
func (e *encodeError) Unwrap() error { return e.err }

// lockEntry reads and locks the entry matching where, if any: its History
// left out, and returned as stored (a put adds to it without decoding it).
func (s *Store) lockEntry(ctx context.Context, tx pgx.Tx, where string, args ...any) (dlq.Entry, []byte, bool, error) {
	e, history, err := scanEntryRaw(tx.QueryRow(ctx, "SELECT "+columns+" FROM "+s.table+" WHERE "+where+" ORDER BY id LIMIT 1 FOR UPDATE", args...))
	if errors.Is(err, pgx.ErrNoRows) {
		return dlq.Entry{}, nil, false, nil
	}
	return e, history, err == nil, err
}

// entryArgs returns the column values of e, in the order of put's
// statements ($1 to $21).
func entryArgs(e *dlq.Entry, row string, history []byte) ([]any, error) {
	payload, err := encodeChange(&e.Change)
	if err != nil {
		return nil, &encodeError{err}
	}
	conflict, err := encodeConflict(e.Conflict)
	if err != nil {
		return nil, &encodeError{err}
	}
	if e.Status != dlq.StatusPending {
		row = ""
	}
	return []any{pgText(e.Sync), pgText(e.Direction.String()), pgText(e.Direction.From), pgText(e.Direction.To),
		pgText(e.Change.Table.String()), pgText(e.Change.Table.Schema), pgText(e.Change.Table.Name),
		pgText(e.Change.Key.String()), pgText(e.Change.ID), pgText(string(e.Reason)), pgText(e.Error),
		int64(e.Attempts), payload, conflict, string(e.Status), e.FirstSeen, e.LastSeen, e.UpdatedAt,
		int64(e.Count), pgText(row), history}, nil
}

// columns are the columns scanEntry reads, in its order.
const columns = `id, sync, direction_from, direction_to, reason, error, attempts, payload, conflict,
	status, resolved_by, resolution, first_seen, last_seen, updated_at, count, history`

func scanEntry(row pgx.Row) (dlq.Entry, error) {
	e, history, err := scanEntryRaw(row)
	if err != nil {
		return dlq.Entry{}, err
	}
	if e.History, err = decodeHistory(history); err != nil {
		return dlq.Entry{}, fmt.Errorf("entry %d: %w", e.ID, err)
	}
	return e, nil
}

// scanEntryRaw reads an entry of columns, its History left out and
// returned as stored.
func scanEntryRaw(row pgx.Row) (dlq.Entry, []byte, error) {
	var (
		e                 dlq.Entry
		attempts, count   int64
		payload, conflict []byte
		history           []byte
		status            string
	)
	err := row.Scan(&e.ID, &e.Sync, &e.Direction.From, &e.Direction.To, &e.Reason, &e.Error, &attempts,
		&payload, &conflict, &status, &e.ResolvedBy, &e.Resolution, &e.FirstSeen, &e.LastSeen, &e.UpdatedAt, &count, &history)
	if err != nil {
		return dlq.Entry{}, nil, err
	}
	e.Attempts, e.Count, e.Status, e.At = int(attempts), int(count), dlq.Status(status), e.LastSeen
	if e.Change, err = decodeChange(payload); err != nil {
		return dlq.Entry{}, nil, fmt.Errorf("entry %d: %w", e.ID, err)
	}
	if e.Conflict, err = decodeConflict(conflict); err != nil {
		return dlq.Entry{}, nil, fmt.Errorf("entry %d: %w", e.ID, err)
	}
	return e, history, nil
}

func collect(rows pgx.Rows) ([]dlq.Entry, error) {
	defer rows.Close()
	out := []dlq.Entry{}
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// List implements [dlq.Store]. The page and the total are read in one
// snapshot.
func (s *Store) List(ctx context.Context, f dlq.Filter) ([]dlq.Entry, int, error) {
	var (
		conds []string
		args  []any
	)
	cond := func(col, v string) {
		if v != "" {
			args = append(args, pgText(v))
			conds = append(conds, col+" = $"+strconv.Itoa(len(args)))
		}
	}
	cond("sync", f.Sync)
	cond("direction", f.Direction)
	cond("table_name", f.Table)
	cond("reason", string(f.Reason))
	cond("status", string(f.Status))
	cond("change_key", f.Key)
	if f.Field != "" {
		args = append(args, pgText(f.Field))
		conds = append(conds, "conflict->'fields' ? $"+strconv.Itoa(len(args)))
	}
	if !f.Before.IsZero() {
		args = append(args, f.Before)
		conds = append(conds, "first_seen < $"+strconv.Itoa(len(args)))
	}
	where := "true"
	if len(conds) > 0 {
		where = strings.Join(conds, " AND ")
	}

	limit := f.Limit
	if limit <= 0 {
		limit = dlq.DefaultLimit
	}
	page, pageArgs := where, slices.Clone(args)
	order := "DESC"
	if f.OldestFirst {
		order = "ASC"
	}
	if f.After != 0 {
		pageArgs = append(pageArgs, f.After)
		op := " < $"
		if f.OldestFirst {
			op = " > $"
		}
		page += " AND id" + op + strconv.Itoa(len(pageArgs))
	}
	pageArgs = append(pageArgs, limit, max(f.Offset, 0))
	pageSQL := "SELECT " + columns + " FROM " + s.table + " WHERE " + page + " ORDER BY id " + order +
		" LIMIT $" + strconv.Itoa(len(pageArgs)-1) + " OFFSET $" + strconv.Itoa(len(pageArgs))

	var (
		out   []dlq.Entry
		total int64
	)
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+s.table+" WHERE "+where, args...).Scan(&total); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, pageSQL, pageArgs...)
		if err != nil {
			return err
		}
		out, err = collect(rows)
		return err
	})
	if err != nil {
		return nil, 0, classify("dlqpg: list", err)
	}
	return out, int(total), nil
}

// Get implements [dlq.Store].
func (s *Store) Get(ctx context.Context, id int64) (dlq.Entry, error) {
	e, err := scanEntry(s.pool.QueryRow(ctx, "SELECT "+columns+" FROM "+s.table+" WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return dlq.Entry{}, &dlq.NotFoundError{ID: id}
	}
	if err != nil {
		return dlq.Entry{}, classify("dlqpg: get entry "+strconv.FormatInt(id, 10), err)
	}
	return e, nil
}

// SetStatus implements [dlq.Store]: a compare-and-set on the entry's
// status, under its row lock.
func (s *Store) SetStatus(ctx context.Context, id int64, from []dlq.Status, to dlq.Status, by, resolution string) (dlq.Entry, error) {
	if err := dlq.CheckTransition(from, to); err != nil {
		return dlq.Entry{}, err
	}
	now := s.now()
	var e dlq.Entry
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var status string
		err := tx.QueryRow(ctx, "SELECT status FROM "+s.table+" WHERE id = $1 FOR UPDATE", id).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return &dlq.NotFoundError{ID: id}
		}
		if err != nil {
			return err
		}
		cur := dlq.Status(status)
		switch {
		case cur == to:
			// Already done (by this caller's earlier click, or someone else's).
			e, err = scanEntry(tx.QueryRow(ctx, "SELECT "+columns+" FROM "+s.table+" WHERE id = $1", id))
		case len(from) == 0 || slices.Contains(from, cur):
			e, err = scanEntry(tx.QueryRow(ctx, "UPDATE "+s.table+
				" SET status = $2, resolved_by = $3, resolution = $4, updated_at = $5,"+
				" row_key = CASE WHEN $2 = 'pending' THEN row_key ELSE '' END WHERE id = $1 RETURNING "+columns,
				id, string(to), pgText(by), pgText(resolution), now))
		default:
			return &dlq.TransitionError{ID: id, Status: cur, From: slices.Clone(from), To: to}
		}
		return err
	})
	if err != nil {
		if errors.Is(err, dlq.ErrNotFound) || errors.Is(err, dlq.ErrTransition) {
			return dlq.Entry{}, err
		}
		return dlq.Entry{}, classify("dlqpg: set status of entry "+strconv.FormatInt(id, 10), err)
	}
	return e, nil
}

// Depth implements [dlq.Store]. Rows are sorted by byte order (COLLATE
// "C"), as Go compares strings.
func (s *Store) Depth(ctx context.Context) ([]dlq.DepthRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT sync, direction, table_name, reason, count(*), min(first_seen) FROM `+s.table+`
		WHERE status = 'pending' GROUP BY 1, 2, 3, 4
		ORDER BY sync COLLATE "C", direction COLLATE "C", table_name COLLATE "C", reason COLLATE "C"`)
	if err != nil {
		return nil, classify("dlqpg: depth", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (dlq.DepthRow, error) {
		var (
			r dlq.DepthRow
			n int64
		)
		err := row.Scan(&r.Sync, &r.Direction, &r.Table, &r.Reason, &n, &r.Oldest)
		r.Count = int(n)
		return r, err
	})
	if err != nil {
		return nil, classify("dlqpg: depth", err)
	}
	if out == nil {
		out = []dlq.DepthRow{}
	}
	return out, nil
}

// PendingForKey implements [dlq.Store].
func (s *Store) PendingForKey(ctx context.Context, direction duplex.Direction, table duplex.Table, key string) ([]dlq.Entry, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+columns+" FROM "+s.table+` WHERE status = 'pending'
		AND direction_from = $1 AND direction_to = $2 AND table_schema = $3 AND table_rel = $4 AND change_key = $5
		ORDER BY first_seen, id`,
		pgText(direction.From), pgText(direction.To), pgText(table.Schema), pgText(table.Name), pgText(key))
	if err == nil {
		var out []dlq.Entry
		if out, err = collect(rows); err == nil {
			return out, nil
		}
	}
	return nil, classify("dlqpg: pending entries of "+table.String()+" "+key, err)
}
