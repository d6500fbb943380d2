package agreepg

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
	"github.com/duplexsync/duplex/internal/valuecodec"
)

// Records is the SQL of one system's agreement records in
// <schema>.agreements: the statements a [Store] runs on its pool, and that
// apply/applypg queues in its apply transactions. It holds no connection
// and is safe for concurrent use.
type Records struct {
	sync, system string // as stored (dbText)
	table        string // quoted <schema>.agreements
	loadSQL      string
	saveSQL      string
	insertSQL    string
	deleteSQL    string
}

// NewRecords returns the Records of sync and system in schema ("":
// pgstate.DefaultSchema). The table must exist (DDL).
func NewRecords(schema, sync, system string) *Records {
	t := tableName(schema)
	return &Records{
		sync:   dbText(sync),
		system: dbText(system),
		table:  t,
		// The records of the keys, in no order (the caller matches them
		// by key): one scan of the primary key's index with the array,
		// which leads with the key column.
		loadSQL: `SELECT d.key, d.version, d."row", d.peer, d.peer_kind, d.unknown FROM ` + t + ` d
			WHERE d.key = ANY($4::text[]) AND d.tbl = $3 AND d.system = $2 AND d.sync = $1`,
		saveSQL: `INSERT INTO ` + t + ` AS d (sync, system, tbl, key, version, "row", peer, peer_kind, unknown)
			SELECT $1, $2, $3, u.key, u.version, u."row", u.peer, u.peer_kind, u.unknown
			FROM unnest($4::text[], $5::bigint[], $6::bytea[], $7::bytea[], $8::int2[], $9::jsonb[]) AS u(key, version, "row", peer, peer_kind, unknown)
			ON CONFLICT (sync, system, tbl, key) DO UPDATE SET
				version = EXCLUDED.version, "row" = EXCLUDED."row", peer = EXCLUDED.peer,
				peer_kind = EXCLUDED.peer_kind, unknown = EXCLUDED.unknown, updated_at = now()`,
		insertSQL: `INSERT INTO ` + t + ` (sync, system, tbl, key, version, "row", peer, peer_kind, unknown)
			SELECT $1, $2, $3, u.key, u.version, u."row", u.peer, u.peer_kind, u.unknown
			FROM unnest($4::text[], $5::bigint[], $6::bytea[], $7::bytea[], $8::int2[], $9::jsonb[]) AS u(key, version, "row", peer, peer_kind, unknown)`,
		deleteSQL: `DELETE FROM ` + t + ` WHERE sync = $1 AND system = $2 AND tbl = $3 AND key = ANY($4::text[])`,
	}
}

// Table returns the quoted name of the records' table.
func (r *Records) Table() string { return r.table }

// Kinds of a record's peer column.
const (
	peerValue  int16 = iota // peer holds the Peer row
	peerAsRow               // Peer equals Row: not stored twice
	peerAbsent              // Peer is nil: the other system had no row
)

// entry is a record as stored: row and peer encoded (row nil: the row is
// agreed absent).
type entry struct {
	known     bool
	version   int64
	row, peer []byte
	peerKind  int16
	unknown   []string
}

func (e entry) agreement() (duplex.Agreement, error) {
	if !e.known {
		return duplex.Agreement{}, nil
	}
	a := duplex.Agreement{Known: true, Version: uint64(e.version), Unknown: e.unknown}
	var err error
	if a.Row, err = valuecodec.UnmarshalRow(e.row); err != nil {
		return a, err
	}
	switch e.peerKind {
	case peerAsRow:
		a.Peer = a.Row.Clone()
	case peerValue:
		a.Peer, err = valuecodec.UnmarshalRow(e.peer)
	}
	return a, err
}

func encode(a duplex.Agreement) (entry, error) {
	e := entry{known: a.Known, version: int64(a.Version), unknown: a.Unknown}
	var err error
	if a.Row != nil {
		if e.row, err = valuecodec.AppendRow(nil, a.Row); err != nil {
			return e, err
		}
	}
	switch {
	case a.Peer == nil:
		e.peerKind = peerAbsent
	case a.Row != nil && sameRow(a.Row, a.Peer):
		e.peerKind = peerAsRow
	default:
		e.peerKind = peerValue
		e.peer, err = valuecodec.AppendRow(nil, a.Peer)
	}
	return e, err
}

// sameRow reports whether a and b hold equal values (duplex.Equal) for the
// same fields.
func sameRow(a, b duplex.Values) bool {
	if len(a) != len(b) {
		return false
	}
	for f, v := range a {
		w, ok := b[f]
		if !ok || !duplex.Equal(v, w) {
			return false
		}
	}
	return true
}

// Querier runs a query: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Load reads the records of keys of t through q, in the order of keys
// (the zero Agreement for keys without one). Errors are classified.
func (r *Records) Load(ctx context.Context, q Querier, t duplex.Table, keys []duplex.Key) ([]duplex.Agreement, error) {
	out := make([]duplex.Agreement, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	names := keyTexts(keys)
	es, err := r.query(ctx, q, tableText(t), names)
	if err != nil {
		return nil, fmt.Errorf("agreepg: load %d agreed rows of %s from %s: %w", len(keys), t, r.table, err)
	}
	for i, e := range es {
		if out[i], err = e.agreement(); err != nil {
			return nil, duplex.Permanent(fmt.Errorf("agreepg: load %s %s from %s: %w", t, keys[i], r.table, err))
		}
	}
	return out, nil
}

// LoadSQL is the query of the records of some keys of a table, for a
// caller that batches it with other statements (it prepares it once per
// connection): its parameters are LoadParams, in text form; ReadLoad reads
// its result in text form. With Lookup's rows in the same batch, a merge
// reads a system in one round trip.
func (r *Records) LoadSQL() string { return r.loadSQL }

// LoadFormats returns the result formats the caller asks LoadSQL's result
// in: the rows (the binary form of internal/valuecodec) as the bytes
// stored, the rest in text form. ReadLoad reads that result.
func (r *Records) LoadFormats() []int16 { return loadFormats }

var loadFormats = []int16{0, 0, 1, 1, 0, 0}

// LoadParams returns LoadSQL's parameters for keys of t, in text form.
func (r *Records) LoadParams(t duplex.Table, keys []duplex.Key) [][]byte {
	names := keyTexts(keys)
	return [][]byte{[]byte(r.sync), []byte(r.system), []byte(tableText(t)), pgutil.TextArray(names)}
}

// ReadLoad reads the result of LoadSQL, in LoadFormats, into out (one per
// key, in the order of keys; the zero Agreement for keys without a record).
func (r *Records) ReadLoad(rr *pgconn.ResultReader, t duplex.Table, keys []duplex.Key, out []duplex.Agreement) error {
	names := keyTexts(keys)
	found := make(map[string]entry, len(keys))
	for rr.NextRow() {
		raw := rr.Values()
		if len(raw) != 6 {
			return duplex.Permanent(fmt.Errorf("agreepg: load agreed rows of %s: %d columns, want 6", t, len(raw)))
		}
		e, err := textEntry(raw)
		if err != nil {
			return duplex.Permanent(fmt.Errorf("agreepg: load agreed rows of %s from %s: %w", t, r.table, err))
		}
		found[string(raw[0])] = e
	}
	for i, e := range inOrder(names, found) {
		var err error
		if out[i], err = e.agreement(); err != nil {
			return duplex.Permanent(fmt.Errorf("agreepg: load %s %s from %s: %w", t, keys[i], r.table, err))
		}
	}
	return nil
}

// keyTexts returns the keys as the records' key column holds them.
func keyTexts(keys []duplex.Key) []string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = dbText(k.String())
	}
	return names
}

// inOrder returns the entries found by key text in the order of names (the
// zero entry, not known, for a name without one).
func inOrder(names []string, found map[string]entry) []entry {
	out := make([]entry, len(names))
	for i, name := range names {
		out[i] = found[name]
	}
	return out
}

// textEntry parses a row of loadSQL in LoadFormats (its first column, the
// key, is the caller's).
func textEntry(raw [][]byte) (entry, error) {
	e := entry{known: true}
	var err error
	if e.version, err = strconv.ParseInt(string(raw[1]), 10, 64); err != nil {
		return e, fmt.Errorf("version %q: %w", raw[1], err)
	}
	e.row, e.peer = bytes.Clone(raw[2]), bytes.Clone(raw[3]) // binary: the bytes stored (nil: NULL)
	kind, err := strconv.ParseInt(string(raw[4]), 10, 16)
	if err != nil {
		return e, fmt.Errorf("peer kind %q: %w", raw[4], err)
	}
	e.peerKind = int16(kind)
	if raw[5] != nil {
		if err := json.Unmarshal(raw[5], &e.unknown); err != nil {
			return e, fmt.Errorf("unknown fields %s: %w", raw[5], err)
		}
	}
	if len(e.unknown) == 0 {
		e.unknown = nil
	}
	return e, nil
}

// query reads the entries of names, in their order.
func (r *Records) query(ctx context.Context, q Querier, tbl string, names []string) ([]entry, error) {
	rows, err := q.Query(ctx, r.loadSQL, r.sync, r.system, tbl, names)
	if err != nil {
		return nil, pgutil.Classify(err)
	}
	defer rows.Close()
	found := make(map[string]entry, len(names))
	for rows.Next() {
		var (
			key     string
			e       entry
			unknown []byte
		)
		if err := rows.Scan(&key, &e.version, &e.row, &e.peer, &e.peerKind, &unknown); err != nil {
			return nil, pgutil.Classify(err)
		}
		if unknown != nil {
			if err := json.Unmarshal(unknown, &e.unknown); err != nil {
				return nil, duplex.Permanent(fmt.Errorf("unknown fields %s: %w", unknown, err))
			}
		}
		e.known = true
		if len(e.unknown) == 0 {
			e.unknown = nil
		}
		found[key] = e
	}
	if err := rows.Err(); err != nil {
		return nil, pgutil.Classify(err)
	}
	return inOrder(names, found), nil
}

// tableSave is what saves records of one table: the columns of the
// records to write, the keys whose records go (records that are not
// Known), and the entries written (for a cache).
type tableSave struct {
	tbl string
	columns
	deletes []string
	es      []entry // per name
}

// saves groups ws by table; of a key given twice, the last wins.

func saves(ws []duplex.AgreementWrite) ([]*tableSave, error) {
	var out []*tableSave
	byTable := map[string]*tableSave{}
	type at struct {
		s *tableSave
		i int
	}
	seen := map[string]at{}
	for _, w := range ws {
		tbl := tableText(w.Table)
		s := byTable[tbl]
		if s == nil {
			s = &tableSave{tbl: tbl}
			byTable[tbl] = s
			out = append(out, s)
		}
		e, err := encode(w.Agreement)
		if err != nil {
			return nil, duplex.Permanent(fmt.Errorf("agreepg: save %s %s: %w", w.Table, w.Key, err))
		}
		name := dbText(w.Key.String())
		if prev, ok := seen[tbl+"\x00"+name]; ok {
			prev.s.es[prev.i] = e
			prev.s.versions[prev.i], prev.s.rows[prev.i], prev.s.peers[prev.i], prev.s.kinds[prev.i] = e.version, e.row, e.peer, e.peerKind
			prev.s.unknown[prev.i] = joinUnknown(e.unknown)
			continue
		}
		seen[tbl+"\x00"+name] = at{s, len(s.names)}
		s.names = append(s.names, name)
		s.es = append(s.es, e)
		s.versions = append(s.versions, e.version)
		s.rows = append(s.rows, e.row)
		s.peers = append(s.peers, e.peer)
		s.kinds = append(s.kinds, e.peerKind)
		s.unknown = append(s.unknown, joinUnknown(e.unknown))
	}
	// A record that is not Known deletes: split them out.
	for _, s := range out {
		keep := 0
		for i := range s.names {
			if !s.es[i].known {
				s.deletes = append(s.deletes, s.names[i])
				continue
			}
			s.names[keep], s.es[keep], s.versions[keep], s.rows[keep], s.peers[keep], s.kinds[keep], s.unknown[keep] =
				s.names[i], s.es[i], s.versions[i], s.rows[i], s.peers[i], s.kinds[i], s.unknown[i]
			keep++
		}
		s.names, s.es, s.versions, s.rows, s.peers, s.kinds, s.unknown = s.names[:keep], s.es[:keep], s.versions[:keep], s.rows[:keep], s.peers[:keep], s.kinds[:keep], s.unknown[:keep]
	}
	return out, nil
}

// joinUnknown encodes field names as a JSON array (nil for none).
func joinUnknown(fs []string) []byte {
	if len(fs) == 0 {
		return nil
	}
	b, _ := json.Marshal(fs) // strings always marshal
	return b
}

// QueueSave queues on b the statements that write ws and returns, per
// statement queued, whether it is a plain insert. The caller reads their
// results in order.
//
// Records of Version 1 are a key's first: no system held a record of it
// when the merge read them. Unless upsert, they go in a plain INSERT, about
// half the cost of an upsert (no speculative insertion); a unique violation
// of a plain insert (IsRecordExists) means the record exists after all (a
// batch sent again after its commit): the caller sends the batch again with
// upsert. Other records go in an upsert, and records that are not Known in
// a delete; at most one statement of each kind per table. An Applier that
// cannot send a batch again passes upsert true.
func (r *Records) QueueSave(b *pgx.Batch, ws []duplex.AgreementWrite, upsert bool) ([]bool, error) {
	ss, err := saves(ws)
	if err != nil {
		return nil, err
	}
	var plain []bool
	for _, s := range ss {
		first, rest := s.split(upsert)
		if len(first.names) > 0 {
			b.Queue(r.insertSQL, r.sync, r.system, s.tbl, first.names, first.versions, first.rows, first.peers, first.kinds, first.unknown)
			plain = append(plain, true)
		}
		if len(rest.names) > 0 {
			b.Queue(r.saveSQL, r.sync, r.system, s.tbl, rest.names, rest.versions, rest.rows, rest.peers, rest.kinds, rest.unknown)
			plain = append(plain, false)
		}
		if len(s.deletes) > 0 {
			b.Queue(r.deleteSQL, r.sync, r.system, s.tbl, s.deletes)
			plain = append(plain, false)
		}
	}
	return plain, nil
}

// columns are the arguments of insertSQL or saveSQL: records of one table.
type columns struct {
	names    []string
	versions []int64
	rows     [][]byte
	peers    [][]byte
	kinds    []int16
	unknown  [][]byte
}

func (c *columns) add(s *tableSave, i int) {
	c.names = append(c.names, s.names[i])
	c.versions = append(c.versions, s.versions[i])
	c.rows = append(c.rows, s.rows[i])
	c.peers = append(c.peers, s.peers[i])
	c.kinds = append(c.kinds, s.kinds[i])
	c.unknown = append(c.unknown, s.unknown[i])
}

// split returns s's records of Version 1 (none with upsert) and the rest.
func (s *tableSave) split(upsert bool) (first, rest columns) {
	if upsert || !slices.Contains(s.versions, 1) {
		return first, s.columns
	}
	for i, v := range s.versions {
		if v == 1 {
			first.add(s, i)
		} else {
			rest.add(s, i)
		}
	}
	return first, rest
}

// IsRecordExists reports whether err is the unique violation of a plain
// insert QueueSave queued: the batch must be sent again with upsert.
func IsRecordExists(err error) bool {
	return pgutil.SQLState(err) == "23505" // unique_violation
}
