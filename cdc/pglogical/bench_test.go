package pglogical_test

// Benchmarks of the logical replication source against a real server
// (issue 3). They take a minute or more each and are skipped unless
// DUPLEX_BENCH=1 is set; they do not call t.Parallel, so nothing else of
// the package runs beside them. Run them alone, on a quiet machine and
// server: the server's decoding is most of the time measured.
//
// Throughput: the source's rate (Source.Stream, with a fn that counts and
// acknowledges) next to the textbook pglogrepl receive loop (ParseXLogData
// and pglogrepl.Parse of each message, no value decoding) on the same
// workload, alternating A B A B A B. Each run uses a fresh table and slot;
// the workload (200,000 updates: 200 transactions of 1,000 rows of a
// 6-column REPLICA IDENTITY FULL table, so every update carries its before
// image) is written first, then the time to receive all changes is taken.
// It logs each run, the median rows/s of both, their ratio, and the
// client CPU time per change:
//
//	DUPLEX_BENCH=1 go test -run '^TestBenchThroughput$' -v -timeout 30m ./cdc/pglogical/
//
// DUPLEX_BENCH_ROWS (200000) and DUPLEX_BENCH_RUNS (3 of each) change the
// sizes; DUPLEX_BENCH_KINDS=raw,raw (or duplex,duplex) measures one loop
// against itself, which shows the server's run-to-run noise.
//
// Peak memory: streams one 1,000,000-row transaction through Source.Stream
// (default Config, fn counting and acknowledging) in a child process (this
// test binary, re-executed) and reports the child's peak RSS (VmHWM from
// /proc/self/status); DUPLEX_BENCH_RSS_ROWS changes the size:
//
//	DUPLEX_BENCH=1 go test -run '^TestBenchRSS$' -v -timeout 30m ./cdc/pglogical/
//
// The decoder alone (no server) has a Go benchmark:
//
//	go test -run '^$' -bench BenchmarkDecode -benchmem ./cdc/pglogical/

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pglogical"
)

var benchSeq atomic.Int64

func benchEnabled(t *testing.T) {
	if os.Getenv("DUPLEX_BENCH") == "" {
		t.Skip("set DUPLEX_BENCH=1 to run the benchmarks against PostgreSQL")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchTable creates a fresh table for one run (so every run starts from
// the same state and writes the same WAL) with 1,000 rows: 6 columns,
// REPLICA IDENTITY FULL (updates carry before images).
func benchTable(t *testing.T, e *env, name string) {
	t.Helper()
	e.exec("CREATE TABLE " + name + ` (id bigint PRIMARY KEY, a bigint NOT NULL, b text NOT NULL,
		c double precision NOT NULL, d timestamptz NOT NULL, e boolean NOT NULL)
		WITH (fillfactor = 50, autovacuum_enabled = false)`)
	e.exec("ALTER TABLE " + name + " REPLICA IDENTITY FULL")
	e.exec("INSERT INTO " + name + ` SELECT g, g, 'some text value ' || g, g * 0.25, now(), g % 2 = 0 FROM generate_series(1, 1000) g`)
}

// benchWorkload updates every row of table (1,000 rows) in each of
// rows/1000 transactions.
func benchWorkload(t *testing.T, e *env, table string, rows int) {
	t.Helper()
	e.exec("CHECKPOINT") // the same full-page images in every run
	before := e.currentLSN()
	for range rows / 1000 {
		e.exec("UPDATE " + table + " SET a = a + 1, c = c + 0.5, d = now(), e = NOT e")
	}
	if testing.Verbose() {
		t.Logf("workload: %d MB of WAL", (e.currentLSN()-before)>>20)
	}
}

// dropSlot drops a slot once its walsender has exited.
func dropSlot(t *testing.T, e *env, slot string) {
	require.Eventually(t, func() bool {
		_, err := e.db.Pool.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", slot)
		return err == nil
	}, waitFor, pollEvery, "drop slot %s", slot)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func TestBenchThroughput(t *testing.T) {
	benchEnabled(t)
	rows := envInt("DUPLEX_BENCH_ROWS", 200000)
	runs := envInt("DUPLEX_BENCH_RUNS", 3)
	e := newEnv(t)
	var ours, raw, oursCPU, rawCPU []float64
	for i := range runs {
		for _, kind := range benchKinds() {
			var d time.Duration
			var cpu0 time.Duration
			measure := func() { cpu0 = cpuTime(t) }
			if kind == "duplex" {
				d = benchOurs(t, e, rows, measure)
			} else {
				d = benchRaw(t, e, rows, measure)
			}
			cpu := cpuTime(t) - cpu0
			rate, cpuPer := float64(rows)/d.Seconds(), float64(cpu.Microseconds())/float64(rows)
			if kind == "duplex" {
				ours, oursCPU = append(ours, rate), append(oursCPU, cpuPer)
			} else {
				raw, rawCPU = append(raw, rate), append(rawCPU, cpuPer)
			}
			t.Logf("run %d %-6s: %d changes in %v = %.0f rows/s; client CPU %v (%.2f µs/change)",
				i+1, kind, rows, d.Round(time.Millisecond), rate, cpu.Round(time.Millisecond), cpuPer)
		}
	}
	if len(ours) == 0 || len(raw) == 0 {
		return
	}
	mo, mr := median(ours), median(raw)
	t.Logf("median rows/s: duplex %.0f, raw pglogrepl %.0f, ratio duplex/raw %.2f; median client CPU per change: duplex %.2f µs, raw %.2f µs (GOMAXPROCS %d)",
		mo, mr, mo/mr, median(oursCPU), median(rawCPU), runtime.GOMAXPROCS(0))
}

// cpuTime returns the user and system CPU time of this process.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchOurs times Source.Stream over the workload; measure is called when
// the clock starts.
func benchOurs(t *testing.T, e *env, rows int, measure func()) time.Duration {
	table := fmt.Sprintf("w_duplex_%d", benchSeq.Add(1))
	benchTable(t, e, table)
	cfg := e.config(table)
	cfg.Sync = e.sync + "_" + table
	cfg.Linger, cfg.StatusInterval = 0, 0 // defaults
	src := e.source(cfg)
	require.NoError(t, src.Setup(t.Context(), false))
	defer dropSlot(t, e, src.Slot())
	benchWorkload(t, e, table, rows)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n := 0
	var took time.Duration
	measure()
	start := time.Now()
	err := src.Stream(ctx, "", func(ctx context.Context, b []duplex.Change) error {
		n += len(b)
		if err := src.Ack(ctx, b[len(b)-1].Position); err != nil {
			return err
		}
		if n >= rows {
			took = time.Since(start)
			cancel()
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, rows, n)
	return took
}

// benchRaw times the textbook pglogrepl loop over the workload.
func benchRaw(t *testing.T, e *env, rows int, measure func()) time.Duration {
	table := fmt.Sprintf("w_raw_%d", benchSeq.Add(1))
	benchTable(t, e, table)
	e.exec("CREATE PUBLICATION " + table + " FOR TABLE " + table)
	slot := e.sync + "_" + table
	e.exec("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
	defer dropSlot(t, e, slot)
	benchWorkload(t, e, table, rows)

	ctx := t.Context()
	measure()
	start := time.Now()
	conn, err := pgconn.Connect(ctx, e.db.ReplicationURL())
	require.NoError(t, err)
	defer conn.Close(context.Background())
	require.NoError(t, pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + table + "'"},
	}))
	// The textbook loop (pglogrepl's example): receive with a deadline at
	// the next status update, parse, and report the position.
	var pos pglogrepl.LSN
	const statusInterval = time.Second
	next := time.Now().Add(statusInterval)
	n := 0
	for n < rows {
		if time.Now().After(next) {
			require.NoError(t, pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pos}))
			next = time.Now().Add(statusInterval)
		}
		rctx, cancel := context.WithDeadline(ctx, next)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if pgconn.Timeout(err) {
			continue
		}
		require.NoError(t, err)
		cd, ok := msg.(*pgproto3.CopyData)
		require.True(t, ok, "unexpected %T", msg)
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			require.NoError(t, err)
			if ka.ReplyRequested {
				next = time.Time{}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
			require.NoError(t, err)
			m, err := pglogrepl.Parse(xld.WALData)
			require.NoError(t, err)
			switch m := m.(type) {
			case *pglogrepl.UpdateMessage:
				n++
			case *pglogrepl.CommitMessage:
				pos = m.TransactionEndLSN
			}
		}
	}
	return time.Since(start)
}

// TestBenchRSS writes one transaction of DUPLEX_BENCH_RSS_ROWS rows, then
// streams it in a child process and reports the child's peak RSS.
func TestBenchRSS(t *testing.T) {
	benchEnabled(t)
	rows := envInt("DUPLEX_BENCH_RSS_ROWS", 1000000)
	e := newEnv(t, "CREATE TABLE big (id bigint PRIMARY KEY, a bigint NOT NULL, b text NOT NULL, c timestamptz NOT NULL)")
	src := e.setupSource(nil, "big")
	begin := time.Now()
	e.exec("INSERT INTO big SELECT g, g, 'row number ' || g, now() FROM generate_series(1, $1::int) g", rows)
	t.Logf("wrote one transaction of %d rows in %v", rows, time.Since(begin).Round(time.Millisecond))
	src.Close()

	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestBenchRSSChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(),
		"DUPLEX_BENCH_RSS_CHILD=1",
		"DUPLEX_BENCH_RSS_URL="+e.db.URL,
		"DUPLEX_BENCH_RSS_SYNC="+e.sync,
		"DUPLEX_BENCH_RSS_ROWS="+strconv.Itoa(rows),
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	require.NoError(t, err, out.String())
	var result string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if i := strings.Index(sc.Text(), "RSS_RESULT "); i >= 0 {
			result = sc.Text()[i:]
		}
	}
	require.NotEmpty(t, result, out.String())
	t.Log(result)
	var kb int
	for _, f := range strings.Fields(result) {
		if v, ok := strings.CutPrefix(f, "VmHWM="); ok {
			kb, err = strconv.Atoi(v)
			require.NoError(t, err)
		}
	}
	require.Less(t, kb, 150<<10, "peak RSS %d kB: the aim is under 150 MB", kb)
}

// TestBenchRSSChild is the child process of TestBenchRSS.
func TestBenchRSSChild(t *testing.T) {
	if os.Getenv("DUPLEX_BENCH_RSS_CHILD") == "" {
		t.Skip("run by TestBenchRSS")
	}
	rows := envInt("DUPLEX_BENCH_RSS_ROWS", 1000000)
	src, err := pglogical.New(t.Context(), pglogical.Config{
		ConnString: os.Getenv("DUPLEX_BENCH_RSS_URL"), Sync: os.Getenv("DUPLEX_BENCH_RSS_SYNC"), System: "a",
		Tables: []duplex.Table{{Schema: "public", Name: "big"}},
	})
	require.NoError(t, err)
	defer src.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n, batches, maxBatch := 0, 0, 0
	start := time.Now()
	var took time.Duration
	err = src.Stream(ctx, "", func(ctx context.Context, b []duplex.Change) error {
		n += len(b)
		batches++
		maxBatch = max(maxBatch, len(b))
		if err := src.Ack(ctx, b[len(b)-1].Position); err != nil {
			return err
		}
		if n >= rows {
			took = time.Since(start)
			cancel()
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, rows, n)
	status, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	hwm := ""
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			hwm = strings.TrimSuffix(strings.TrimSpace(v), " kB")
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("RSS_RESULT rows=%d batches=%d max_batch=%d elapsed=%v rows/s=%.0f VmHWM=%s kB HeapSys=%dMB TotalAlloc=%dMB NumGC=%d\n",
		n, batches, maxBatch, took.Round(time.Millisecond), float64(n)/took.Seconds(), hwm, ms.HeapSys>>20, ms.TotalAlloc>>20, ms.NumGC)
}

// benchKinds returns the loops to compare, in the order run:
// DUPLEX_BENCH_KINDS=raw,duplex changes it.
func benchKinds() []string {
	if k := os.Getenv("DUPLEX_BENCH_KINDS"); k != "" {
		return strings.Split(k, ",")
	}
	return []string{"duplex", "raw"}
}
