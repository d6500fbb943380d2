package agreepg

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
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
	// System names the system whose records the Store keeps (each system of
	// a two-way sync has its own).
	System string
	// Schema is the schema holding the sync's state tables. "":
	// pgstate.DefaultSchema ("duplex").
	Schema string
	// Cache is how many keys the write-through memory cache in front of
	// the table keeps. 0: DefaultCache; negative: no cache.
	Cache int
}

// Store is a [duplex.AgreementStore] over the records of one sync and
// system in <schema>.agreements, for an Applier that does not keep them in
// its own transactions (apply/applypg does: prefer it). It is safe for
// concurrent use. It does not own the pool.
type Store struct {
	pool *pgxpool.Pool
	rec  *Records

	mu      sync.Mutex
	cache   *cache // nil: none
	flights map[string]*flight
}

var _ duplex.AgreementStore = (*Store)(nil)

// New creates the agreements table in cfg.Schema when it is missing and
// returns a Store. Concurrent callers are fine: the DDL runs under the same
// transaction-level advisory lock as pgstate.Ensure. Errors are classified
// (internal/pgutil.Classify).
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, &duplex.ConfigError{Field: "agreepg: pool", Reason: "is required"}
	}
	if cfg.Sync == "" {
		return nil, &duplex.ConfigError{Field: "agreepg: Sync", Reason: "is required"}
	}
	if err := Ensure(ctx, pool, cfg.Schema); err != nil {
		return nil, err
	}
	s := &Store{pool: pool, rec: NewRecords(cfg.Schema, cfg.Sync, cfg.System)}
	if cfg.Cache >= 0 {
		if cfg.Cache == 0 {
			cfg.Cache = DefaultCache
		}
		s.cache = newCache(cfg.Cache)
		s.flights = make(map[string]*flight)
	}
	return s, nil
}

// Ensure creates the agreements table of schema ("": the default) when it
// is missing.
func Ensure(ctx context.Context, db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, schema string) error {
	if schema == "" {
		schema = pgstate.DefaultSchema
	}
	if err := pgstate.EnsureDDL(ctx, db, schema, DDL(schema)); err != nil {
		return fmt.Errorf("agreepg: create table %s: %w", tableName(schema), pgutil.Classify(err))
	}
	return nil
}

func tableName(schema string) string {
	if schema == "" {
		schema = pgstate.DefaultSchema
	}
	return pgutil.QuoteIdent(schema) + "." + pgutil.QuoteIdent("agreements")
}

// fillFactor leaves half of every page of the agreements table free: a
// merge rewrites a key's record in place of the old one on the same page
// (a HOT update, no new index entry), which a full page refuses.
const fillFactor = "50"

// DDL returns the statements that create the agreements table of schema
// (idempotent), for migration tools and least-privilege set-ups; New and
// apply/applypg run them.
//
// One row per sync, system, table and key: the duplex.Agreement of that
// key on that system. "row" and peer are rows in the binary row form of
// internal/valuecodec (AppendRow; the tagged JSON of older records still
// reads), stored as bytea (the records are duplex's own: no jsonb parsing
// on every write); "row" is NULL when the row is agreed
// absent; peer_kind says where Peer is (0: peer, 1: equal to "row", 2: no
// row); unknown is a JSON array of field names, NULL for none. The primary
// key leads with the key column, so that the records of a chunk's keys are
// one scan of the index with the array of keys; a table of an earlier
// version, whose primary key led with sync, gets the new one (the index is
// rebuilt once, holding the table locked while it builds; a role that does
// not own the table leaves it, with a notice).
func DDL(schema string) []string {
	if schema == "" {
		schema = pgstate.DefaultSchema
	}
	return []string{
		"CREATE SCHEMA IF NOT EXISTS " + pgutil.QuoteIdent(schema),
		`CREATE TABLE IF NOT EXISTS ` + tableName(schema) + ` (
			sync text COLLATE "C" NOT NULL,
			system text COLLATE "C" NOT NULL,
			tbl text COLLATE "C" NOT NULL,
			key text COLLATE "C" NOT NULL,
			version bigint NOT NULL,
			"row" bytea,
			peer bytea,
			peer_kind smallint NOT NULL,
			unknown jsonb,
			updated_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (key, tbl, system, sync)) WITH (fillfactor = ` + fillFactor + `)`,
		pgstate.CollateC(tableName(schema), "sync", "system", "tbl", "key"),
		pgstate.FillFactor(tableName(schema), fillFactor),
		keyFirst(tableName(schema)),
	}
}

// keyFirst returns the idempotent statement that makes table's (quoted)
// primary key (key, tbl, system, sync) where it leads with another column.
func keyFirst(table string) string {
	lit := "'" + strings.ReplaceAll(table, "'", "''") + "'"
	return `DO $duplex$ DECLARE pk name; BEGIN
	SELECT c.conname INTO pk FROM pg_catalog.pg_constraint c
		JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
		WHERE c.conrelid = ` + lit + `::regclass AND c.contype = 'p' AND a.attname <> 'key';
	IF FOUND THEN
		EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I, ADD PRIMARY KEY (key, tbl, system, sync)', ` + lit + `, pk);
	END IF;
EXCEPTION WHEN insufficient_privilege THEN
	RAISE NOTICE 'duplex: cannot make the primary key of % lead with its key column: not its owner', ` + lit + `;
END $duplex$`
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
		found, err := s.rec.query(ctx, s.pool, tbl, miss)
		if s.cache != nil {
			s.mu.Lock()
			s.end(cks, vers, false, found, err == nil)
			s.mu.Unlock()
		}
		if err != nil {
			return nil, fmt.Errorf("agreepg: load %d keys of %s from %s: %w", len(miss), t.String(), s.rec.table, err)
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
			return nil, duplex.Permanent(fmt.Errorf("agreepg: load %s %s from %s: %w", t.String(), keys[i].String(), s.rec.table, err))
		}
		out[i] = a
	}
	return out, nil
}

// Save implements [duplex.AgreementStore] with one batch (the statements of
// Records.QueueSave, sent again with upsert when a first record exists
// after all); of a key given twice, the last agreement wins. The cache takes the records once the statements
// succeeded.
func (s *Store) Save(ctx context.Context, t duplex.Table, keys []duplex.Key, as []duplex.Agreement) error {
	if len(keys) != len(as) {
		return duplex.Permanent(fmt.Errorf("agreepg: save %d keys of %s with %d agreements", len(keys), t.String(), len(as)))
	}
	if len(keys) == 0 {
		return nil
	}
	ws := make([]duplex.AgreementWrite, len(keys))
	for i, k := range keys {
		ws[i] = duplex.AgreementWrite{Table: t, Key: k, Agreement: as[i]}
	}
	ss, err := saves(ws)
	if err != nil {
		return err
	}
	var cks []string
	var es []entry
	for _, ts := range ss {
		for i, name := range ts.names {
			cks = append(cks, ts.tbl+"\x00"+name)
			es = append(es, ts.es[i])
		}
		for _, name := range ts.deletes {
			cks = append(cks, ts.tbl+"\x00"+name)
			es = append(es, entry{})
		}
	}
	var vers []uint64
	if s.cache != nil {
		s.mu.Lock()
		vers = s.begin(cks, true)
		s.mu.Unlock()
	}
	err = s.send(ctx, ws, false)
	if IsRecordExists(err) {
		err = s.send(ctx, ws, true)
	}
	if s.cache != nil {
		s.mu.Lock()
		s.end(cks, vers, true, es, err == nil)
		s.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("agreepg: save %d keys of %s to %s: %w", len(keys), t.String(), s.rec.table, pgutil.Classify(err))
	}
	return nil
}

// send writes ws in one batch (upsert: see Records.QueueSave).
func (s *Store) send(ctx context.Context, ws []duplex.AgreementWrite, upsert bool) error {
	b := &pgx.Batch{}
	plain, err := s.rec.QueueSave(b, ws, upsert)
	if err != nil {
		return err
	}
	br := s.pool.SendBatch(ctx, b)
	for range plain {
		if _, err = br.Exec(); err != nil {
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// Forget deletes every agreement of the Store's sync, and empties the
// cache: for tests and teardown.
func (s *Store) Forget(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM `+s.rec.table+` WHERE sync = $1 AND system = $2`, s.rec.sync, s.rec.system); err != nil {
		return fmt.Errorf("agreepg: forget the agreements in %s: %w", s.rec.table, pgutil.Classify(err))
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
