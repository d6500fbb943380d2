package pglogical

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// This file holds the decoder's unit tests, FuzzDecode and BenchmarkDecode.
// They build pgoutput (protocol v1) messages by hand with the helpers below;
// testdata/fuzz/FuzzDecode also holds messages captured from a real stream
// (see TestCaptureFuzzCorpus in corpus_test.go).

// wb builds a pgoutput message.
type wb []byte

func (b wb) u8(v byte) wb    { return append(b, v) }
func (b wb) u16(v uint16) wb { return binary.BigEndian.AppendUint16(b, v) }
func (b wb) u32(v uint32) wb { return binary.BigEndian.AppendUint32(b, v) }
func (b wb) u64(v uint64) wb { return binary.BigEndian.AppendUint64(b, v) }
func (b wb) str(s string) wb { return append(append(b, s...), 0) }

// tcol is one column of a TupleData: kind 'n', 'u', 't' (or 'b') and data.
type tcol struct {
	kind byte
	data string
}

func txt(s string) tcol { return tcol{kind: 't', data: s} }

var (
	null      = tcol{kind: 'n'}
	unchanged = tcol{kind: 'u'}
)

func (b wb) tuple(cols []tcol) wb {
	b = b.u16(uint16(len(cols)))
	for _, c := range cols {
		b = b.u8(c.kind)
		if c.kind == 't' || c.kind == 'b' {
			b = b.u32(uint32(len(c.data)))
			b = append(b, c.data...)
		}
	}
	return b
}

func pgMicros(t time.Time) uint64 { return uint64(t.Sub(pgEpoch) / time.Microsecond) }

func msgBegin(final pglogrepl.LSN, at time.Time, xid uint32) []byte {
	return wb{'B'}.u64(uint64(final)).u64(pgMicros(at)).u32(xid)
}

func msgCommit(commit, end pglogrepl.LSN, at time.Time) []byte {
	return wb{'C'}.u8(0).u64(uint64(commit)).u64(uint64(end)).u64(pgMicros(at))
}

func msgOrigin(lsn pglogrepl.LSN, name string) []byte {
	return wb{'O'}.u64(uint64(lsn)).str(name)
}

// relCol is a column of a Relation message.
type relCol struct {
	name string
	oid  uint32
}

func msgRelation(id uint32, schema, name string, identity byte, cols []relCol) []byte {
	b := wb{'R'}.u32(id).str(schema).str(name).u8(identity).u16(uint16(len(cols)))
	for _, c := range cols {
		b = b.u8(1).str(c.name).u32(c.oid).u32(math.MaxUint32) // flags, name, type, typmod -1
	}
	return b
}

func msgType(oid uint32, schema, name string) []byte {
	return wb{'Y'}.u32(oid).str(schema).str(name)
}

func msgInsert(rel uint32, cols []tcol) []byte {
	return wb{'I'}.u32(rel).u8('N').tuple(cols)
}

// msgUpdate builds an Update; oldKind is 0 (no old tuple), 'K' or 'O'.
func msgUpdate(rel uint32, oldKind byte, old, cols []tcol) []byte {
	b := wb{'U'}.u32(rel)
	if oldKind != 0 {
		b = b.u8(oldKind).tuple(old)
	}
	return b.u8('N').tuple(cols)
}

func msgDelete(rel uint32, kind byte, old []tcol) []byte {
	return wb{'D'}.u32(rel).u8(kind).tuple(old)
}

func msgTruncate(options byte, rels ...uint32) []byte {
	b := wb{'T'}.u32(uint32(len(rels))).u8(options)
	for _, r := range rels {
		b = b.u32(r)
	}
	return b
}

func msgMessage(lsn pglogrepl.LSN, prefix, content string) []byte {
	b := wb{'M'}.u8(0).u64(uint64(lsn)).str(prefix).u32(uint32(len(content)))
	return append(b, content...)
}

// fuzzRelID and fuzzColumns describe the relation FuzzDecode primes the
// decoder with. Its columns mirror the table of TestCaptureFuzzCorpus, so
// captured row messages (with their relation ID rewritten to fuzzRelID)
// decode against it.
const fuzzRelID = 16385

var fuzzColumns = []relCol{
	{"id", 20}, {"name", 25}, {"n", 20}, {"note", 25},
	{"f8", 701}, {"f4", 700}, {"ok", 16}, {"data", 17},
	{"ts", 1184}, {"tsn", 1114}, {"d", 1082}, {"j", 114},
	{"jb", 3802}, {"tags", 1009}, {"num", 1700}, {"u", 2950},
	{"i2", 21}, {"i4", 23}, {"vc", 1043}, {"mood", 90000},
}

// fuzzRow returns a valid tuple for fuzzColumns with id.
func fuzzRow(id string) []tcol {
	return []tcol{
		txt(id), txt("name"), txt("7"), null,
		txt("1.5"), txt("-0"), txt("t"), txt(`\x00ff`),
		txt("2024-02-29 12:34:56.789+01"), txt("2024-02-29 12:34:56"), txt("0044-03-15 BC"), txt(`{"a": 1, "a": 2}`),
		txt(`{"b": [1, 2]}`), txt(`{"a,b",c,NULL}`), txt("NaN"), txt("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
		txt("-32768"), txt("2147483647"), txt("ñ"), txt("happy"),
	}
}

func keyID(duplex.Table) ([]string, error) { return []string{"id"}, nil }

func newTestDecoder() *decoder {
	return newDecoder("slot", "a", []string{"duplex_s"}, keyID)
}

var (
	t0     = time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	items  = duplex.Table{Schema: "public", Name: "items"}
	itemsR = msgRelation(1, "public", "items", 'f', []relCol{{"id", 20}, {"name", 25}, {"n", 20}, {"note", 25}})
)

// feed decodes msgs in order, failing on any error, and returns the events
// and the changes of evChange events.
func feed(t *testing.T, d *decoder, msgs ...[]byte) ([]event, []duplex.Change) {
	t.Helper()
	var evs []event
	var changes []duplex.Change
	for i, m := range msgs {
		var c duplex.Change
		ev, err := d.decode(m, &c)
		require.NoError(t, err, "message %d (%q)", i, m[0])
		evs = append(evs, ev)
		switch ev {
		case evChange:
			changes = append(changes, c)
		case evMove:
			changes = append(changes, c, d.moved)
		}
	}
	return evs, changes
}

func TestDecodeTransaction(t *testing.T) {
	t.Parallel()
	d := newTestDecoder()
	evs, cs := feed(t, d,
		itemsR,
		msgBegin(0x100, t0, 7),
		msgInsert(1, []tcol{txt("1"), txt("one"), txt("10"), null}),
		msgUpdate(1, 'O', []tcol{txt("1"), txt("one"), txt("10"), null}, []tcol{txt("1"), txt("uno"), txt("10"), unchanged}),
		msgDelete(1, 'O', []tcol{txt("1"), txt("uno"), txt("10"), null}),
		msgCommit(0x100, 0x180, t0),
	)
	require.Equal(t, []event{evRelation, evBegin, evChange, evChange, evChange, evCommit}, evs)
	require.Len(t, cs, 3)
	for i, c := range cs {
		require.Equal(t, "slot:0/100:"+string(rune('0'+i)), c.ID)
		require.Equal(t, "a", c.Source)
		require.Equal(t, items, c.Table)
		require.True(t, c.CommitTime.Equal(t0), "commit time %v", c.CommitTime)
		require.Equal(t, duplex.Key{{Name: "id", Value: int64(1)}}, c.Key)
	}
	require.Equal(t, duplex.OpInsert, cs[0].Op)
	require.Equal(t, duplex.Values{"id": int64(1), "name": "one", "n": int64(10), "note": nil}, cs[0].After)
	require.Nil(t, cs[0].Before)

	require.Equal(t, duplex.OpUpdate, cs[1].Op)
	require.Equal(t, duplex.Values{"id": int64(1), "name": "one", "n": int64(10), "note": nil}, cs[1].Before)
	require.Equal(t, duplex.Values{"id": int64(1), "name": "uno", "n": int64(10)}, cs[1].After, "an unchanged TOAST column is missing, not NULL")
	require.Equal(t, []string{"note"}, cs[1].Unchanged)

	require.Equal(t, duplex.OpDelete, cs[2].Op)
	require.Nil(t, cs[2].After)
	require.Equal(t, duplex.Values{"id": int64(1), "name": "uno", "n": int64(10), "note": nil}, cs[2].Before)

	require.False(t, d.tx.active)
	require.Equal(t, pglogrepl.LSN(0x180), d.tx.endLSN)
	require.Equal(t, 3, d.tx.ordinal)
}

func TestDecodeKeyOnlyImages(t *testing.T) {
	t.Parallel()
	d := newTestDecoder()
	_, cs := feed(t, d,
		msgRelation(1, "public", "items", 'd', []relCol{{"id", 20}, {"name", 25}, {"n", 20}, {"note", 25}}),
		msgBegin(0x200, t0, 8),
		// REPLICA IDENTITY DEFAULT: an update without key change has no old tuple.
		msgUpdate(1, 0, nil, []tcol{txt("2"), txt("b"), txt("1"), null}),
		// An update that changes the key sends the old key ('K').
		msgUpdate(1, 'K', []tcol{txt("2"), null, null, null}, []tcol{txt("3"), txt("b"), txt("1"), null}),
		// A delete sends the old key only.
		msgDelete(1, 'K', []tcol{txt("3"), null, null, null}),
		msgCommit(0x200, 0x280, t0),
	)
	require.Len(t, cs, 4)
	id := func(n int64) duplex.Key { return duplex.Key{{Name: "id", Value: n}} }
	require.Nil(t, cs[0].Before)
	require.Equal(t, id(2), cs[0].Key)
	// The key change is a move: the old key's delete, then the new key's insert.
	require.Equal(t, duplex.OpDelete, cs[1].Op)
	require.Equal(t, id(2), cs[1].Key)
	require.Equal(t, id(3), cs[1].MovedTo)
	require.Nil(t, cs[1].Before, "a key-only old tuple is not a before image")
	require.Equal(t, duplex.OpInsert, cs[2].Op)
	require.Equal(t, id(3), cs[2].Key)
	require.Equal(t, id(2), cs[2].MovedFrom)
	require.Equal(t, duplex.Values{"id": int64(3), "name": "b", "n": int64(1), "note": nil}, cs[2].After)
	require.Equal(t, []string{"slot:0/200:1", "slot:0/200:2"}, []string{cs[1].ID, cs[2].ID}, "consecutive ordinals")
	require.Nil(t, cs[3].Before, "a key-only old tuple is not a before image")
	require.Equal(t, id(3), cs[3].Key)
	require.Equal(t, "slot:0/200:3", cs[3].ID)
}

// TestDecodeKeyUpdateWithFullIdentity: under REPLICA IDENTITY FULL an
// update of the key sends the whole old row ('O'); it is a move too, the
// delete carrying the old row as its before image.
func TestDecodeKeyUpdateWithFullIdentity(t *testing.T) {
	t.Parallel()
	d := newTestDecoder()
	_, cs := feed(t, d,
		itemsR,
		msgBegin(0x400, t0, 8),
		msgUpdate(1, 'O', []tcol{txt("1"), txt("a"), txt("5"), null}, []tcol{txt("100"), txt("a"), txt("5"), null}),
		msgUpdate(1, 'O', []tcol{txt("100"), txt("a"), txt("5"), null}, []tcol{txt("100"), txt("b"), txt("5"), null}),
		msgCommit(0x400, 0x480, t0),
	)
	require.Len(t, cs, 3)
	old := duplex.Values{"id": int64(1), "name": "a", "n": int64(5), "note": nil}
	require.Equal(t, duplex.OpDelete, cs[0].Op)
	require.Equal(t, duplex.Key{{Name: "id", Value: int64(1)}}, cs[0].Key)
	require.Equal(t, old, cs[0].Before)
	require.Equal(t, duplex.Key{{Name: "id", Value: int64(100)}}, cs[0].MovedTo)
	require.Equal(t, duplex.OpInsert, cs[1].Op)
	require.Equal(t, duplex.Key{{Name: "id", Value: int64(100)}}, cs[1].Key)
	require.Equal(t, duplex.Key{{Name: "id", Value: int64(1)}}, cs[1].MovedFrom)
	require.Equal(t, duplex.OpUpdate, cs[2].Op, "an update keeping its key is an update")
	require.Nil(t, cs[2].MovedTo)
	require.Equal(t, "slot:0/400:2", cs[2].ID)
}

func TestDecodeTruncateAndOrigins(t *testing.T) {
	t.Parallel()
	d := newTestDecoder()
	feed(t, d, itemsR, msgRelation(2, "s", "other", 'f', []relCol{{"id", 20}}), msgBegin(0x300, t0, 9))
	ev, _ := feed(t, d, msgTruncate(1, 1, 2))
	require.Equal(t, []event{evTruncate}, ev)
	require.Equal(t, []duplex.Table{items, {Schema: "s", Name: "other"}}, d.truncated)
	feed(t, d, msgCommit(0x300, 0x380, t0))

	// A transaction of a skipped origin (or a sub-origin "<name>:x")
	// produces no changes; other origins are reported.
	for origin, skip := range map[string]bool{"duplex_s": true, "duplex_s:a": true, "duplex_s_a": false, "duplex_sx": false, "other": false} {
		_, cs := feed(t, d,
			msgBegin(0x400, t0, 10),
			msgOrigin(0x3F0, origin),
			msgInsert(1, []tcol{txt("1"), txt("x"), txt("1"), null}),
			msgCommit(0x400, 0x480, t0),
		)
		if skip {
			require.Empty(t, cs, origin)
			require.Equal(t, 0, d.tx.ordinal, origin)
		} else {
			require.Len(t, cs, 1, origin)
			require.Equal(t, origin, cs[0].Origin)
		}
	}
	// Types and logical messages are accepted and ignored.
	ev, _ = feed(t, d, msgType(90000, "public", "mood"), msgMessage(0x500, "duplex_heartbeat", ""))
	require.Equal(t, []event{evNone, evNone}, ev)
}

func TestDecodeValues(t *testing.T) {
	t.Parallel()
	d := newTestDecoder()
	cols := make([]relCol, len(fuzzColumns))
	copy(cols, fuzzColumns)
	_, cs := feed(t, d, msgRelation(fuzzRelID, "public", "t", 'f', cols), msgBegin(0x10, t0, 1), msgInsert(fuzzRelID, fuzzRow("42")))
	require.Len(t, cs, 1)
	v := cs[0].After
	require.Equal(t, int64(42), v["id"])
	require.Equal(t, "name", v["name"])
	require.Contains(t, v, "note")
	require.Nil(t, v["note"])
	require.Equal(t, 1.5, v["f8"])
	require.True(t, math.Signbit(v["f4"].(float64)) && v["f4"].(float64) == 0, "-0 keeps its sign")
	require.Equal(t, true, v["ok"])
	require.Equal(t, []byte{0, 0xff}, v["data"])
	require.True(t, time.Date(2024, 2, 29, 11, 34, 56, 789000000, time.UTC).Equal(v["ts"].(time.Time)), "%v", v["ts"])
	require.Equal(t, time.Date(2024, 2, 29, 12, 34, 56, 0, time.UTC), v["tsn"])
	require.Equal(t, time.Date(-43, 3, 15, 0, 0, 0, 0, time.UTC), v["d"])
	require.Equal(t, json.RawMessage(`{"a": 1, "a": 2}`), v["j"])
	require.Equal(t, duplex.JSONB(`{"b": [1, 2]}`), v["jb"])
	require.Equal(t, `{"a,b",c,NULL}`, v["tags"], "a text array with a NULL element keeps its text form")
	require.Equal(t, "NaN", v["num"])
	require.Equal(t, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", v["u"])
	require.Equal(t, int64(-32768), v["i2"])
	require.Equal(t, int64(2147483647), v["i4"])
	require.Equal(t, "ñ", v["vc"])
	require.Equal(t, "happy", v["mood"])
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	row := []tcol{txt("1"), txt("x"), txt("1"), null}
	for name, tc := range map[string]struct {
		msgs [][]byte
		want string
	}{
		"empty":              {[][]byte{{}}, "empty message"},
		"unknown type":       {[][]byte{{'Z'}}, "unknown message type"},
		"commit w/o begin":   {[][]byte{msgCommit(1, 2, t0)}, "commit without begin"},
		"commit LSN":         {[][]byte{msgBegin(1, t0, 1), msgCommit(2, 3, t0)}, "does not match"},
		"row outside tx":     {[][]byte{itemsR, msgInsert(1, row)}, "outside a transaction"},
		"truncate outside":   {[][]byte{itemsR, msgTruncate(0, 1)}, "outside a transaction"},
		"unknown relation":   {[][]byte{msgBegin(1, t0, 1), msgInsert(9, row)}, "unknown relation 9"},
		"truncate unknown":   {[][]byte{msgBegin(1, t0, 1), msgTruncate(0, 9)}, "unknown relation 9"},
		"truncate count":     {[][]byte{msgBegin(1, t0, 1), wb{'T'}.u32(1 << 30).u8(0)}, "past the end"},
		"column count":       {[][]byte{itemsR, msgBegin(1, t0, 1), msgInsert(1, row[:3])}, "tuple has 3 columns, relation has 4"},
		"empty old tuple":    {[][]byte{itemsR, msgBegin(1, t0, 1), msgDelete(1, 'O', nil)}, "tuple has 0 columns, relation has 4"},
		"empty new tuple":    {[][]byte{itemsR, msgBegin(1, t0, 1), msgInsert(1, nil)}, "tuple has 0 columns, relation has 4"},
		"bad int":            {[][]byte{itemsR, msgBegin(1, t0, 1), msgInsert(1, []tcol{txt("x"), txt("x"), txt("1"), null})}, "column id"},
		"null key":           {[][]byte{itemsR, msgBegin(1, t0, 1), msgInsert(1, []tcol{null, txt("x"), txt("1"), null})}, "primary-key column id missing or NULL"},
		"binary":             {[][]byte{itemsR, msgBegin(1, t0, 1), msgInsert(1, []tcol{{'b', "1"}, txt("x"), txt("1"), null})}, "binary"},
		"tuple kind":         {[][]byte{itemsR, msgBegin(1, t0, 1), msgInsert(1, []tcol{{'q', ""}, txt("x"), txt("1"), null})}, "unknown tuple data kind"},
		"insert marker":      {[][]byte{itemsR, msgBegin(1, t0, 1), wb{'I'}.u32(1).u8('X').tuple(row)}, "want 'N'"},
		"delete marker":      {[][]byte{itemsR, msgBegin(1, t0, 1), msgDelete(1, 'N', row)}, "want 'K' or 'O'"},
		"column length":      {[][]byte{itemsR, msgBegin(1, t0, 1), wb{'I'}.u32(1).u8('N').u16(1).u8('t').u32(100).str("x")}, "past the end"},
		"relation columns":   {[][]byte{wb{'R'}.u32(1).str("s").str("t").u8('f').u16(500)}, "past the end"},
		"missing key column": {[][]byte{msgRelation(1, "s", "t", 'f', []relCol{{"x", 20}})}, `primary-key column "id"`},
		"unterminated":       {[][]byte{wb{'O'}.u64(1).u8('a')}, "unterminated"},
		"streamed":           {[][]byte{{'S'}}, "streamed transactions"},
		"short begin":        {[][]byte{msgBegin(1, t0, 1)[:10]}, "too short"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := newTestDecoder()
			var err error
			for _, m := range tc.msgs {
				var c duplex.Change
				if _, err = d.decode(m, &c); err != nil {
					break
				}
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestDecodeNoKeys(t *testing.T) {
	t.Parallel()
	d := newDecoder("slot", "a", nil, func(duplex.Table) ([]string, error) { return nil, nil })
	var c duplex.Change
	_, err := d.decode(itemsR, &c)
	require.ErrorContains(t, err, "no primary key")
	d = newDecoder("slot", "a", nil, func(duplex.Table) ([]string, error) { return nil, errors.New("boom") })
	_, err = d.decode(itemsR, &c)
	require.ErrorContains(t, err, "boom")
}

// validMessages returns one valid message of every kind, each decodable
// after fuzzPrime.
func validMessages() [][]byte {
	row := fuzzRow("1")
	old := fuzzRow("1")
	newRow := fuzzRow("1")
	newRow[3] = unchanged
	key := make([]tcol, len(row))
	for i := range key {
		key[i] = null
	}
	key[0] = txt("1")
	return [][]byte{
		msgBegin(0x2000, t0, 11),
		msgCommit(0x1000, 0x1100, t0),
		msgOrigin(0x900, "duplex_s"),
		msgOrigin(0x900, "someone"),
		msgRelation(fuzzRelID, "public", "t", 'f', fuzzColumns),
		msgRelation(fuzzRelID+1, "public", "u", 'd', []relCol{{"id", 1700}}),
		msgType(90000, "public", "mood"),
		msgInsert(fuzzRelID, row),
		msgUpdate(fuzzRelID, 'O', old, newRow),
		msgUpdate(fuzzRelID, 'K', key, row),
		msgUpdate(fuzzRelID, 0, nil, row),
		msgDelete(fuzzRelID, 'O', old),
		msgDelete(fuzzRelID, 'K', key),
		msgTruncate(3, fuzzRelID),
		msgMessage(0x1000, "duplex_heartbeat", "hi"),
		msgInsert(markerRelID, []tcol{txt("1"), txt("s"), txt("a")}),
		msgInsert(markerRelID, []tcol{txt("1"), txt("other"), txt("a")}),
		msgDelete(markerRelID, 'O', []tcol{txt("1"), txt("s"), txt("a")}),
	}
}

func TestDecodeMarker(t *testing.T) {
	t.Parallel()
	d := fuzzPrime(t)
	// A marker of this sync first: the transaction is the sync's own.
	_, cs := feed(t, d, msgInsert(markerRelID, []tcol{txt("1"), txt("s"), txt("a")}), msgInsert(fuzzRelID, fuzzRow("1")),
		msgDelete(markerRelID, 'O', []tcol{txt("1"), txt("s"), txt("a")}), msgCommit(0x1000, 0x1100, t0))
	require.Empty(t, cs)
	// Another sync's marker: delivered, the marker rows never are.
	_, cs = feed(t, d, msgBegin(0x2000, t0, 11), msgInsert(markerRelID, []tcol{txt("2"), txt("other"), txt("a")}),
		msgInsert(fuzzRelID, fuzzRow("2")), msgCommit(0x2000, 0x2100, t0))
	require.Len(t, cs, 1)
	require.Equal(t, "t", cs[0].Table.Name)
	// A marker after changes of the transaction is an error.
	feed(t, d, msgBegin(0x3000, t0, 12), msgInsert(fuzzRelID, fuzzRow("3")))
	var c duplex.Change
	_, err := d.decode(msgInsert(markerRelID, []tcol{txt("3"), txt("s"), txt("a")}), &c)
	require.ErrorContains(t, err, "after 1 changes")
}

// markerRelID is the relation of the loop guard's marker table in FuzzDecode.
const markerRelID = fuzzRelID + 10

var markerRel = msgRelation(markerRelID, "duplex", "tx_marker", 'f', []relCol{{"id", 20}, {"sync", 25}, {"target", 25}})

// fuzzPrime returns a decoder that has seen fuzzColumns's Relation, the
// marker table's, and a Begin, so row messages decode.
func fuzzPrime(tb testing.TB) *decoder {
	d := newTestDecoder()
	d.marker, d.markerSync = duplex.Table{Schema: "duplex", Name: "tx_marker"}, "s"
	var c duplex.Change
	for _, m := range [][]byte{msgRelation(fuzzRelID, "public", "t", 'f', fuzzColumns), markerRel, msgBegin(0x1000, t0, 10)} {
		if _, err := d.decode(m, &c); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}

func TestDecodePrefixesNeverPanic(t *testing.T) {
	t.Parallel()
	// Every proper prefix of a valid message is malformed: decoding it must
	// return an error (never panic), except where the prefix is itself a
	// complete message (a Begin's fixed part, or a tuple cut after a column).
	for _, m := range validMessages() {
		d := fuzzPrime(t)
		var c duplex.Change
		_, err := d.decode(m, &c)
		require.NoError(t, err, "%q", m[0])
		for n := range len(m) {
			d := fuzzPrime(t)
			require.NotPanics(t, func() { _, _ = d.decode(m[:n], &c) }, "%q cut at %d", m[0], n)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range validMessages() {
		f.Add(m)
	}
	follow := msgInsert(fuzzRelID, fuzzRow("2"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := fuzzPrime(t)
		var c duplex.Change
		ev, err := d.decode(data, &c)
		if err == nil && ev == evChange {
			if c.ID == "" || len(c.Key) == 0 || c.Table.Name == "" {
				t.Fatalf("change without ID, key or table: %+v", c)
			}
			if c.Op != duplex.OpDelete && c.After == nil {
				t.Fatalf("%v without After", c.Op)
			}
		}
		if err != nil && !strings.HasPrefix(err.Error(), "pglogical: ") {
			t.Fatalf("error not prefixed: %v", err)
		}
		// Whatever data did, the decoder stays usable: a following message
		// decodes or fails cleanly.
		_, _ = d.decode(follow, &c)
		_, _ = d.decode(data, &c)
	})
}

// BenchmarkDecode measures decoding of one REPLICA IDENTITY FULL update of
// a 6-column row (the shape of the throughput workload), without I/O.
func BenchmarkDecode(b *testing.B) {
	d := newTestDecoder()
	cols := []relCol{{"id", 20}, {"a", 20}, {"b", 25}, {"c", 701}, {"d", 1184}, {"e", 16}}
	row := []tcol{txt("123456"), txt("42"), txt("some text value"), txt("3.14159"), txt("2024-05-06 07:08:09.123456+00"), txt("t")}
	upd := msgUpdate(1, 'O', row, row)
	var c duplex.Change
	for _, m := range [][]byte{msgRelation(1, "public", "w", 'f', cols), msgBegin(0x10, t0, 1)} {
		if _, err := d.decode(m, &c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(upd)))
	for b.Loop() {
		if _, err := d.decode(upd, &c); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCorpusDecodes checks that the captured row messages of the fuzz
// corpus decode against the fuzz relation: the seeds exercise the value
// decoders, not just the error paths.
func TestCorpusDecodes(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecode", "captured-*"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	kinds := map[byte]int{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		require.Len(t, lines, 2, f)
		require.Equal(t, "go test fuzz v1", lines[0])
		lit := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
		s, err := strconv.Unquote(lit)
		require.NoError(t, err, f)
		m := []byte(s)
		kinds[m[0]]++
		if !strings.ContainsRune("IUDTRYOM", rune(m[0])) {
			continue // Begin and Commit carry LSNs of the captured stream
		}
		var c duplex.Change
		ev, err := fuzzPrime(t).decode(m, &c)
		require.NoError(t, err, f)
		if m[0] == 'I' || m[0] == 'U' || m[0] == 'D' {
			require.Contains(t, []event{evChange, evMove}, ev, f)
			require.Equal(t, int64(1) <= c.Key[0].Value.(int64), true)
		}
	}
	for _, k := range "BCIUDTROYM" {
		require.NotZero(t, kinds[byte(k)], "no captured %q message", k)
	}
}
