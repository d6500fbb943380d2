package pglogical

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgvalue"
)

// column describes one column of a relation as pgoutput announced it.
type column struct {
	name   string
	oid    uint32
	decode func(data []byte) (any, error)
}

// relation is the cached description of a table from a Relation message.
type relation struct {
	id       uint32
	table    duplex.Table
	identity byte // 'd' default, 'f' full, 'i' index, 'n' nothing
	columns  []column
	key      []int // indexes of primary-key columns, in key order
}

// event is what one pgoutput message meant to the stream.
type event uint8

const (
	evNone event = iota
	evBegin
	evChange
	evCommit
	evRelation
	evTruncate
	evMove // an update of the primary key: c is the delete of the old key, decoder.moved the insert of the new
)

// txState is the transaction being received.
type txState struct {
	active     bool
	commitLSN  pglogrepl.LSN // from Begin: the LSN of the commit record
	commitTime time.Time
	xid        uint32
	origin     string
	skip       bool // made under a skipped origin: drop its changes
	ordinal    int  // changes emitted so far
	endLSN     pglogrepl.LSN
	idPrefix   string // "<slot>:<commit LSN>:", the change IDs' prefix
}

// decoder turns pgoutput (protocol version 1) messages into duplex
// changes. It is not safe for concurrent use. It never panics on malformed
// input: it returns an error naming what was wrong.
type decoder struct {
	slot        string
	system      string
	skipOrigins []string
	// keyColumns returns the primary-key columns of a table, in order.
	keyColumns func(t duplex.Table) ([]string, error)

	relations map[uint32]*relation
	tx        txState
	// truncated holds the tables of the last Truncate message.
	truncated []duplex.Table
	// moved is the insert half of the last evMove.
	moved duplex.Change
	// marker, when set, is the loop guard's marker table: a transaction
	// whose changes include an insert of a row with sync == markerSync there
	// is the sync's own, and is dropped.
	marker     duplex.Table
	markerSync string
	// newBuf and oldBuf are reused for the tuples of each row message; their
	// columns point into the message, and are copied out by values.
	newBuf, oldBuf []tupleColumn
	// baseType, when set, maps a domain's type OID to its base type's.
	baseType func(oid uint32) uint32
}

func newDecoder(slot, system string, skipOrigins []string, keyColumns func(duplex.Table) ([]string, error)) *decoder {
	d := &decoder{
		slot: slot, system: system, keyColumns: keyColumns,
		relations:   make(map[uint32]*relation),
		skipOrigins: skipOrigins,
	}
	return d
}

var errShort = errors.New("message too short")

// reader reads the big-endian fields of a message with bounds checks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) need(n int) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.b) < n {
		r.err = errShort
		return false
	}
	return true
}

func (r *reader) u8() byte {
	if !r.need(1) {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if !r.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if !r.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) cstring() string {
	if r.err != nil {
		return ""
	}
	for i, c := range r.b {
		if c == 0 {
			s := string(r.b[:i])
			r.b = r.b[i+1:]
			return s
		}
	}
	r.err = errors.New("unterminated string")
	return ""
}

func (r *reader) bytes(n int) []byte {
	if !r.need(n) {
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// pgEpoch is 2000-01-01, the origin of PostgreSQL timestamps.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func pgTime(micros int64) time.Time { return pgEpoch.Add(time.Duration(micros) * time.Microsecond) }

// tupleColumn is one column of a TupleData, referencing the message buffer.
type tupleColumn struct {
	kind byte // 'n' null, 'u' unchanged toast, 't' text, 'b' binary
	data []byte
}

func (r *reader) tuple(buf []tupleColumn) []tupleColumn {
	n := int(r.u16())
	buf = buf[:0]
	for i := 0; i < n && r.err == nil; i++ {
		c := tupleColumn{kind: r.u8()}
		switch c.kind {
		case 'n', 'u':
		case 't', 'b':
			l := r.u32()
			if l > uint32(len(r.b)) {
				r.err = fmt.Errorf("column %d: length %d past the end of the message", i, l)
				break
			}
			c.data = r.bytes(int(l))
		default:
			if r.err == nil {
				r.err = fmt.Errorf("column %d: unknown tuple data kind %q", i, c.kind)
			}
		}
		buf = append(buf, c)
	}
	return buf
}

// decode handles one pgoutput message. For evChange it fills c.
func (d *decoder) decode(data []byte, c *duplex.Change) (event, error) {
	if len(data) == 0 {
		return evNone, errors.New("pglogical: empty message")
	}
	r := &reader{b: data[1:]}
	kind := data[0]
	ev, err := d.dispatch(kind, r, c)
	if err == nil && r.err != nil {
		err = r.err
	}
	if err != nil {
		return evNone, fmt.Errorf("pglogical: decode %q message: %w", kind, err)
	}
	return ev, nil
}

func (d *decoder) dispatch(kind byte, r *reader, c *duplex.Change) (event, error) {
	switch kind {
	case 'B':
		finalLSN := pglogrepl.LSN(r.u64())
		commitTime := pgTime(int64(r.u64()))
		xid := r.u32()
		if r.err != nil {
			return evNone, r.err
		}
		d.tx = txState{active: true, commitLSN: finalLSN, commitTime: commitTime, xid: xid,
			idPrefix: d.slot + ":" + finalLSN.String() + ":"}
		return evBegin, nil

	case 'C':
		r.u8() // flags
		commitLSN := pglogrepl.LSN(r.u64())
		endLSN := pglogrepl.LSN(r.u64())
		r.u64() // commit time, already known from Begin
		if r.err != nil {
			return evNone, r.err
		}
		if !d.tx.active {
			return evNone, errors.New("commit without begin")
		}
		if commitLSN != d.tx.commitLSN {
			return evNone, fmt.Errorf("commit LSN %s does not match begin's %s", commitLSN, d.tx.commitLSN)
		}
		d.tx.active = false
		d.tx.endLSN = endLSN
		return evCommit, nil

	case 'O':
		r.u64()
		name := r.cstring()
		if r.err != nil {
			return evNone, r.err
		}
		d.tx.origin = name
		d.tx.skip = d.skipsOrigin(name)
		return evNone, nil

	case 'R':
		return evRelation, d.relation(r)

	case 'Y', 'M':
		return evNone, nil // types are decoded by OID; logical messages (heartbeats) carry no rows

	case 'I', 'U', 'D':
		if !d.tx.active {
			return evNone, fmt.Errorf("row change outside a transaction")
		}
		relID := r.u32()
		rel := d.relations[relID]
		if r.err != nil {
			return evNone, r.err
		}
		if rel == nil {
			return evNone, fmt.Errorf("change for unknown relation %d", relID)
		}
		if d.tx.skip && (d.marker.Name == "" || rel.table != d.marker) {
			r.b = nil // the sync's own write: dropped undecoded
			return evNone, nil
		}
		ev, err := d.row(kind, rel, r, c)
		if err != nil || d.tx.skip {
			return evNone, err
		}
		return ev, nil

	case 'T':
		if !d.tx.active {
			return evNone, fmt.Errorf("truncate outside a transaction")
		}
		n := r.u32()
		r.u8() // options
		if r.err != nil {
			return evNone, r.err
		}
		if int64(n)*4 > int64(len(r.b)) {
			return evNone, fmt.Errorf("truncate of %d relations past the end of the message", n)
		}
		d.truncated = d.truncated[:0]
		for range n {
			id := r.u32()
			if rel := d.relations[id]; rel != nil {
				d.truncated = append(d.truncated, rel.table)
			} else {
				return evNone, fmt.Errorf("truncate of unknown relation %d", id)
			}
		}
		if d.tx.skip {
			return evNone, nil
		}
		return evTruncate, nil

	case 'S', 'E', 'c', 'A':
		return evNone, errors.New("streamed transactions are not enabled; protocol v1 sends transactions after commit")
	}
	return evNone, fmt.Errorf("unknown message type %q", kind)
}

// skipsOrigin reports whether transactions of origin are the sync's own.
func (d *decoder) skipsOrigin(origin string) bool {
	for _, o := range d.skipOrigins {
		if origin == o || strings.HasPrefix(origin, o+":") {
			return true
		}
	}
	return false
}

func (d *decoder) relation(r *reader) error {
	id := r.u32()
	schema := r.cstring()
	name := r.cstring()
	identity := r.u8()
	n := int(r.u16())
	if r.err != nil {
		return r.err
	}
	if n > len(r.b) {
		return fmt.Errorf("relation %s.%s: %d columns past the end of the message", schema, name, n)
	}
	rel := &relation{id: id, table: duplex.Table{Schema: schema, Name: name}, identity: identity}
	byName := make(map[string]int, n)
	for i := 0; i < n && r.err == nil; i++ {
		r.u8() // flags: with REPLICA IDENTITY FULL every column is flagged, so keys come from the catalog
		col := column{name: r.cstring(), oid: r.u32()}
		r.u32() // type modifier
		decodeAs := col.oid
		if d.baseType != nil {
			decodeAs = d.baseType(col.oid) // a domain decodes like its base type, as the applier does
		}
		col.decode = pgvalue.Decoder(decodeAs)
		byName[col.name] = i
		rel.columns = append(rel.columns, col)
	}
	if r.err != nil {
		return r.err
	}
	keys, err := d.keyColumns(rel.table)
	if err != nil {
		return fmt.Errorf("relation %s: %w", rel.table, err)
	}
	if len(keys) == 0 {
		return fmt.Errorf("relation %s has no primary key", rel.table)
	}
	for _, k := range keys {
		i, ok := byName[k]
		if !ok {
			return fmt.Errorf("relation %s: primary-key column %q not in the replicated columns", rel.table, k)
		}
		rel.key = append(rel.key, i)
	}
	d.relations[id] = rel
	return nil
}

// max2 returns whichever of the buffer and the tuple read into it has the
// larger capacity, to keep for the next message.
func max2(buf, t []tupleColumn) []tupleColumn {
	if cap(t) > cap(buf) {
		return t[:0]
	}
	return buf
}

func (d *decoder) row(kind byte, rel *relation, r *reader, c *duplex.Change) (event, error) {
	if d.marker.Name != "" && rel.table == d.marker {
		return d.markerRow(kind, rel, r)
	}
	*c = duplex.Change{
		Source: d.system, Table: rel.table, CommitTime: d.tx.commitTime, Origin: d.tx.origin,
	}
	// hasNew and hasOld say which tuples the message carries (a tuple read
	// into a reused buffer may be nil when it has no columns).
	var newT, oldT []tupleColumn
	var hasNew, hasOld bool
	oldKind := byte(0)
	switch kind {
	case 'I':
		c.Op = duplex.OpInsert
		if t := r.u8(); t != 'N' && r.err == nil {
			return evNone, fmt.Errorf("insert into %s: tuple marker %q, want 'N'", rel.table, t)
		}
		newT, hasNew = r.tuple(d.newBuf), true
	case 'U':
		c.Op = duplex.OpUpdate
		t := r.u8()
		if t == 'K' || t == 'O' {
			oldKind = t
			oldT, hasOld = r.tuple(d.oldBuf), true
			t = r.u8()
		}
		if t != 'N' && r.err == nil {
			return evNone, fmt.Errorf("update of %s: tuple marker %q, want 'N'", rel.table, t)
		}
		newT, hasNew = r.tuple(d.newBuf), true
	case 'D':
		c.Op = duplex.OpDelete
		oldKind = r.u8()
		if oldKind != 'K' && oldKind != 'O' && r.err == nil {
			return evNone, fmt.Errorf("delete from %s: tuple marker %q, want 'K' or 'O'", rel.table, oldKind)
		}
		oldT, hasOld = r.tuple(d.oldBuf), true
	}
	d.newBuf, d.oldBuf = max2(d.newBuf, newT), max2(d.oldBuf, oldT)
	if r.err != nil {
		return evNone, r.err
	}
	if d.tx.skip {
		return evNone, nil
	}
	var err error
	if hasNew {
		if c.After, c.Unchanged, err = d.values(rel, newT); err != nil {
			return evNone, err
		}
	}
	var old duplex.Values
	if hasOld {
		var unchanged []string
		old, unchanged, err = d.values(rel, oldT)
		if err != nil {
			return evNone, err
		}
		if oldKind == 'O' && len(unchanged) == 0 {
			c.Before = old
		}
		if c.Op == duplex.OpDelete || c.After == nil {
			if c.Key, err = keyOf(rel, old); err != nil {
				return evNone, err
			}
		}
		if c.Op == duplex.OpUpdate && oldKind == 'K' {
			// Only the old key was sent: the key changed. Without a full before
			// image there is nothing to compare; the new key is the row's key.
			c.Before = nil
		}
	}
	if c.Op != duplex.OpDelete {
		if c.Key, err = keyOf(rel, c.After); err != nil {
			return evNone, err
		}
	}
	if c.Op == duplex.OpUpdate && hasOld {
		if moved, err := d.move(rel, c, old); moved || err != nil {
			return evMove, err
		}
	}
	c.ID = d.tx.idPrefix + strconv.Itoa(d.tx.ordinal)
	d.tx.ordinal++
	return evChange, nil
}

// move turns an update whose old tuple has another key (an UPDATE of the
// primary key, with REPLICA IDENTITY DEFAULT or FULL) into a move: c
// becomes the delete of the old key (with the old row as its before image
// when the whole old row was sent), d.moved the insert of the new key, with
// consecutive ordinals. It reports false for an update that keeps its key.
func (d *decoder) move(rel *relation, c *duplex.Change, old duplex.Values) (bool, error) {
	oldKey, err := keyOf(rel, old)
	if err != nil {
		return false, err
	}
	if oldKey.String() == c.Key.String() {
		return false, nil
	}
	d.moved = duplex.Change{
		Source: c.Source, Table: c.Table, Key: c.Key, Op: duplex.OpInsert, After: c.After,
		Unchanged: c.Unchanged, CommitTime: c.CommitTime, Origin: c.Origin, MovedFrom: oldKey,
	}
	*c = duplex.Change{
		Source: c.Source, Table: c.Table, Key: oldKey, Op: duplex.OpDelete, Before: c.Before,
		CommitTime: c.CommitTime, Origin: c.Origin, MovedTo: c.Key,
	}
	c.ID = d.tx.idPrefix + strconv.Itoa(d.tx.ordinal)
	d.moved.ID = d.tx.idPrefix + strconv.Itoa(d.tx.ordinal+1)
	d.tx.ordinal += 2
	return true, nil
}

// markerRow handles a change to the marker table: it is never delivered, and
// an insert for this sync marks the whole transaction as the sync's own.
// The applier writes the marker first, so the transaction's earlier changes
// are none.
func (d *decoder) markerRow(kind byte, rel *relation, r *reader) (event, error) {
	if kind != 'I' {
		return evNone, nil
	}
	if t := r.u8(); t != 'N' && r.err == nil {
		return evNone, fmt.Errorf("insert into %s: tuple marker %q, want 'N'", rel.table, t)
	}
	tuple := r.tuple(d.newBuf)
	d.newBuf = max2(d.newBuf, tuple)
	if r.err != nil {
		return evNone, r.err
	}
	row, _, err := d.values(rel, tuple)
	if err != nil {
		return evNone, err
	}
	if row["sync"] == d.markerSync {
		if d.tx.ordinal > 0 {
			return evNone, fmt.Errorf("marker row for sync %q after %d changes of the transaction: the applier must write it first", d.markerSync, d.tx.ordinal)
		}
		d.tx.skip = true
	}
	return evNone, nil
}

func keyOf(rel *relation, row duplex.Values) (duplex.Key, error) {
	k := make(duplex.Key, len(rel.key))
	for i, ci := range rel.key {
		name := rel.columns[ci].name
		v, ok := row[name]
		if !ok || v == nil {
			return nil, fmt.Errorf("%s: primary-key column %s missing or NULL", rel.table, name)
		}
		k[i] = duplex.Column{Name: name, Value: v}
	}
	return k, nil
}

func (d *decoder) values(rel *relation, t []tupleColumn) (duplex.Values, []string, error) {
	if len(t) != len(rel.columns) {
		return nil, nil, fmt.Errorf("%s: tuple has %d columns, relation has %d", rel.table, len(t), len(rel.columns))
	}
	row := make(duplex.Values, len(t))
	var unchanged []string
	for i, tc := range t {
		col := &rel.columns[i]
		switch tc.kind {
		case 'n':
			row[col.name] = nil
		case 'u':
			unchanged = append(unchanged, col.name)
		case 't':
			v, err := col.decode(tc.data)
			if err != nil {
				return nil, nil, fmt.Errorf("%s column %s (type oid %d): %w", rel.table, col.name, col.oid, err)
			}
			row[col.name] = v
		case 'b':
			return nil, nil, fmt.Errorf("%s column %s: binary tuple data is not requested", rel.table, col.name)
		}
	}
	return row, unchanged, nil
}
