package cdctest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// columns are the Harness table's columns.
var columns = []string{"id", "name", "n", "note"}

// version is one committed version of a row, as the suite wrote it.
type version struct {
	op    duplex.Op
	id    int64
	after duplex.Values // nil for deletes
	tx    int           // the transaction it was written in (1-based)
}

func (v version) String() string {
	return fmt.Sprintf("%s id=%d %v (tx %d)", v.op, v.id, v.after, v.tx)
}

// model writes through a Harness and remembers what it wrote, so the
// delivered changes can be checked against it.
type model struct {
	h     Harness
	rows  map[int64]duplex.Values
	order []version // every version, in commit order
	txs   int
}

func newModel(h Harness) *model {
	return &model{h: h, rows: make(map[int64]duplex.Values)}
}

// recorder is the Writer of one transaction of the model.
type recorder struct {
	w       Writer
	rows    map[int64]duplex.Values
	pending []version
	tx      int
}

func (r *recorder) Insert(ctx context.Context, id int64, name string, n int64) error {
	if err := r.w.Insert(ctx, id, name, n); err != nil {
		return err
	}
	row := duplex.Values{"id": id, "name": name, "n": n, "note": nil}
	r.rows[id] = row
	r.pending = append(r.pending, version{op: duplex.OpInsert, id: id, after: row.Clone(), tx: r.tx})
	return nil
}

func (r *recorder) Update(ctx context.Context, id int64, set duplex.Values) error {
	if err := r.w.Update(ctx, id, set); err != nil {
		return err
	}
	row := r.rows[id].Clone()
	maps.Copy(row, set)
	r.rows[id] = row
	r.pending = append(r.pending, version{op: duplex.OpUpdate, id: id, after: row.Clone(), tx: r.tx})
	return nil
}

func (r *recorder) Delete(ctx context.Context, id int64) error {
	if err := r.w.Delete(ctx, id); err != nil {
		return err
	}
	r.rows[id] = nil
	r.pending = append(r.pending, version{op: duplex.OpDelete, id: id, tx: r.tx})
	return nil
}

// tx runs fn in one transaction of the Harness and records its writes when
// it commits.
func (m *model) tx(ctx context.Context, fn func(w Writer) error) error {
	var r *recorder
	err := m.h.Tx(ctx, func(w Writer) error {
		r = &recorder{w: w, rows: maps.Clone(m.rows), tx: m.txs + 1}
		return fn(r)
	})
	if err != nil {
		return err
	}
	m.commit(r)
	return nil
}

// single makes one write in its own transaction, through the Harness's own
// Writer methods.
func (m *model) single(ctx context.Context, write func(w Writer) error) error {
	r := &recorder{w: m.h, rows: maps.Clone(m.rows), tx: m.txs + 1}
	if err := write(r); err != nil {
		return err
	}
	m.commit(r)
	return nil
}

func (m *model) commit(r *recorder) {
	if len(r.pending) == 0 {
		return
	}
	m.txs++
	m.rows = r.rows
	m.order = append(m.order, r.pending...)
}

func (m *model) insert(t *testing.T, id int64, name string, n int64) {
	t.Helper()
	require.NoError(t, m.single(t.Context(), func(w Writer) error { return w.Insert(t.Context(), id, name, n) }))
}

func (m *model) update(t *testing.T, id int64, set duplex.Values) {
	t.Helper()
	require.NoError(t, m.single(t.Context(), func(w Writer) error { return w.Update(t.Context(), id, set) }))
}

func (m *model) delete(t *testing.T, id int64) {
	t.Helper()
	require.NoError(t, m.single(t.Context(), func(w Writer) error { return w.Delete(t.Context(), id) }))
}

// expected returns the versions a source with features f must deliver:
// everything, or everything but deletes.
func (m *model) expected(f Features) []version {
	var out []version
	for _, v := range m.order {
		if v.op == duplex.OpDelete && !f.Deletes {
			continue
		}
		out = append(out, v)
	}
	return out
}

// lastByKey returns the last expected version of each key.
func lastByKey(vs []version) map[int64]version {
	last := make(map[int64]version)
	for _, v := range vs {
		last[v.id] = v
	}
	return last
}

// complete reports whether got holds everything a source with features f
// must deliver for the model: every version, or the last version of every
// key when the source may coalesce.
func (m *model) complete(f Features) func(got []duplex.Change) bool {
	want := m.expected(f)
	if f.EveryVersion {
		return func(got []duplex.Change) bool { return len(got) >= len(want) }
	}
	last := lastByKey(want)
	return func(got []duplex.Change) bool {
		done := make(map[int64]bool, len(last))
		for _, c := range got {
			id, ok := keyID(c.Key)
			if !ok {
				return true // let check report it
			}
			v, ok := last[id]
			done[id] = ok && matches(c, v, false) == ""
		}
		for id := range last {
			if !done[id] {
				return false
			}
		}
		return true
	}
}

// wait waits on s until everything written to the model arrived.
func (m *model) wait(s *stream, f Features, timeout ...time.Duration) []duplex.Change {
	s.t.Helper()
	d := waitTimeout
	if len(timeout) > 0 {
		d = timeout[0]
	}
	return s.waitUntil(d, fmt.Sprintf("the %d versions written", len(m.expected(f))), m.complete(f))
}

// check checks the delivered changes against the model: with
// Features.EveryVersion, exactly the versions written, in commit order;
// otherwise, per key, a subsequence of the versions written ending with the
// last. It also checks the before images (Features.BeforeImage).
func (m *model) check(t *testing.T, f Features, got []duplex.Change) {
	t.Helper()
	want := m.expected(f)
	if f.EveryVersion {
		require.Len(t, got, len(want), "delivered:\n%s", describe(got))
		prev := make(map[int64]duplex.Values)
		for i, c := range got {
			if d := matches(c, want[i], true); d != "" {
				t.Fatalf("change %d: %s\nwant %s\ndelivered:\n%s", i, d, want[i], describe(got))
			}
			if f.BeforeImage && c.Op != duplex.OpInsert {
				if d := beforeDiff(prev[want[i].id], c.Before, c.Unchanged); d != "" {
					t.Fatalf("change %d (%s): before image: %s (before %v)", i, &c, d, c.Before)
				}
			}
			prev[want[i].id] = want[i].after
		}
		return
	}
	perKey := make(map[int64][]version)
	for _, v := range want {
		perKey[v.id] = append(perKey[v.id], v)
	}
	next := make(map[int64]int) // index of the next candidate version per key
	for i, c := range got {
		id, ok := keyID(c.Key)
		require.True(t, ok, "change %d has key %s, want id=<int64>", i, c.Key)
		vs := perKey[id]
		j := next[id]
		for j < len(vs) && matches(c, vs[j], false) != "" {
			j++
		}
		if j == len(vs) {
			t.Fatalf("change %d (%s) is not a version written after the key's previous delivered version; versions written: %v\ndelivered:\n%s", i, &c, vs, describe(got))
		}
		next[id] = j + 1
	}
	for id, vs := range perKey {
		require.Equal(t, len(vs), next[id], "key id=%d: the last version delivered is not the last written (%s)", id, vs[len(vs)-1])
	}
}

// matches returns "" when c is the version v, or what differs. When exact
// is false the op of a row that exists is not compared (a coalescing source
// may see an insert and its updates as one change).
func matches(c duplex.Change, v version, exact bool) string {
	id, ok := keyID(c.Key)
	if !ok || id != v.id {
		return fmt.Sprintf("key %s, want id=%d", c.Key, v.id)
	}
	if exact || v.op == duplex.OpDelete || c.Op == duplex.OpDelete {
		if c.Op != v.op {
			return fmt.Sprintf("op %s, want %s", c.Op, v.op)
		}
	}
	if v.op == duplex.OpDelete {
		if c.After != nil {
			return fmt.Sprintf("delete with after image %v", c.After)
		}
		return ""
	}
	return imageDiff(v.after, c.After, c.Unchanged)
}

// imageDiff returns "" when image holds want's columns with their values
// and Go types (int64, string, or nil for NULL), or what differs. Columns
// listed in unchanged must be absent instead. Other columns are ignored.
func imageDiff(want, image duplex.Values, unchanged []string) string {
	if image == nil {
		return "no image"
	}
	for _, col := range columns {
		w, inWant := want[col]
		if !inWant {
			continue
		}
		v, ok := image[col]
		if slices.Contains(unchanged, col) {
			if ok {
				return fmt.Sprintf("column %s is listed as unchanged but present (%#v)", col, v)
			}
			continue
		}
		if !ok {
			return fmt.Sprintf("column %s missing (want %#v)", col, w)
		}
		if fmt.Sprintf("%T", v) != fmt.Sprintf("%T", w) || !duplex.Equal(v, w) {
			return fmt.Sprintf("column %s is %T %#v, want %T %#v", col, v, v, w, w)
		}
	}
	return ""
}

// beforeDiff is imageDiff for before images: a column may be absent only
// when it is listed in unchanged.
func beforeDiff(want, before duplex.Values, unchanged []string) string {
	if before == nil {
		return "no before image"
	}
	for _, col := range columns {
		w, inWant := want[col]
		if !inWant {
			continue
		}
		v, ok := before[col]
		if !ok {
			if slices.Contains(unchanged, col) {
				continue
			}
			return fmt.Sprintf("column %s missing (want %#v)", col, w)
		}
		if fmt.Sprintf("%T", v) != fmt.Sprintf("%T", w) || !duplex.Equal(v, w) {
			return fmt.Sprintf("column %s is %T %#v, want %T %#v", col, v, v, w, w)
		}
	}
	return ""
}

func requireImage(t *testing.T, want, image duplex.Values, unchanged []string, msg string, args ...any) {
	t.Helper()
	if d := imageDiff(want, image, unchanged); d != "" {
		t.Fatalf("%s: %s (image %v)", fmt.Sprintf(msg, args...), d, image)
	}
}

// keyID returns the id of a key of the Harness table.
func keyID(k duplex.Key) (int64, bool) {
	if len(k) != 1 || k[0].Name != "id" {
		return 0, false
	}
	id, ok := k[0].Value.(int64)
	return id, ok
}
