package applypg_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/internal/testenv"
)

// The benchmark table: a typical row of seven columns.
const benchDDL = `CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, email text, n bigint NOT NULL,
	amount numeric(12,2), note text, updated_at timestamptz NOT NULL)`

const benchBatch = 512 // the Pipeline's default BatchSize

var methods = []applypg.Method{applypg.MethodUnnest, applypg.MethodRows, applypg.MethodValues, applypg.MethodCopy}

type benchTable struct {
	t     duplex.Table
	n     []int64 // current n of each pre-filled row, for expectations
	notes []any
	next  int64 // next id to insert
	upd   int   // next row to update
	seq   int   // change IDs
}

func newBenchTable(tb testing.TB, db *testenv.DB, name string, rows int) *benchTable {
	tb.Helper()
	exec(tb, db, fmt.Sprintf(benchDDL, name))
	if rows > 0 {
		exec(tb, db, fmt.Sprintf(`INSERT INTO %s SELECT g, 'name ' || g, 'user' || g || '@example.com', 0, g * 0.01, NULL, now()
			FROM generate_series(1, %d) g`, name, rows))
		exec(tb, db, "VACUUM ANALYZE "+name)
	}
	return &benchTable{t: duplex.Table{Schema: "public", Name: name}, n: make([]int64, rows), notes: make([]any, rows), next: int64(rows) + 1}
}

func (bt *benchTable) change() *duplex.Change {
	bt.seq++
	return &duplex.Change{ID: fmt.Sprintf("%s/%d", bt.t.Name, bt.seq)}
}

// inserts returns a batch of size inserts of new rows.
func (bt *benchTable) inserts(size int) *duplex.Batch {
	ws := make([]duplex.Write, size)
	now := time.Now()
	for i := range ws {
		id := bt.next
		bt.next++
		ws[i] = duplex.Write{Op: duplex.OpInsert, Table: bt.t, Key: duplex.Key{{Name: "id", Value: id}}, Change: bt.change(),
			Set: duplex.Values{"id": id, "name": fmt.Sprintf("name %d", id), "email": fmt.Sprintf("user%d@example.com", id),
				"n": int64(0), "amount": fmt.Sprintf("%d.%02d", id/100, id%100), "note": nil, "updated_at": now}}
	}
	return &duplex.Batch{Writes: ws, Source: "a", Checkpoint: duplex.Position(fmt.Sprintf("%d", bt.seq))}
}

// updates returns a batch of size updates of two fields of pre-filled
// rows, expecting their current values.
func (bt *benchTable) updates(size int) *duplex.Batch {
	ws := make([]duplex.Write, size)
	for i := range ws {
		r := bt.upd % len(bt.n)
		bt.upd++
		id := int64(r + 1)
		note := fmt.Sprintf("update %d", bt.upd)
		ws[i] = duplex.Write{Op: duplex.OpUpdate, Table: bt.t, Key: duplex.Key{{Name: "id", Value: id}}, Change: bt.change(),
			Set:    duplex.Values{"n": bt.n[r] + 1, "note": note},
			Expect: duplex.Values{"n": bt.n[r], "note": bt.notes[r]}}
		bt.n[r]++
		bt.notes[r] = note
	}
	return &duplex.Batch{Writes: ws, Source: "a", Checkpoint: duplex.Position(fmt.Sprintf("%d", bt.seq))}
}

// BenchmarkApply applies batches of 512 single-row changes with each
// method: inserts of new rows, and updates of two fields with expectations.
// An iteration is one batch; rows/s is the throughput. The "loop"
// sub-benchmarks are the baseline: one statement per transaction.
//
//	go test -run '^$' -bench BenchmarkApply -benchtime 100x ./apply/applypg/
func BenchmarkApply(b *testing.B) {
	db := testenv.Postgres(b)
	const prefill = 200_000
	for _, m := range methods {
		a := newApplier(b, db, testenv.UniqueName(b, "s"), func(c *applypg.Config) { c.Method = m })
		ins, upd := newBenchTable(b, db, "ins_"+m.String(), 0), newBenchTable(b, db, "upd_"+m.String(), prefill)
		b.Run(m.String()+"/insert", func(b *testing.B) {
			bt := ins
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				batch := bt.inserts(benchBatch)
				b.StartTimer()
				if err := a.Apply(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "rows/s")
		})
		b.Run(m.String()+"/update", func(b *testing.B) {
			bt := upd
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				batch := bt.updates(benchBatch)
				b.StartTimer()
				if err := a.Apply(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "rows/s")
		})
	}
	loopIns, loopUpd := newBenchTable(b, db, "ins_loop", 0), newBenchTable(b, db, "upd_loop", prefill)
	b.Run("loop/insert", func(b *testing.B) {
		bt := loopIns
		b.ResetTimer()
		for range b.N {
			if err := loopInsert(b.Context(), db, bt, bt.inserts(1).Writes[0]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	b.Run("loop/update", func(b *testing.B) {
		bt := loopUpd
		b.ResetTimer()
		for range b.N {
			if err := loopUpdate(b.Context(), db, bt, bt.updates(1).Writes[0]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}

// loopInsert is the baseline: one upsert, one transaction.
func loopInsert(ctx context.Context, db *testenv.DB, bt *benchTable, w duplex.Write) error {
	s := w.Set
	_, err := db.Pool.Exec(ctx, "INSERT INTO "+bt.t.Name+` (id, name, email, n, amount, note, updated_at)
		VALUES ($1, $2, $3, $4, $5::numeric, $6, $7) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email,
		n = EXCLUDED.n, amount = EXCLUDED.amount, note = EXCLUDED.note, updated_at = EXCLUDED.updated_at`,
		s["id"], s["name"], s["email"], s["n"], s["amount"], s["note"], s["updated_at"])
	return err
}

// loopUpdate is the baseline: one update with its expectations, one
// transaction.
func loopUpdate(ctx context.Context, db *testenv.DB, bt *benchTable, w duplex.Write) error {
	tag, err := db.Pool.Exec(ctx, "UPDATE "+bt.t.Name+` SET n = $2, note = $3 WHERE id = $1
		AND n IS NOT DISTINCT FROM $4 AND note IS NOT DISTINCT FROM $5`,
		w.Key[0].Value, w.Set["n"], w.Set["note"], w.Expect["n"], w.Expect["note"])
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("update %v: stale", w.Key)
	}
	return err
}

// TestMethodThroughput prints the throughput of each method for 200,000
// inserts and 200,000 updates of two fields with expectations, in batches
// of 512, next to the one-transaction-per-change loop (measured on 5,000
// changes). The methods take turns, 20,000 rows at a time, so that a
// change in the machine's load spreads over all of them. It runs only with
// DUPLEX_BENCH=1:
//
//	DUPLEX_BENCH=1 go test -run TestMethodThroughput -v ./apply/applypg/
func TestMethodThroughput(t *testing.T) {
	if os.Getenv("DUPLEX_BENCH") == "" {
		t.Skip("set DUPLEX_BENCH=1 to measure the write methods")
	}
	db := testenv.Postgres(t)
	ctx := t.Context()
	const rows, loopRows, rounds = 200_000, 5_000, 10
	type contender struct {
		name             string
		insert, update   func(k int) error
		n                int // rows per method and operation
		insTime, updTime time.Duration
	}
	timed := func(n int, fn func(int) error) time.Duration {
		start := time.Now()
		for done := 0; done < n; {
			k := min(benchBatch, n-done)
			require.NoError(t, fn(k))
			done += k
		}
		return time.Since(start)
	}
	var cs []*contender
	for _, m := range methods {
		a := newApplier(t, db, testenv.UniqueName(t, "s"), func(c *applypg.Config) { c.Method = m })
		ins := newBenchTable(t, db, "tp_ins_"+m.String(), 0)
		upd := newBenchTable(t, db, "tp_upd_"+m.String(), rows)
		cs = append(cs, &contender{name: m.String(), n: rows,
			insert: func(k int) error { return a.Apply(ctx, ins.inserts(k)) },
			update: func(k int) error { return a.Apply(ctx, upd.updates(k)) }})
	}
	ins := newBenchTable(t, db, "tp_ins_loop", 0)
	upd := newBenchTable(t, db, "tp_upd_loop", rows)
	cs = append(cs, &contender{name: "loop", n: loopRows,
		insert: func(k int) error {
			for _, w := range ins.inserts(k).Writes {
				if err := loopInsert(ctx, db, ins, w); err != nil {
					return err
				}
			}
			return nil
		},
		update: func(k int) error {
			for _, w := range upd.updates(k).Writes {
				if err := loopUpdate(ctx, db, upd, w); err != nil {
					return err
				}
			}
			return nil
		}})
	for range rounds {
		for _, c := range cs {
			c.insTime += timed(c.n/rounds, c.insert)
			c.updTime += timed(c.n/rounds, c.update)
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\n%-8s %8s %14s %14s\n", "method", "rows", "insert rows/s", "update rows/s")
	for _, c := range cs {
		fmt.Fprintf(&out, "%-8s %8d %14.0f %14.0f\n", c.name, c.n, float64(c.n)/c.insTime.Seconds(), float64(c.n)/c.updTime.Seconds())
	}
	t.Log(out.String())
}
