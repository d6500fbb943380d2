package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pollEvery is how often the target is polled for arrivals.
const pollEvery = 5 * time.Millisecond

// writeMarker inserts marker id into table on pool with sent = the
// server's clock.
func writeMarker(ctx context.Context, pool *pgxpool.Pool, table string, id int64) error {
	_, err := pool.Exec(ctx, "INSERT INTO "+table+" (id, sent) VALUES ($1, clock_timestamp())", id)
	if err != nil {
		return fmt.Errorf("write marker %s id=%d: %w", table, id, err)
	}
	return nil
}

// errTimeout is returned by waitFor when the condition did not hold in
// time.
var errTimeout = errors.New("not done")

// waitFor polls cond until it is true or timeout passes.
func waitFor(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %w after %s (replication fell behind or stopped)", what, errTimeout, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// waitMarker waits until marker id of table has arrived on target.
func waitMarker(ctx context.Context, target *pgxpool.Pool, table string, id int64, timeout time.Duration) error {
	return waitFor(ctx, fmt.Sprintf("marker %s id=%d on the target", table, id), timeout, func(ctx context.Context) (bool, error) {
		var n int
		err := target.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE id = $1", id).Scan(&n)
		return n == 1, err
	})
}

// waitSum waits until the sum of the pair's dataset (dataset.sum) on
// target equals that on source.
func waitSum(ctx context.Context, p *pair, source, target *pgxpool.Pool, timeout time.Duration) error {
	var want string
	if err := source.QueryRow(ctx, p.data.sum).Scan(&want); err != nil {
		return fmt.Errorf("read the sum of %s on the source: %w", p.data.table, err)
	}
	return waitFor(ctx, fmt.Sprintf("the sum of %s = %s on the target", p.data.table, want), timeout, func(ctx context.Context) (bool, error) {
		var got string
		err := target.QueryRow(ctx, p.data.sum).Scan(&got)
		return got == want, err
	})
}

// updateRange updates the rows of the pair's table with lo < id <= hi on
// pool, in one transaction.
func updateRange(ctx context.Context, p *pair, pool *pgxpool.Pool, lo, hi int64) error {
	if _, err := pool.Exec(ctx, p.data.updateRange, lo, hi); err != nil {
		return fmt.Errorf("update %s (%d, %d]: %w", p.data.table, lo, hi, err)
	}
	return nil
}

// cursor walks the ids (lo, hi] in ranges, wrapping around.
type cursor struct {
	lo, hi, at int64
}

// next returns the next range of at most n ids; it may be shorter at the
// wrap.
func (c *cursor) next(n int64) (int64, int64) {
	if c.at < c.lo || c.at >= c.hi {
		c.at = c.lo
	}
	from, to := c.at, min(c.at+n, c.hi)
	c.at = to
	return from, to
}

// outcome is what a catch-up style workload measured.
type outcome struct {
	Total, Write time.Duration // first write until all arrived (or the timeout); the writes alone
	Rows         int64         // rows written
	Arrived      int64         // rows on the target at the end
	Incomplete   bool          // the target had not caught up within the timeout
}

// metrics returns o as the rate metric key (rows per second arrived over
// the total time) and the source's write rate, with an incomplete flag.
func (o outcome) metrics(key string) map[string]float64 {
	m := map[string]float64{key: float64(o.Arrived) / o.Total.Seconds(), "write_" + key: float64(o.Rows) / o.Write.Seconds(), "secs": o.Total.Seconds()}
	if o.Incomplete {
		m["incomplete"] = 1
	}
	return m
}

// catchUp writes updates row updates in transactions of txRows, as fast as
// one client can, and measures the time from the first write until the
// target has them all.
func catchUp(ctx context.Context, p *pair, seed, updates, txRows int, timeout time.Duration) (outcome, error) {
	o := outcome{Rows: int64(updates)}
	start := time.Now()
	if err := writeUpdates(ctx, p, seed, updates, txRows); err != nil {
		return o, err
	}
	o.Write = time.Since(start)
	return arrived(ctx, p, start, o, timeout)
}

// writeUpdates updates updates rows of the pair's table on a, in
// transactions of txRows rows walking ids 1..seed, as fast as one client
// can.
func writeUpdates(ctx context.Context, p *pair, seed, updates, txRows int) error {
	c := &cursor{lo: 0, hi: int64(seed)}
	for done := 0; done < updates; {
		from, to := c.next(int64(min(txRows, updates-done)))
		if err := updateRange(ctx, p, p.poolA, from, to); err != nil {
			return err
		}
		done += int(to - from)
	}
	return nil
}

// arrived writes the end marker and waits until it, and every update
// before it, are on the target (the dataset's sum is the same on both
// sides; for items, v starts at 0 everywhere, so sum(v) on the target
// counts the updates that arrived). After timeout it returns an
// incomplete outcome, with what had arrived when the dataset's sum counts
// it (items), else none.
func arrived(ctx context.Context, p *pair, start time.Time, o outcome, timeout time.Duration) (outcome, error) {
	if err := writeMarker(ctx, p.poolA, "marks_ab", endMarker); err != nil {
		return o, err
	}
	err := waitMarker(ctx, p.poolB, "marks_ab", endMarker, timeout)
	if err == nil {
		err = waitSum(ctx, p, p.poolA, p.poolB, timeout)
	}
	o.Total = time.Since(start)
	if errors.Is(err, errTimeout) {
		o.Incomplete = true
		if !p.data.sumCounts {
			return o, nil
		}
		var sum string
		if err := p.poolB.QueryRow(ctx, p.data.sum).Scan(&sum); err != nil {
			return o, err
		}
		o.Arrived, err = strconv.ParseInt(sum, 10, 64)
		return o, err
	}
	o.Arrived = o.Rows
	return o, err
}

// endMarker is the id of the marker written after a workload's writes.
const endMarker = 1 << 40

// smallTx runs n single-row update transactions from clients concurrent
// clients and measures the time until the target has them all.
func smallTx(ctx context.Context, p *pair, seed, n, clients int, timeout time.Duration) (outcome, error) {
	o := outcome{Rows: int64(n)}
	start := time.Now()
	if err := writeSmall(ctx, p, seed, n, clients); err != nil {
		return o, err
	}
	o.Write = time.Since(start)
	return arrived(ctx, p, start, o, timeout)
}

// backlog writes n single-row update transactions from clients clients
// while the replication is held, then releases it and measures the time
// from the release until the target has them all (heldCatchUp).
func backlog(ctx context.Context, p *pair, seed, n, clients int, timeout time.Duration) (outcome, error) {
	return heldCatchUp(ctx, p, n, func(ctx context.Context) error { return writeSmall(ctx, p, seed, n, clients) }, timeout)
}

// heldCatchUp runs write (rows rows) while the replication is held, then
// releases it and measures the time from the release until the target has
// every row: the replication's own rate, whatever the writers' speed.
func heldCatchUp(ctx context.Context, p *pair, rows int, write func(context.Context) error, timeout time.Duration) (outcome, error) {
	o := outcome{Rows: int64(rows)}
	if p.release == nil {
		return o, errors.New("the replication was not started held")
	}
	start := time.Now()
	if err := write(ctx); err != nil {
		return o, err
	}
	o.Write = time.Since(start)
	start = time.Now()
	if err := p.release(ctx); err != nil {
		return o, err
	}
	o, err := arrived(ctx, p, start, o, timeout)
	if err != nil || o.Incomplete {
		return o, err
	}
	var filled bool
	if err := p.poolB.QueryRow(ctx, "SELECT arrived IS NOT NULL AND arrived >= sent FROM marks_ab WHERE id = $1", endMarker).Scan(&filled); err != nil {
		return o, err
	}
	if !filled {
		return o, errors.New("marks_ab on the target: the apply did not fill the arrived column with its default")
	}
	return o, nil
}

// writeSmall runs n single-row update transactions of the pair's table on
// a from clients concurrent clients.
func writeSmall(ctx context.Context, p *pair, seed, n, clients int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for i := range clients {
		wg.Go(func() {
			conn, err := p.poolA.Acquire(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Release()
			for {
				k := next.Add(1)
				if k > int64(n) {
					return
				}
				id := (k*7919)%int64(seed) + 1
				if _, err := conn.Exec(ctx, p.data.updateOne, id); err != nil {
					errs[i] = fmt.Errorf("update %s id=%d: %w", p.data.table, id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// bigTx inserts rows rows (the dataset's insertBig) in one transaction
// and measures the time until the target has them all.
func bigTx(ctx context.Context, p *pair, rows int, timeout time.Duration) (outcome, error) {
	o := outcome{Rows: int64(rows)}
	start := time.Now()
	if _, err := p.poolA.Exec(ctx, p.data.insertBig, rows); err != nil {
		return o, fmt.Errorf("insert %d rows in one transaction: %w", rows, err)
	}
	o.Write = time.Since(start)
	if err := writeMarker(ctx, p.poolA, "marks_ab", endMarker); err != nil {
		return o, err
	}
	err := waitMarker(ctx, p.poolB, "marks_ab", endMarker, timeout)
	if err == nil {
		err = waitFor(ctx, fmt.Sprintf("the %d new rows on the target", rows), timeout, func(ctx context.Context) (bool, error) {
			var n int
			err := p.poolB.QueryRow(ctx, p.data.countBig).Scan(&n)
			return n == rows, err
		})
	}
	o.Total = time.Since(start)
	if errors.Is(err, errTimeout) {
		// The apply commits in batches: what arrived shows the rate.
		o.Incomplete = true
		return o, p.poolB.QueryRow(ctx, p.data.countBig).Scan(&o.Arrived)
	}
	o.Arrived = o.Rows
	return o, err
}

// steadyResult is what one side's steady load measured.
type steadyResult struct {
	Offered, Achieved float64 // rows/s
	P50, P99, Max     float64 // lag in ms, marker written to marker applied
	Markers           int
	Behind            bool      // the last marker had not arrived within the timeout: lags are lower bounds
	Stopped           time.Time // when the writers stopped
}

// markerEvery is how often a lag marker is written during a steady load.
const markerEvery = 20 * time.Millisecond

// flow is one direction of a steady load: rows written on src, and lag
// markers written into table on src that arrive on dst.
type flow struct {
	src, dst *pgxpool.Pool
	table    string
	// write writes at most n rows in one transaction on src and returns
	// how many it wrote.
	write   func(ctx context.Context, n int64) (int64, error)
	written atomic.Int64
	markers atomic.Int64
}

// rangeFlow is a flow whose writes update the rows of ids in ranges.
func rangeFlow(p *pair, src, dst *pgxpool.Pool, table string, ids cursor) *flow {
	return &flow{src: src, dst: dst, table: table, write: func(ctx context.Context, n int64) (int64, error) {
		from, to := ids.next(n)
		return to - from, updateRange(ctx, p, src, from, to)
	}}
}

// steady offers rate row updates per second for d on each source (a, and
// with twoWay b too, ids split between them), writes a lag marker every
// markerEvery on each, and returns per source the achieved rate and the
// p50/p99 lag of its markers on the other side.
func steady(ctx context.Context, p *pair, seed, rate int, d time.Duration, twoWay bool, timeout time.Duration) ([]steadyResult, error) {
	flows := []*flow{rangeFlow(p, p.poolA, p.poolB, "marks_ab", cursor{0, int64(seed), 0})}
	if twoWay {
		half := int64(seed / 2)
		flows[0] = rangeFlow(p, p.poolA, p.poolB, "marks_ab", cursor{0, half, 0})
		flows = append(flows, rangeFlow(p, p.poolB, p.poolA, "marks_ba", cursor{half, int64(seed), half}))
	}
	return runFlows(ctx, flows, rate, d, timeout)
}

// runFlows offers rate rows per second on every flow for d, in a
// transaction every 10 ms, writes a lag marker every markerEvery on each,
// waits for the last markers (up to timeout), and returns per flow the
// achieved rate and the p50/p99 lag of its markers.
func runFlows(ctx context.Context, flows []*flow, rate int, d, timeout time.Duration) ([]steadyResult, error) {
	runCtx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2*len(flows))
	start := time.Now()
	for i, f := range flows {
		wg.Go(func() { // the offered load: every 10 ms, what is due
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-tick.C:
				}
				due := int64(float64(rate)*time.Since(start).Seconds()) - f.written.Load()
				for due > 0 && runCtx.Err() == nil {
					n, err := f.write(runCtx, min(due, int64(rate/10)+1))
					if err != nil {
						if runCtx.Err() == nil {
							errs[2*i] = err
						}
						return
					}
					f.written.Add(n)
					due -= n
				}
			}
		})
		wg.Go(func() { // the lag markers
			tick := time.NewTicker(markerEvery)
			defer tick.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-tick.C:
				}
				if err := writeMarker(runCtx, f.src, f.table, f.markers.Load()+1); err != nil {
					if runCtx.Err() == nil {
						errs[2*i+1] = err
					}
					return
				}
				f.markers.Add(1)
			}
		})
	}
	wg.Wait()
	stopped := time.Now()
	elapsed := stopped.Sub(start)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make([]steadyResult, len(flows))
	for i, f := range flows {
		last := f.markers.Load()
		err := waitMarker(ctx, f.dst, f.table, last, timeout)
		behind := errors.Is(err, errTimeout)
		if err != nil && !behind {
			return nil, err
		}
		lags, err := markerLags(ctx, f.src, f.dst, f.table, last)
		if err != nil {
			return nil, err
		}
		s := summarize(lags)
		out[i] = steadyResult{Offered: float64(rate), Achieved: float64(f.written.Load()) / elapsed.Seconds(),
			P50: percentile(lags, 0.5), P99: percentile(lags, 0.99), Max: s.Max, Markers: len(lags), Behind: behind, Stopped: stopped}
	}
	return out, nil
}

// markerLags returns the lag in ms of markers 1..last of table: arrived
// on dst minus sent on src. A marker that has not arrived counts with
// its lag so far (a lower bound). An arrived marker without arrived (the
// apply did not fill the default) is an error.
func markerLags(ctx context.Context, src, dst *pgxpool.Pool, table string, last int64) ([]float64, error) {
	sent := map[int64]float64{}
	rows, err := src.Query(ctx, "SELECT id, extract(epoch FROM sent)::float8 FROM "+table+" WHERE id BETWEEN 1 AND $1", last)
	if err != nil {
		return nil, fmt.Errorf("read markers of %s on the source: %w", table, err)
	}
	var id int64
	var at float64
	if _, err := pgx.ForEachRow(rows, []any{&id, &at}, func() error { sent[id] = at; return nil }); err != nil {
		return nil, fmt.Errorf("read markers of %s on the source: %w", table, err)
	}
	var now float64
	if err := dst.QueryRow(ctx, "SELECT extract(epoch FROM clock_timestamp())::float8").Scan(&now); err != nil {
		return nil, err
	}
	arrivedAt := map[int64]float64{}
	var arr *float64
	rows, err = dst.Query(ctx, "SELECT id, extract(epoch FROM arrived)::float8 FROM "+table+" WHERE id BETWEEN 1 AND $1", last)
	if err != nil {
		return nil, fmt.Errorf("read markers of %s on the target: %w", table, err)
	}
	if _, err := pgx.ForEachRow(rows, []any{&id, &arr}, func() error {
		if arr == nil {
			return fmt.Errorf("%s id=%d on the target: arrived is NULL: the apply did not fill the column's default", table, id)
		}
		arrivedAt[id] = *arr
		return nil
	}); err != nil {
		return nil, err
	}
	lags := make([]float64, 0, len(sent))
	for id, s := range sent {
		a, ok := arrivedAt[id]
		if !ok {
			a = now
		}
		lags = append(lags, (a-s)*1000)
	}
	return lags, nil
}

// percentile returns the q-quantile of vs with linear interpolation
// between closest ranks (as PostgreSQL's percentile_cont).
func percentile(vs []float64, q float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(pos)
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[lo] + (pos-float64(lo))*(s[lo+1]-s[lo])
}

// ready writes marker 0 of each flow and waits until it arrived: the
// replication is streaming.
func ready(ctx context.Context, p *pair, twoWay bool) error {
	if err := writeMarker(ctx, p.poolA, "marks_ab", 0); err != nil {
		return err
	}
	if twoWay {
		if err := writeMarker(ctx, p.poolB, "marks_ba", 0); err != nil {
			return err
		}
		if err := waitMarker(ctx, p.poolA, "marks_ba", 0, time.Minute); err != nil {
			return err
		}
	}
	if err := waitMarker(ctx, p.poolB, "marks_ab", 0, time.Minute); err != nil {
		return err
	}
	var arrivedSet bool
	if err := p.poolB.QueryRow(ctx, "SELECT arrived IS NOT NULL AND arrived >= sent FROM marks_ab WHERE id = 0").Scan(&arrivedSet); err != nil {
		return err
	}
	if !arrivedSet {
		return errors.New("marks_ab on the target: the apply did not fill the arrived column with its default")
	}
	return nil
}
