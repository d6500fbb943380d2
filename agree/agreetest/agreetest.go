// Package agreetest is the conformance suite of [duplex.AgreementStore]
// implementations and of the records an [duplex.AgreementKeeper] keeps:
// every store runs [Run], every keeper runs it through [KeeperStore].
package agreetest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/suite"
)

// Run runs the conformance suite, each case a parallel subtest of t on a
// store from open, which must be empty and see no other store's rows.
func Run(t *testing.T, open func(t *testing.T) duplex.AgreementStore) {
	t.Helper()
	suite.Run(t, cases, open)
}

type store = duplex.AgreementStore

var (
	customers = duplex.Table{Schema: "public", Name: "customers"}
	orders    = duplex.Table{Schema: "public", Name: "orders"}
	other     = duplex.Table{Schema: "other", Name: "customers"}
)

func id(i int) duplex.Key { return duplex.Key{{Name: "id", Value: int64(i)}} }

func known(row duplex.Values) duplex.Agreement { return duplex.Agreement{Known: true, Row: row} }

// RequireAgreement requires got to be want: the same flags, the same row
// (nil or not), and field by field values that duplex.Equal calls equal,
// of the same Go type (fmt %T), with nil slices nil, the sign of zero
// floats and the offset of times kept.
func RequireAgreement(t testing.TB, want, got duplex.Agreement, what string) {
	t.Helper()
	require.Equal(t, want.Known, got.Known, "%s: Known", what)
	require.Equal(t, want.Version, got.Version, "%s: Version", what)
	require.Equal(t, len(want.Unknown), len(got.Unknown), "%s: Unknown %v", what, got.Unknown)
	for i := range want.Unknown {
		require.Equal(t, want.Unknown[i], got.Unknown[i], "%s: Unknown", what)
	}
	requireRow(t, want.Row, got.Row, what+": Row")
	requireRow(t, want.Peer, got.Peer, what+": Peer")
}

func requireRow(t testing.TB, want, got duplex.Values, what string) {
	t.Helper()
	require.Equal(t, want == nil, got == nil, "%s: nil", what)
	require.Len(t, got, len(want), "%s: %v", what, got)
	for f, w := range want {
		g, ok := got[f]
		require.True(t, ok, "%s: field %q missing", what, f)
		requireValue(t, w, g, what+"."+f)
	}
}

func requireValue(t testing.TB, want, got any, what string) {
	t.Helper()
	require.Equal(t, fmt.Sprintf("%T", want), fmt.Sprintf("%T", got), "%s: type", what)
	require.True(t, duplex.Equal(want, got), "%s: %#v, want %#v", what, got, want)
	switch w := want.(type) {
	case float64:
		require.Equal(t, math.Signbit(w), math.Signbit(got.(float64)), "%s: sign", what)
	case time.Time:
		_, wo := w.Zone()
		_, gOff := got.(time.Time).Zone()
		require.Equal(t, wo, gOff, "%s: offset", what)
	}
	if v := reflect.ValueOf(want); v.Kind() == reflect.Slice || v.Kind() == reflect.Map {
		require.Equal(t, v.IsNil(), reflect.ValueOf(got).IsNil(), "%s: nil", what)
	}
}

func load(t *testing.T, s store, tbl duplex.Table, keys ...duplex.Key) []duplex.Agreement {
	t.Helper()
	as, err := s.Load(t.Context(), tbl, keys)
	require.NoError(t, err)
	require.Len(t, as, len(keys))
	return as
}

func save(t *testing.T, s store, tbl duplex.Table, keys []duplex.Key, as ...duplex.Agreement) {
	t.Helper()
	require.NoError(t, s.Save(t.Context(), tbl, keys, as))
}

// typed is a row of every value shape sources produce.
func typed() duplex.Values {
	return duplex.Values{
		"int64":       int64(math.MinInt64),
		"int":         42,
		"float":       0.30000000000000004,
		"NaN":         math.NaN(),
		"-0":          math.Copysign(0, -1),
		"+Inf":        math.Inf(1),
		"text":        "héllo, 世界 \"quoted\" 'single' \\ 😀",
		"empty text":  "",
		"bool":        true,
		"null":        nil,
		"bytes":       []byte{0, 1, 0xfe, 0xff},
		"empty bytes": []byte{},
		"nil bytes":   []byte(nil),
		"time":        time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC),
		"time zone":   time.Date(2026, 3, 4, 5, 6, 7, 1, time.FixedZone("", -(3*3600+30*60))),
		"strings":     []string{"a", "", "b"},
		"nil strings": []string(nil),
		"int64s":      []int64{1, math.MaxInt64},
		"json":        json.RawMessage(`{"b":[1,2,{"c":null}],"a":"x"}`),
		"jsonb":       duplex.JSONB(`{"a": "x", "n": 12345678901234567891, "b": [1.0, 2]}`),
		"bigint":      new(big.Int).Lsh(big.NewInt(-3), 200),
		"list":        []any{"a", int64(1), nil, []byte("x")},
		"map":         map[string]any{"n": int64(3), "deep": map[string]any{"f": false}},
	}
}

var cases = []suite.Case[store]{
	{Name: "UnknownKeys", Run: func(t *testing.T, s store) {
		as, err := s.Load(t.Context(), customers, nil)
		require.NoError(t, err)
		require.Empty(t, as)
		for i, a := range load(t, s, customers, id(1), id(2), id(1)) {
			require.Equal(t, duplex.Agreement{}, a, "key %d", i)
		}
	}},
	{Name: "RoundTripTypes", Run: func(t *testing.T, s store) {
		save(t, s, customers, []duplex.Key{id(1), id(2)}, known(typed()), known(duplex.Values{}))
		as := load(t, s, customers, id(1), id(2))
		RequireAgreement(t, known(typed()), as[0], "typed row")
		RequireAgreement(t, known(duplex.Values{}), as[1], "empty row")
		// Loaded again (a cache, when the store has one).
		RequireAgreement(t, known(typed()), load(t, s, customers, id(1))[0], "typed row again")
	}},
	{Name: "Tombstone", Run: func(t *testing.T, s store) {
		save(t, s, customers, []duplex.Key{id(1)}, known(nil))
		as := load(t, s, customers, id(1), id(2))
		RequireAgreement(t, known(nil), as[0], "agreed absent")
		RequireAgreement(t, duplex.Agreement{}, as[1], "unknown")
	}},
	{Name: "VersionPeerUnknown", Run: func(t *testing.T, s store) {
		want := []duplex.Agreement{
			{Known: true, Version: 7, Row: duplex.Values{"id": int64(1), "n": "x"}, Peer: duplex.Values{"id": int64(1), "n": "y", "m": nil}, Unknown: []string{"a", "b"}},
			{Known: true, Version: 1 << 40, Peer: duplex.Values{"id": int64(2)}},
			{Known: true, Version: 2, Row: duplex.Values{"id": int64(3)}},
		}
		keys := []duplex.Key{id(1), id(2), id(3)}
		save(t, s, customers, keys, want...)
		for i, a := range load(t, s, customers, keys...) {
			RequireAgreement(t, want[i], a, strconv.Itoa(i))
		}
	}},
	{Name: "Overwrite", Run: func(t *testing.T, s store) {
		for i, a := range []duplex.Agreement{
			known(duplex.Values{"id": int64(1), "a": "x", "b": int64(1)}),
			known(duplex.Values{"id": int64(1), "a": nil}),
			{Known: true, Version: 3, Row: duplex.Values{"id": int64(1)}, Peer: duplex.Values{"id": int64(1), "p": "q"}, Unknown: []string{"z"}},
			{Known: true, Version: 1, Row: duplex.Values{"id": int64(1), "first": "again"}},
			known(nil),
			known(duplex.Values{"id": int64(1), "c": []byte("z")}),
			{},
		} {
			save(t, s, customers, []duplex.Key{id(1)}, a)
			RequireAgreement(t, a, load(t, s, customers, id(1))[0], "version "+strconv.Itoa(i))
		}
	}},
	{Name: "FirstRecordsBesideExisting", Run: func(t *testing.T, s store) {
		// Version 1 marks a key's first record; one that exists already is
		// overwritten all the same, in a save with new keys and others.
		first := func(n int64) duplex.Agreement {
			return duplex.Agreement{Known: true, Version: 1, Row: duplex.Values{"id": n}}
		}
		save(t, s, customers, []duplex.Key{id(2)}, first(20))
		keys := []duplex.Key{id(1), id(2), id(3)}
		want := []duplex.Agreement{first(1), first(2), {Known: true, Version: 4, Row: duplex.Values{"id": int64(3)}}}
		save(t, s, customers, keys, want...)
		for i, a := range load(t, s, customers, keys...) {
			RequireAgreement(t, want[i], a, strconv.Itoa(i))
		}
	}},
	{Name: "TablesDoNotCollide", Run: func(t *testing.T, s store) {
		tables := []duplex.Table{customers, orders, other}
		for i, tbl := range tables {
			save(t, s, tbl, []duplex.Key{id(1)}, known(duplex.Values{"t": int64(i)}))
		}
		for i, tbl := range tables {
			RequireAgreement(t, known(duplex.Values{"t": int64(i)}), load(t, s, tbl, id(1))[0], tbl.String())
			RequireAgreement(t, duplex.Agreement{}, load(t, s, tbl, id(2))[0], tbl.String()+" other key")
		}
	}},
	{Name: "OddKeys", Run: func(t *testing.T, s store) {
		keys := []duplex.Key{
			{{Name: "tenant", Value: "acme"}, {Name: "id", Value: int64(1)}},
			{{Name: "tenant", Value: "acme"}, {Name: "id", Value: int64(2)}},
			{{Name: "tenant", Value: "acme2"}, {Name: "id", Value: int64(1)}},
			{{Name: "tenant", Value: `it's "quoted", a=b`}, {Name: "id", Value: int64(1)}},
			{{Name: "name", Value: "ключ 😀 \\ \t\n"}},
			{{Name: "name", Value: ""}},
			{{Name: "name", Value: "\uFFFDnot base64"}},
			{{Name: "blob", Value: []byte{0, 1, 2}}},
			{{Name: "at", Value: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}},
			{{Name: "id", Value: nil}},
		}
		as := make([]duplex.Agreement, len(keys))
		for i := range keys {
			as[i] = known(duplex.Values{"i": int64(i)})
		}
		save(t, s, customers, keys, as...)
		for i, a := range load(t, s, customers, keys...) {
			RequireAgreement(t, as[i], a, keys[i].String())
		}
	}},
	{Name: "KeysOrderAndDuplicates", Run: func(t *testing.T, s store) {
		save(t, s, customers, []duplex.Key{id(1), id(3)}, known(duplex.Values{"v": "one"}), known(nil))
		got := load(t, s, customers, id(3), id(2), id(1), id(3), id(1), id(4))
		want := []duplex.Agreement{known(nil), {}, known(duplex.Values{"v": "one"}), known(nil), known(duplex.Values{"v": "one"}), {}}
		for i := range want {
			RequireAgreement(t, want[i], got[i], strconv.Itoa(i))
		}
	}},
	{Name: "SaveSameKeyTwice", Run: func(t *testing.T, s store) {
		save(t, s, customers, []duplex.Key{id(1), id(2), id(1)},
			known(duplex.Values{"v": "first"}), known(duplex.Values{"v": "two"}), known(duplex.Values{"v": "last"}))
		got := load(t, s, customers, id(1), id(2))
		RequireAgreement(t, known(duplex.Values{"v": "last"}), got[0], "the last wins")
		RequireAgreement(t, known(duplex.Values{"v": "two"}), got[1], "the other key")
	}},
	{Name: "RowsAreCopies", Run: func(t *testing.T, s store) {
		row := duplex.Values{"id": int64(1), "v": "x"}
		save(t, s, customers, []duplex.Key{id(1)}, known(row))
		row["v"] = "changed after Save"
		row["new"] = true
		got := load(t, s, customers, id(1), id(1))
		got[0].Row["v"] = "changed after Load"
		delete(got[0].Row, "id")
		want := known(duplex.Values{"id": int64(1), "v": "x"})
		RequireAgreement(t, want, got[1], "duplicate in the same Load")
		got[1].Row["extra"] = int64(1)
		RequireAgreement(t, want, load(t, s, customers, id(1))[0], "a later Load")
	}},
	{Name: "Concurrent", Run: func(t *testing.T, s store) {
		const workers, rounds = 8, 25
		shared := id(-1)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				own := id(w)
				for r := range rounds {
					row := duplex.Values{"w": int64(w), "r": int64(r)}
					keys := []duplex.Key{own, shared}
					if err := s.Save(t.Context(), customers, keys, []duplex.Agreement{known(row), known(row)}); err != nil {
						t.Errorf("worker %d: Save: %v", w, err)
						return
					}
					as, err := s.Load(t.Context(), customers, []duplex.Key{shared, own})
					if err != nil {
						t.Errorf("worker %d: Load: %v", w, err)
						return
					}
					if !as[1].Known || !duplex.Equal(as[1].Row, row) {
						t.Errorf("worker %d round %d: own key loads %+v, want %v", w, r, as[1], row)
					}
					if !as[0].Known || len(as[0].Row) != 2 {
						t.Errorf("worker %d round %d: shared key loads %+v", w, r, as[0])
					}
				}
			})
		}
		wg.Wait()
		got := load(t, s, customers, shared)[0]
		require.True(t, got.Known)
		require.Equal(t, int64(rounds-1), got.Row["r"], "the last round of some worker: %v", got.Row)
		for w := range workers {
			RequireAgreement(t, known(duplex.Values{"w": int64(w), "r": int64(rounds - 1)}), load(t, s, customers, id(w))[0], "worker "+strconv.Itoa(w))
		}
	}},
	{Name: "ManyKeys", Run: func(t *testing.T, s store) {
		const n = 2000
		keys := make([]duplex.Key, n)
		as := make([]duplex.Agreement, n)
		for i := range n {
			keys[i] = duplex.Key{{Name: "tenant", Value: "t" + strconv.Itoa(i%7)}, {Name: "id", Value: int64(i)}}
			as[i] = known(duplex.Values{"id": int64(i), "name": "row " + strconv.Itoa(i)})
			if i%10 == 0 {
				as[i] = known(nil)
			}
		}
		save(t, s, customers, keys, as...)
		got := load(t, s, customers, append(keys, id(n))...)
		for i := range n {
			RequireAgreement(t, as[i], got[i], keys[i].String())
		}
		RequireAgreement(t, duplex.Agreement{}, got[n], "unknown")
	}},
}

// KeeperStore returns an AgreementStore over an Applier that keeps
// agreement records: Load reads them, Save writes them with an Apply of a
// Batch holding nothing else. The conformance suite of a keeper's records.
func KeeperStore(a interface {
	duplex.Applier
	duplex.AgreementKeeper
}) duplex.AgreementStore {
	return keeperStore{a}
}

type keeperStore struct {
	a interface {
		duplex.Applier
		duplex.AgreementKeeper
	}
}

func (k keeperStore) Load(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Agreement, error) {
	return k.a.Agreements(ctx, t, keys)
}

func (k keeperStore) Save(ctx context.Context, t duplex.Table, keys []duplex.Key, as []duplex.Agreement) error {
	b := &duplex.Batch{Source: "agreetest"}
	for i, key := range keys {
		b.Agreements = append(b.Agreements, duplex.AgreementWrite{Table: t, Key: key, Agreement: as[i]})
	}
	return k.a.Apply(ctx, b)
}
