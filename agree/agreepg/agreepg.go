package agreepg

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgstate"
	"github.com/duplexsync/duplex/internal/pgutil"
	"github.com/duplexsync/duplex/internal/valuecodec"
)

// DefaultCache is the number of keys the memory cache keeps when
// Config.Cache is 0.
const DefaultCache = 1 << 13

// Config configures a [Store].
type Config struct {
	// Sync names the sync whose agreements the Store keeps: the rows are
	// per sync. Required.
	Sync string
	// Schema is the schema holding the sync's state tables. "":
	// pgstate.DefaultSchema ("duplex").
	Schema string
	// Cache is how many keys the write-through memory cache in front of
	// the table keeps. 0: DefaultCache; negative: no cache.
	Cache int
}

// Store is a [duplex.AgreementStore] in the table <schema>.agreed. It is
// safe for concurrent use. It does not own the pool.
type Store struct {
	pool    *pgxpool.Pool
	sync    string // as stored (dbText)
	table   string // quoted <schema>.agreed
	loadSQL string
	saveSQL string

	mu      sync.Mutex
	cache   *cache // nil: none
	flights map[string]*flight
}

var _ duplex.AgreementStore = (*Store)(nil)

// New creates the agreed table in cfg.Schema when it is missing and returns
// a Store. Concurrent callers are fine: the DDL runs under the same
// transaction-level advisory lock as pgstate.Ensure. Errors are classified
// (internal/pgutil.Classify).
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, &duplex.ConfigError{Field: "agreepg: pool", Reason: "is required"}
	}
	if cfg.Sync == "" {
		return nil, &duplex.ConfigError{Field: "agreepg: Sync", Reason: "is required"}
	}
	if cfg.Schema == "" {
		cfg.Schema = pgstate.DefaultSchema
	}
	t := tableName(cfg.Schema)
	err := pgstate.EnsureDDL(ctx, pool, cfg.Schema, DDL(cfg.Schema))
	if err != nil {
		return nil, fmt.Errorf("agreepg: create table %s: %w", t, pgutil.Classify(err))
	}
	s := &Store{
		pool:  pool,
		sync:  dbText(cfg.Sync),
		table: t,
		loadSQL: `SELECT k.i, a.known, a."row", a.torn
			FROM unnest($3::text[]) WITH ORDINALITY AS k(key, i)
			JOIN LATERAL (SELECT d.known, d."row", d.torn FROM ` + t + ` d
				WHERE d.sync = $1 AND d.tbl = $2 AND d.key = k.key LIMIT 1) a ON true`,
		saveSQL: `INSERT INTO ` + t + ` AS d (sync, tbl, key, known, "row", torn)
			SELECT $1, $2, u.key, u.known, u."row", u.torn
			FROM unnest($3::text[], $4::boolean[], $5::jsonb[], $6::boolean[]) AS u(key, known, "row", torn)
			ON CONFLICT (sync, tbl, key) DO UPDATE SET
				known = EXCLUDED.known, "row" = EXCLUDED."row", torn = EXCLUDED.torn, updated_at = now()`,
	}
	if cfg.Cache >= 0 {
		if cfg.Cache == 0 {
			cfg.Cache = DefaultCache
		}
		s.cache = newCache(cfg.Cache)
		s.flights = make(map[string]*flight)
	}
	return s, nil
}

func tableName(schema string) string {
	return pgutil.QuoteIdent(schema) + "." + pgutil.QuoteIdent("agreed")
}

// DDL returns the statements that create the agreed table of schema
// (idempotent), for migration tools and least-privilege set-ups; New runs
// them.
//
// One row per sync, table and key; "row" is the agreed row in the typed
// jsonb format of internal/valuecodec, NULL when both systems agreed the
// row does not exist.
func DDL(schema string) []string {
	if schema == "" {
		schema = pgstate.DefaultSchema
	}
	return []string{
		"CREATE SCHEMA IF NOT EXISTS " + pgutil.QuoteIdent(schema),
		`CREATE TABLE IF NOT EXISTS ` + tableName(schema) + ` (
			sync text NOT NULL,
			tbl text NOT NULL,
			key text NOT NULL,
			known boolean NOT NULL,
			"row" jsonb,
			torn boolean NOT NULL,
			updated_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (sync, tbl, key))`,
	}
}

// dbText returns s as a text column holds it: s itself when PostgreSQL can
// store it exactly, else U+FFFD and the base64 of s. Distinct strings stay
// distinct: the clean ones stored as themselves never start with U+FFFD.
func dbText(s string) string {
	if valuecodec.Clean(s) && !strings.HasPrefix(s, "\uFFFD") {
		return s
	}
	return "\uFFFD" + base64.StdEncoding.EncodeToString([]byte(s))
}

// tableText returns the text of the tbl column: "schema.name" (or "name"),
// or "schema"."name" quoted when a part holds a dot or a double quote, so
// that distinct tables never share a text.
func tableText(t duplex.Table) string {
	if !strings.ContainsAny(t.Schema, `."`) && !strings.ContainsAny(t.Name, `."`) {
		return dbText(t.String())
	}
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	return dbText(q(t.Schema) + "." + q(t.Name))
}

// entry is an agreement as stored: row is its encoded form, nil for none.
type entry struct {
	known, torn bool
	row         []byte
}

func (e entry) agreement() (duplex.Agreement, error) {
	a := duplex.Agreement{Known: e.known, Torn: e.torn}
	var err error
	a.Row, err = valuecodec.UnmarshalValues(e.row)
	return a, err
}

// cache remembers the entries of about 2*half keys: two generations, the
// older dropped when the newer is full.
type cache struct {
	half     int
	cur, old map[string]entry
}

func newCache(capacity int) *cache {
	h := max(capacity/2, 1)
	return &cache{half: h, cur: make(map[string]entry)}
}

func (c *cache) get(k string) (entry, bool) {
	if e, ok := c.cur[k]; ok {
		return e, true
	}
	e, ok := c.old[k]
	if ok {
		c.put(k, e)
	}
	return e, ok
}

func (c *cache) put(k string, e entry) {
	if _, ok := c.cur[k]; !ok && len(c.cur) >= c.half {
		c.old, c.cur = c.cur, make(map[string]entry, c.half)
	}
	c.cur[k] = e
	delete(c.old, k)
}

func (c *cache) del(k string) {
	delete(c.cur, k)
	delete(c.old, k)
}

// flight tracks the Loads and Saves of a key under way, so that the cache
// only takes what is known to be the table's latest: ver moves at the start
// and at the end of every Save, and an operation updates the cache only if
// it did not move in between (else the key is dropped from the cache).
type flight struct {
	refs int
	ver  uint64
}

// begin registers an operation on the cache keys cks and returns the
// version of each; save marks a Save. Call with s.mu held.
func (s *Store) begin(cks []string, save bool) []uint64 {
	vers := make([]uint64, len(cks))
	for i, ck := range cks {
		f := s.flights[ck]
		if f == nil {
			f = &flight{}
			s.flights[ck] = f
		}
		f.refs++
		if save {
			f.ver++
		}
		vers[i] = f.ver
	}
	return vers
}

// end ends the operation begun with vers: the cache takes es[i] (when ok)
// if the version of cks[i] did not move, else forgets cks[i]. Call with
// s.mu held.
func (s *Store) end(cks []string, vers []uint64, save bool, es []entry, ok bool) {
	for i, ck := range cks {
		f := s.flights[ck]
		switch {
		case ok && f.ver == vers[i]:
			s.cache.put(ck, es[i])
		case save || f.ver != vers[i]:
			s.cache.del(ck)
		}
		if save {
			f.ver++
		}
		if f.refs--; f.refs == 0 {
			delete(s.flights, ck)
		}
	}
}

// Load implements [duplex.AgreementStore]. Keys in the cache need no
// query; the others are read with one statement.
func (s *Store) Load(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Agreement, error) {
	out := make([]duplex.Agreement, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	tbl := tableText(t)
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = dbText(k.String())
	}
	var (
		es      = make([]entry, len(keys))
		miss    []string                 // distinct keys to query
		missAt  = make(map[string]int)   // key -> index in miss
		missFor = make([]int, len(keys)) // per key: index in miss, -1 for a hit
		cks     []string                 // cache keys of miss
		vers    []uint64                 // their flight versions
	)
	s.mu.Lock()
	for i, name := range names {
		if s.cache != nil {
			if e, ok := s.cache.get(tbl + "\x00" + name); ok {
				es[i], missFor[i] = e, -1
				continue
			}
		}
		j, seen := missAt[name]
		if !seen {
			j = len(miss)
			missAt[name] = j
			miss = append(miss, name)
		}
		missFor[i] = j
	}
	if s.cache != nil && len(miss) > 0 {
		cks = make([]string, len(miss))
		for j, name := range miss {
			cks[j] = tbl + "\x00" + name
		}
		vers = s.begin(cks, false)
	}
	s.mu.Unlock()

	if len(miss) > 0 {
		found, err := s.query(ctx, tbl, miss)
		if s.cache != nil {
			s.mu.Lock()
			s.end(cks, vers, false, found, err == nil)
			s.mu.Unlock()
		}
		if err != nil {
			return nil, fmt.Errorf("agreepg: load %d keys of %s from %s: %w", len(miss), t.String(), s.table, err)
		}
		for i, j := range missFor {
			if j >= 0 {
				es[i] = found[j]
			}
		}
	}
	for i, e := range es {
		a, err := e.agreement()
		if err != nil {
			return nil, duplex.Permanent(fmt.Errorf("agreepg: load %s %s from %s: %w", t.String(), keys[i].String(), s.table, err))
		}
		out[i] = a
	}
	return out, nil
}

// query reads the entries of names (distinct), in their order; the zero
// entry for those without a row.
func (s *Store) query(ctx context.Context, tbl string, names []string) ([]entry, error) {
	found := make([]entry, len(names))
	rows, err := s.pool.Query(ctx, s.loadSQL, s.sync, tbl, names)
	if err != nil {
		return nil, pgutil.Classify(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			i int64
			e entry
		)
		if err := rows.Scan(&i, &e.known, &e.row, &e.torn); err != nil {
			return nil, pgutil.Classify(err)
		}
		if i < 1 || int(i) > len(found) {
			return nil, duplex.Permanent(fmt.Errorf("row for key %d of %d", i, len(found)))
		}
		found[i-1] = e
	}
	if err := rows.Err(); err != nil {
		return nil, pgutil.Classify(err)
	}
	return found, nil
}

// Save implements [duplex.AgreementStore] with one statement (an upsert);
// of a key given twice, the last agreement wins. The cache takes the
// agreements once the statement succeeded.
func (s *Store) Save(ctx context.Context, t duplex.Table, keys []duplex.Key, as []duplex.Agreement) error {
	if len(keys) != len(as) {
		return duplex.Permanent(fmt.Errorf("agreepg: save %d keys of %s with %d agreements", len(keys), t.String(), len(as)))
	}
	if len(keys) == 0 {
		return nil
	}
	tbl := tableText(t)
	var (
		names []string
		es    []entry
		at    = make(map[string]int, len(keys))
	)
	for i, k := range keys {
		name := dbText(k.String())
		e := entry{known: as[i].Known, torn: as[i].Torn}
		if as[i].Row != nil {
			b, err := valuecodec.MarshalValues(as[i].Row)
			if err != nil {
				return duplex.Permanent(fmt.Errorf("agreepg: save %s %s: %w", t.String(), k.String(), err))
			}
			e.row = b
		}
		if j, ok := at[name]; ok {
			es[j] = e
			continue
		}
		at[name] = len(names)
		names = append(names, name)
		es = append(es, e)
	}
	known := make([]bool, len(es))
	torn := make([]bool, len(es))
	rows := make([][]byte, len(es))
	for i, e := range es {
		known[i], torn[i], rows[i] = e.known, e.torn, e.row
	}

	var cks []string
	var vers []uint64
	if s.cache != nil {
		cks = make([]string, len(names))
		for i, name := range names {
			cks[i] = tbl + "\x00" + name
		}
		s.mu.Lock()
		vers = s.begin(cks, true)
		s.mu.Unlock()
	}
	_, err := s.pool.Exec(ctx, s.saveSQL, s.sync, tbl, names, known, rows, torn)
	if s.cache != nil {
		s.mu.Lock()
		s.end(cks, vers, true, es, err == nil)
		s.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("agreepg: save %d keys of %s to %s: %w", len(names), t.String(), s.table, pgutil.Classify(err))
	}
	return nil
}

// Forget deletes every agreement of the Store's sync, and empties the
// cache: for tests and teardown.
func (s *Store) Forget(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM `+s.table+` WHERE sync = $1`, s.sync); err != nil {
		return fmt.Errorf("agreepg: forget the agreements in %s: %w", s.table, pgutil.Classify(err))
	}
	if s.cache != nil {
		s.mu.Lock()
		s.cache = newCache(2 * s.cache.half)
		for _, f := range s.flights {
			f.ver++ // what is under way may hold rows from before
		}
		s.mu.Unlock()
	}
	return nil
}
