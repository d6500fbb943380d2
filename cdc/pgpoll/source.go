package pgpoll

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/backoff"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// entry is what the source last emitted for a row.
type entry struct {
	seq     uint64 // the emission (0: stored in poll_rows)
	hash    string
	image   []byte // JSON object column -> text or null; nil when deleted
	deleted bool
}

// emitted is one emitted change waiting for its acknowledgement.
type emitted struct {
	pos   pos
	tbl   *tableMeta
	key   string // JSON array of the key columns as text
	entry entry
	wm    mark // the table's watermark once this change is settled
}

// tombBatch lists tombstones consumed once everything up to seq is settled.
type tombBatch struct {
	n   uint64 // identifies the batch
	seq uint64
	ids []int64
}

// progress is the state shared by Stream and Ack.
type progress struct {
	stored  pos       // last stored (acknowledged) position
	pending []emitted // emitted after stored, in order
	prunes  []tombBatch
	batches uint64 // tombBatch.n of the last batch
}

// errFn wraps fn's error so that Stream returns it unchanged.
type errFn struct{ err error }

func (e *errFn) Error() string { return e.err.Error() }
func (e *errFn) Unwrap() error { return e.err }

// run is the state of one Stream call; only its goroutine uses it.
type run struct {
	s       *Source
	st      *progress
	fn      func(context.Context, []duplex.Change) error
	last    pos                 // last emitted
	wm      []mark              // per table
	overlay []map[string]*entry // per table: emitted since the stored state
	history []xidPoint          // for the xid fallback of the safe point
	warned  time.Time           // last warning about a held-back watermark
	lastKD  time.Time

	replaying bool // buffering up to target (Stream's from)
	target    pos
	buffer    []duplex.Change
}

// heldWarn is how far behind the clock the safe point may be before the
// source warns (at most that often).
const heldWarn = time.Minute

// xidPoint is one pass's start time and the next transaction id then.
type xidPoint struct {
	at   time.Time
	xmax uint64
}

// Stream implements duplex.ChangeSource: it polls until ctx is canceled.
// See the package documentation for positions and from.
func (s *Source) Stream(ctx context.Context, from duplex.Position, fn func(context.Context, []duplex.Change) error) error {
	if ctx.Err() != nil {
		return nil
	}
	fromPos, err := parsePos(from)
	if err != nil {
		return err
	}
	var r *run
	for attempt := 1; ; attempt++ {
		if r == nil {
			r, err = s.start(ctx, fromPos, fn)
		}
		if err == nil {
			err = r.pass(ctx)
		}
		if ctx.Err() != nil {
			return nil
		}
		if fe, ok := errors.AsType[*errFn](err); ok {
			return fe.err
		}
		if err == nil {
			attempt = 0
			if !backoff.Sleep(ctx, s.cfg.Interval) {
				return nil
			}
			continue
		}
		err = pgutil.Classify(err)
		if duplex.IsPermanent(err) {
			s.log.ErrorContext(ctx, "stream failed", slog.Any("err", err))
			return err
		}
		s.log.WarnContext(ctx, "poll failed, retrying", slog.Any("err", err), "attempt", attempt)
		if !backoff.Sleep(ctx, s.retry.Delay(attempt)) {
			return nil
		}
	}
}

// start sets up, loads the stored state and makes a run.
func (s *Source) start(ctx context.Context, from pos, fn func(context.Context, []duplex.Change) error) (*run, error) {
	if err := s.Setup(ctx); err != nil {
		return nil, err
	}
	var stored pos
	var p string
	err := s.pool.QueryRow(ctx, "SELECT position FROM "+s.names.position+" WHERE sync = $1 AND system = $2", s.cfg.Sync, s.cfg.System).Scan(&p)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("pgpoll: %s: read stored position: %w", s.cfg.System, err)
	default:
		if stored, err = parsePos(duplex.Position(p)); err != nil {
			return nil, err
		}
	}
	r := &run{s: s, fn: fn, last: stored, wm: make([]mark, len(s.tables)), overlay: make([]map[string]*entry, len(s.tables))}
	for i := range r.overlay {
		r.overlay[i] = make(map[string]*entry)
	}
	rows, err := s.pool.Query(ctx, "SELECT tbl, ts, coalesce(key::text, '') FROM "+s.names.watermark+" WHERE sync = $1 AND system = $2", s.cfg.Sync, s.cfg.System)
	if err != nil {
		return nil, fmt.Errorf("pgpoll: %s: read watermarks: %w", s.cfg.System, err)
	}
	type storedMark struct{ Tbl, TS, Key string }
	marks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[storedMark])
	if err != nil {
		return nil, fmt.Errorf("pgpoll: %s: read watermarks: %w", s.cfg.System, err)
	}
	for _, sm := range marks {
		m, ok := s.byName[sm.Tbl]
		if !ok {
			continue // a table no longer polled
		}
		var wm mark
		if m.wall && hasOffset(sm.TS) {
			// A safe point, stored as the instant: on the wall clock
			// of the writers' zone (as they are today).
			if wm, err = s.wallMark(ctx, sm.TS); err != nil {
				return nil, err
			}
		} else {
			t, err := parseTS(sm.TS)
			if err != nil {
				return nil, fmt.Errorf("pgpoll: watermark of %s: %w", sm.Tbl, err)
			}
			wm = mark{set: true, ts: t, tsText: sm.TS}
		}
		if sm.Key != "" {
			if err := json.Unmarshal([]byte(sm.Key), &wm.key); err != nil {
				return nil, fmt.Errorf("pgpoll: watermark key of %s: %w", sm.Tbl, err)
			}
		}
		r.wm[m.idx] = wm
	}
	if from.seq > stored.seq {
		r.replaying, r.target = true, from
	}
	r.st = &progress{stored: stored}
	s.mu.Lock()
	s.st = r.st
	s.mu.Unlock()
	s.log.InfoContext(ctx, "stream started", "position", string(stored.Position()), "from", string(from.Position()), "replaying", r.replaying)
	return r, nil
}

// acked returns the stored position's sequence number.
func (r *run) acked() uint64 {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.st.stored.seq
}

// pruneOverlay forgets emissions that are stored in poll_rows: the queries
// that follow read them from there.
func (r *run) pruneOverlay() {
	acked := r.acked()
	for _, ov := range r.overlay {
		for k, e := range ov {
			if e.seq <= acked {
				delete(ov, k)
			}
		}
	}
}

// safePoint is what a pass learned before it read any row.
type safePoint struct {
	now  time.Time // statement_timestamp(), CommitTime of detected deletes
	safe time.Time // no row committed later has an earlier timestamp; zero: unknown
	inst mark      // safe, for timestamptz columns; unset when unknown
	wall mark      // safe, for timestamp columns (Source.wallMark); unset when unknown or none is polled
}

// mark returns the safe point in the terms of m's timestamp column.
func (sp safePoint) mark(m *tableMeta) mark {
	if m.wall {
		return sp.wall
	}
	return sp.inst
}

// wallMark returns the safe point at (an instant, in tsLayout) as a mark of
// a timestamp (without time zone) column that the writers set in the zone
// s.zone: the wall-clock time there, held back so that no row written
// later reads earlier. When clocks go back, wall-clock times repeat: at
// 05:30 UTC on 2025-11-02 New York reads 01:30, and half an hour later
// 01:00 again. So the mark is the earlier of the wall-clock time at at and
// the one 3 hours later minus 3 hours: the same when clocks do not go back
// in between, and as far back as they go when they do (by up to 3 hours).
// The conversion is PostgreSQL's, as the writers' now() was.
func (s *Source) wallMark(ctx context.Context, at string) (mark, error) {
	var text string
	err := s.pool.QueryRow(ctx, `SELECT least($1::timestamptz AT TIME ZONE $2::text,
		($1::timestamptz + interval '3 hours') AT TIME ZONE $2::text - interval '3 hours')::text`, at, s.zone).Scan(&text)
	if err != nil {
		return mark{}, fmt.Errorf("pgpoll: %s: safe point %s in time zone %s: %w", s.cfg.System, at, s.zone, err)
	}
	ts, err := parseTS(text)
	if err != nil {
		return mark{}, err
	}
	return mark{set: true, ts: ts, tsText: text, at: at}, nil
}

// xidMargin is the least margin of the xid approach (see the package
// documentation) before the pass after which the oldest transaction that
// may still commit got its id: a writer paused between taking a row's
// timestamp and getting its id (a busy machine's scheduler, a slow BEFORE
// trigger) can take longer than the pass before.
const xidMargin = 100 * time.Millisecond

// safePoint reads the clock, the open transactions and the snapshot, before
// any row of the pass is read.
func (r *run) safePoint(ctx context.Context) (safePoint, error) {
	var sp safePoint
	var xmin, xmax string
	var oldest *time.Time
	var hidden int64
	err := r.s.pool.QueryRow(ctx, `
		SELECT statement_timestamp(),
			pg_snapshot_xmin(pg_current_snapshot())::text,
			pg_snapshot_xmax(pg_current_snapshot())::text,
			(SELECT min(xact_start) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid()
				AND backend_type NOT IN ('autovacuum worker', 'autovacuum launcher', 'walsender')),
			(SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid()
				AND backend_type IS NULL)`).Scan(&sp.now, &xmin, &xmax, &oldest, &hidden)
	if err != nil {
		return sp, fmt.Errorf("pgpoll: %s: read safe point: %w", r.s.cfg.System, err)
	}
	sp.safe = sp.now
	if oldest != nil && oldest.Before(sp.safe) {
		sp.safe = *oldest
	}
	if hidden > 0 {
		// Some sessions are hidden: bound them by transaction ids. The
		// oldest transaction that may still commit is the oldest in flight
		// (xmin), or the next to get an id (xmax). It got its id after the
		// last pass j whose xmax was not above it; its timestamps are
		// taken at about its first write, so no earlier than pass j-1
		// (one pass of margin for the time between taking the timestamp,
		// in a BEFORE trigger say, and getting the id).
		lo, err1 := strconv.ParseUint(xmin, 10, 64)
		hi, err2 := strconv.ParseUint(xmax, 10, 64)
		if err1 != nil || err2 != nil {
			return sp, fmt.Errorf("pgpoll: %s: snapshot %s..%s: %w", r.s.cfg.System, xmin, xmax, errors.Join(err1, err2))
		}
		r.history = append(r.history, xidPoint{at: sp.now, xmax: hi})
		j := -1
		for i, h := range r.history {
			if h.xmax <= lo {
				j = i
			}
		}
		if j < 1 {
			sp.safe = time.Time{} // not known yet: do not advance
		} else {
			capAt := r.history[j].at.Add(-xidMargin)
			r.history = r.history[j-1:]
			if r.history[0].at.Before(capAt) {
				capAt = r.history[0].at
			}
			if capAt.Before(sp.safe) {
				sp.safe = capAt
			}
		}
	}
	if !sp.safe.IsZero() {
		sp.safe = sp.safe.Add(-r.s.cfg.Overlap).Truncate(time.Microsecond)
		sp.inst = safeMark(sp.safe)
		if r.s.zone != "" {
			if sp.wall, err = r.s.wallMark(ctx, sp.inst.tsText); err != nil {
				return sp, err
			}
		}
	}
	if held := sp.now.Sub(sp.safe); !sp.safe.IsZero() && held > heldWarn && time.Since(r.warned) > heldWarn {
		r.warned = time.Now()
		r.s.log.WarnContext(ctx, "an open transaction holds the watermark back; rows since are read again at every pass",
			"held_for", held.Round(time.Second), "hidden_sessions", hidden)
	}
	return sp, nil
}

// pass polls every table once, then detects deletes.
func (r *run) pass(ctx context.Context) error {
	if err := r.flushPrunes(ctx); err != nil {
		return err
	}
	sp, err := r.safePoint(ctx)
	if err != nil {
		return err
	}
	for _, m := range r.s.tables {
		if err := r.scan(ctx, m, sp); err != nil {
			return err
		}
	}
	switch r.s.cfg.DeleteDetection {
	case DeletesTombstones:
		for _, m := range r.s.tables {
			if err := r.tombstones(ctx, m, sp); err != nil {
				return err
			}
		}
	case DeletesKeyDiff:
		if time.Since(r.lastKD) >= r.s.cfg.KeyDiffEvery {
			for _, m := range r.s.tables {
				if err := r.keyDiff(ctx, m, sp); err != nil {
					return err
				}
			}
			r.lastKD = time.Now()
		}
	}
	if r.replaying && r.last.seq < r.target.seq {
		// A whole pass did not reach from: what was emitted before is not
		// what is emitted now.
		return r.diverge(ctx)
	}
	return nil
}

// pageSQL returns the query for the page after cursor c; zone is the
// writers' zone of a timestamp (without time zone) column.
func (m *tableMeta) pageSQL(names stateNames, zone string, c mark, limit int) (string, []any) {
	args := []any{nil, nil, m.name} // $1, $2: sync and system, set by the caller
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	ts := "t." + pgutil.QuoteIdent(m.cols[m.ts].name)
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, col := range m.cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("t." + pgutil.QuoteIdent(col.name))
	}
	keyText := make([]string, len(m.key))
	for i, k := range m.key {
		keyText[i] = "t." + pgutil.QuoteIdent(m.cols[k].name) + "::text"
	}
	for _, k := range keyText {
		b.WriteString(", " + k)
	}
	// A lateral lookup per row (LIMIT 1 keeps the planner from flattening
	// it): a join may scan poll_rows whole per row while its statistics
	// lag behind its growth.
	b.WriteString(", r.hash, r.image::text")
	if m.wall {
		// The instant the wall-clock time stands for, for CommitTime.
		b.WriteString(", (" + ts + " AT TIME ZONE " + arg(zone) + "::text)::text")
	}
	b.WriteString(" FROM " + m.quoted + " t LEFT JOIN LATERAL (SELECT hash, image FROM " + names.rows +
		" WHERE sync = $1 AND system = $2 AND tbl = $3 AND key = jsonb_build_array(" + strings.Join(keyText, ", ") + ") LIMIT 1) r ON true")
	b.WriteString(" WHERE " + ts + " IS NOT NULL")
	switch {
	case !c.set:
	case c.key == nil:
		fmt.Fprintf(&b, " AND %s >= %s::%s", ts, arg(c.tsText), m.cols[m.ts].typ)
	default:
		lhs := []string{ts}
		rhs := []string{arg(c.tsText) + "::" + m.cols[m.ts].typ}
		for i, k := range m.key {
			lhs = append(lhs, "t."+pgutil.QuoteIdent(m.cols[k].name))
			rhs = append(rhs, arg(c.key[i])+"::"+m.cols[k].typ)
		}
		fmt.Fprintf(&b, " AND (%s) > (%s)", strings.Join(lhs, ", "), strings.Join(rhs, ", "))
	}
	order := []string{ts}
	for _, k := range m.key {
		order = append(order, "t."+pgutil.QuoteIdent(m.cols[k].name))
	}
	fmt.Fprintf(&b, " ORDER BY %s LIMIT %d", strings.Join(order, ", "), limit)
	return b.String(), args
}

// textFormat asks for every result column in text form: PostgreSQL's own
// output, which the decoders expect and the images store.
var textFormat = pgx.QueryResultFormats{pgx.TextFormatCode}

// scan reads a table from its watermark to its end, page by page, and
// emits the rows whose content changed since they were last emitted.
func (r *run) scan(ctx context.Context, m *tableMeta, sp safePoint) error {
	start := r.wm[m.idx]
	cur := start
	ncol := len(m.cols)
	for {
		r.pruneOverlay()
		t0 := time.Now()
		sql, args := m.pageSQL(r.s.names, r.s.zone, cur, r.s.cfg.PageSize)
		args[0], args[1] = r.s.cfg.Sync, r.s.cfg.System
		rows, err := r.s.pool.Query(ctx, sql, append([]any{textFormat}, args...)...)
		if err != nil {
			return fmt.Errorf("pgpoll: poll %s: %w", m.table, err)
		}
		var changes []duplex.Change
		var ems []emitted
		last := r.last
		n := 0
		for rows.Next() {
			n++
			raw := rows.RawValues()
			texts := make([]*string, ncol)
			for i := range ncol {
				if raw[i] != nil {
					s := string(raw[i])
					texts[i] = &s
				}
			}
			keyTexts := make([]string, len(m.key))
			for i := range m.key {
				keyTexts[i] = string(raw[ncol+i])
			}
			if texts[m.ts] == nil {
				continue
			}
			ts, err := parseTS(*texts[m.ts])
			if err != nil {
				rows.Close()
				return fmt.Errorf("pgpoll: %s column %s: %w", m.table, m.cols[m.ts].name, err)
			}
			cur = mark{set: true, ts: ts, tsText: *texts[m.ts], key: keyTexts}
			commit := ts
			if m.wall {
				if commit, err = parseTS(string(raw[ncol+len(m.key)+2])); err != nil {
					rows.Close()
					return fmt.Errorf("pgpoll: %s column %s in time zone %s: %w", m.table, m.cols[m.ts].name, r.s.zone, err)
				}
			}
			key := keyJSON(keyTexts)
			hash := m.hash(texts)
			prev := r.overlay[m.idx][key]
			if prev == nil && raw[ncol+len(m.key)] != nil {
				prev = &entry{hash: string(raw[ncol+len(m.key)]), image: slices.Clone(raw[ncol+len(m.key)+1])}
			}
			if prev != nil && !prev.deleted && prev.hash == hash {
				continue // unchanged since it was last emitted: a re-read or an echo
			}
			image, err := m.image(texts)
			if err != nil {
				rows.Close()
				return err
			}
			c := duplex.Change{Source: r.s.cfg.System, Table: m.table, Op: duplex.OpInsert, CommitTime: commit}
			if c.After, err = m.decode(texts); err != nil {
				rows.Close()
				return err
			}
			c.Key = m.keyOf(c.After)
			beforeHash := ""
			if prev != nil && !prev.deleted {
				c.Op, beforeHash = duplex.OpUpdate, prev.hash
				if c.Before, err = m.decodeImage(prev.image); err != nil {
					rows.Close()
					return fmt.Errorf("pgpoll: last image of %s %s: %w", m.table, c.Key, err)
				}
			}
			c.ID = r.s.changeID(m, key, c.Op, beforeHash, hash)
			last = last.next(c.ID)
			c.Position = last.Position()
			changes = append(changes, c)
			ems = append(ems, emitted{pos: last, tbl: m, key: key, entry: entry{seq: last.seq, hash: hash, image: image},
				wm: capped(start, sp.mark(m), cur)})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("pgpoll: poll %s: %w", m.table, err)
		}
		t1 := time.Now()
		if err := r.deliver(ctx, changes, ems, nil); err != nil {
			return err
		}
		r.s.log.DebugContext(ctx, "page read", "table", m.name, "rows", n, "changes", len(changes), "cursor", cur.tsText, "read", t1.Sub(t0), "delivered", time.Since(t1))
		if n < r.s.cfg.PageSize {
			break
		}
	}
	// Every row visible now was read: later commits have timestamps from
	// the safe point on.
	r.wm[m.idx] = capped(start, sp.mark(m), mark{})
	return nil
}

// deliver hands changes to fn (or to the replay buffer) and records them as
// emitted once fn accepted them. prune lists tombstones they consume.
func (r *run) deliver(ctx context.Context, changes []duplex.Change, ems []emitted, prune []int64) error {
	if len(changes) == 0 {
		r.record(nil, prune)
		return nil
	}
	if r.replaying {
		r.record(ems, prune)
		r.buffer = append(r.buffer, changes...)
		i := slices.IndexFunc(ems, func(e emitted) bool { return e.pos.seq == r.target.seq })
		if i < 0 {
			return nil
		}
		if ems[i].pos.chain != r.target.chain {
			return r.diverge(ctx)
		}
		// The replay is what was delivered up to from: skip it.
		rest := slices.Clone(r.buffer[len(r.buffer)-len(changes)+i+1:])
		r.replaying, r.buffer = false, nil
		r.s.log.InfoContext(ctx, "replayed up to from", "position", string(r.target.Position()))
		return r.call(ctx, rest)
	}
	// Recorded first: the caller may Ack a change before fn returns.
	r.record(ems, prune)
	return r.call(ctx, changes)
}

func (r *run) call(ctx context.Context, changes []duplex.Change) error {
	if len(changes) == 0 {
		return nil
	}
	if err := r.fn(ctx, changes); err != nil {
		return &errFn{err: err}
	}
	return nil
}

// record notes emitted changes as pending and in the overlay.
func (r *run) record(ems []emitted, prune []int64) {
	for _, e := range ems {
		en := e.entry
		r.overlay[e.tbl.idx][e.key] = &en
		r.last = e.pos
	}
	r.s.mu.Lock()
	r.st.pending = append(r.st.pending, ems...)
	if len(prune) > 0 {
		r.st.batches++
		r.st.prunes = append(r.st.prunes, tombBatch{n: r.st.batches, seq: r.last.seq, ids: prune})
	}
	r.s.mu.Unlock()
}

// flushPrunes drops the tombstones consumed by changes already settled (an
// Ack may have come before they were recorded).
func (r *run) flushPrunes(ctx context.Context) error {
	r.s.mu.Lock()
	var ids []int64
	var done []uint64
	for _, b := range r.st.prunes {
		if b.seq <= r.st.stored.seq {
			ids = append(ids, b.ids...)
			done = append(done, b.n)
		}
	}
	r.s.mu.Unlock()
	if len(done) == 0 {
		return nil
	}
	if _, err := r.s.pool.Exec(ctx, "DELETE FROM "+r.s.names.tombstones+" WHERE id = ANY($1)", ids); err != nil {
		return fmt.Errorf("pgpoll: %s: drop consumed tombstones: %w", r.s.cfg.System, err)
	}
	r.s.mu.Lock()
	r.st.dropPrunes(done)
	r.s.mu.Unlock()
	return nil
}

// dropPrunes forgets the tombstone batches numbered done.
func (st *progress) dropPrunes(done []uint64) {
	st.prunes = slices.DeleteFunc(st.prunes, func(b tombBatch) bool { return slices.Contains(done, b.n) })
}

// diverge ends a replay whose changes are not the ones delivered before
// from: they are delivered again, numbered after from (the Pipeline's dedup
// recognises their IDs).
func (r *run) diverge(ctx context.Context) error {
	r.s.log.WarnContext(ctx, "replay differs from what was delivered up to from; delivering it again after from",
		"from", string(r.target.Position()), "replayed", len(r.buffer))
	base := r.st.stored.seq
	p := r.target
	r.s.mu.Lock()
	for i := range r.st.pending {
		e := &r.st.pending[i]
		p = p.next(r.buffer[i].ID)
		e.pos, e.entry.seq = p, p.seq
		r.buffer[i].Position = p.Position()
		if ov := r.overlay[e.tbl.idx][e.key]; ov != nil && ov.seq > base {
			ov.seq = p.seq // the key's last emission is the latest one renumbered
		}
	}
	for i := range r.st.prunes {
		if b := &r.st.prunes[i]; b.seq > base {
			b.seq += r.target.seq - base
		}
	}
	r.s.mu.Unlock()
	r.last = p
	buf := r.buffer
	r.replaying, r.buffer = false, nil
	return r.call(ctx, buf)
}

// candidate is a key that may have been deleted, with its last image.
type candidate struct {
	key  string
	prev *entry
}

// emitDeletes emits a delete for each candidate whose row is gone.
func (r *run) emitDeletes(ctx context.Context, m *tableMeta, sp safePoint, cands []candidate, prune []int64) error {
	if len(cands) == 0 {
		return r.deliver(ctx, nil, nil, prune)
	}
	keys := make([]json.RawMessage, len(cands))
	for i, c := range cands {
		keys[i] = json.RawMessage(c.key)
	}
	arr, _ := json.Marshal(keys)
	var conds []string
	for i, k := range m.key {
		conds = append(conds, fmt.Sprintf("t.%s = (k->>%d)::%s", pgutil.QuoteIdent(m.cols[k].name), i, m.cols[k].typ))
	}
	rows, err := r.s.pool.Query(ctx, "SELECT k::text FROM jsonb_array_elements($1::jsonb) AS k WHERE NOT EXISTS (SELECT 1 FROM "+
		m.quoted+" t WHERE "+strings.Join(conds, " AND ")+")", string(arr))
	if err != nil {
		return fmt.Errorf("pgpoll: find deleted keys of %s: %w", m.table, err)
	}
	gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("pgpoll: find deleted keys of %s: %w", m.table, err)
	}
	goneSet := make(map[string]bool, len(gone))
	for _, g := range gone {
		goneSet[canonicalKey(g)] = true
	}
	var changes []duplex.Change
	var ems []emitted
	last := r.last
	for _, c := range cands {
		if !goneSet[c.key] {
			continue
		}
		before, err := m.decodeImage(c.prev.image)
		if err != nil {
			return fmt.Errorf("pgpoll: last image of %s key %s: %w", m.table, c.key, err)
		}
		ch := duplex.Change{Source: r.s.cfg.System, Table: m.table, Op: duplex.OpDelete, Key: m.keyOf(before), Before: before, CommitTime: sp.now}
		ch.ID = r.s.changeID(m, c.key, duplex.OpDelete, c.prev.hash, "")
		last = last.next(ch.ID)
		ch.Position = last.Position()
		changes = append(changes, ch)
		ems = append(ems, emitted{pos: last, tbl: m, key: c.key, entry: entry{seq: last.seq, deleted: true}, wm: r.wm[m.idx]})
	}
	return r.deliver(ctx, changes, ems, prune)
}

// liveOverlay returns the keys of m emitted as live since the stored state.
func (r *run) liveOverlay(m *tableMeta) []candidate {
	var out []candidate
	for k, e := range r.overlay[m.idx] {
		if !e.deleted {
			out = append(out, candidate{key: k, prev: e})
		}
	}
	return out
}

// keyDiff emits deletes for the keys last emitted as live that the table
// no longer has.
func (r *run) keyDiff(ctx context.Context, m *tableMeta, sp safePoint) error {
	r.pruneOverlay()
	var conds []string
	for i, k := range m.key {
		conds = append(conds, fmt.Sprintf("t.%s = (r.key->>%d)::%s", pgutil.QuoteIdent(m.cols[k].name), i, m.cols[k].typ))
	}
	rows, err := r.s.pool.Query(ctx, "SELECT r.key::text, r.hash, r.image::text FROM "+r.s.names.rows+
		" r WHERE r.sync = $1 AND r.system = $2 AND r.tbl = $3 AND NOT EXISTS (SELECT 1 FROM "+m.quoted+" t WHERE "+
		strings.Join(conds, " AND ")+")", r.s.cfg.Sync, r.s.cfg.System, m.name)
	if err != nil {
		return fmt.Errorf("pgpoll: key diff of %s: %w", m.table, err)
	}
	var cands []candidate
	for rows.Next() {
		var key, hash, image string
		if err := rows.Scan(&key, &hash, &image); err != nil {
			rows.Close()
			return fmt.Errorf("pgpoll: key diff of %s: %w", m.table, err)
		}
		key = canonicalKey(key)
		if _, ok := r.overlay[m.idx][key]; ok {
			continue // emitted since: checked below
		}
		cands = append(cands, candidate{key: key, prev: &entry{hash: hash, image: []byte(image)}})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgpoll: key diff of %s: %w", m.table, err)
	}
	cands = append(cands, r.liveOverlay(m)...)
	slices.SortFunc(cands, func(a, b candidate) int { return strings.Compare(a.key, b.key) })
	return r.emitDeletes(ctx, m, sp, cands, nil)
}

// tombstones emits deletes for the keys the tombstone trigger recorded.
func (r *run) tombstones(ctx context.Context, m *tableMeta, sp safePoint) error {
	r.pruneOverlay()
	rows, err := r.s.pool.Query(ctx, "SELECT id, key::text FROM "+r.s.names.tombstones+
		" WHERE sync = $1 AND system = $2 AND tbl = $3 ORDER BY id LIMIT $4", r.s.cfg.Sync, r.s.cfg.System, m.name, 10*r.s.cfg.PageSize)
	if err != nil {
		return fmt.Errorf("pgpoll: read tombstones of %s: %w", m.table, err)
	}
	var ids []int64
	var keys []string
	seen := map[string]bool{}
	for rows.Next() {
		var id int64
		var key string
		if err := rows.Scan(&id, &key); err != nil {
			rows.Close()
			return fmt.Errorf("pgpoll: read tombstones of %s: %w", m.table, err)
		}
		ids = append(ids, id)
		if key = canonicalKey(key); !seen[key] {
			seen[key] = true
			keys = append(keys, key)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgpoll: read tombstones of %s: %w", m.table, err)
	}
	if len(ids) == 0 {
		return nil
	}
	var cands []candidate
	var unknown []string
	for _, k := range keys {
		if e, ok := r.overlay[m.idx][k]; ok {
			if !e.deleted {
				cands = append(cands, candidate{key: k, prev: e})
			}
			continue
		}
		unknown = append(unknown, k)
	}
	if len(unknown) > 0 {
		rows, err := r.s.pool.Query(ctx, "SELECT key::text, hash, image::text FROM "+r.s.names.rows+
			" WHERE sync = $1 AND system = $2 AND tbl = $3 AND key = ANY($4::jsonb[])", r.s.cfg.Sync, r.s.cfg.System, m.name, unknown)
		if err != nil {
			return fmt.Errorf("pgpoll: last images of tombstones of %s: %w", m.table, err)
		}
		for rows.Next() {
			var key, hash, image string
			if err := rows.Scan(&key, &hash, &image); err != nil {
				rows.Close()
				return err
			}
			cands = append(cands, candidate{key: canonicalKey(key), prev: &entry{hash: hash, image: []byte(image)}})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("pgpoll: last images of tombstones of %s: %w", m.table, err)
		}
	}
	order := make(map[string]int, len(keys))
	for i, k := range keys {
		order[k] = i
	}
	slices.SortFunc(cands, func(a, b candidate) int { return order[a.key] - order[b.key] })
	return r.emitDeletes(ctx, m, sp, cands, ids)
}

// Ack implements duplex.ChangeSource: it stores, in one transaction, the
// images, watermarks and position of every change up to p, and drops the
// tombstones they consumed. Acks of positions at or before the stored one
// do nothing.
func (s *Source) Ack(ctx context.Context, p duplex.Position) error {
	q, err := parsePos(p)
	if err != nil {
		return err
	}
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	s.mu.Lock()
	st := s.st
	if st == nil || q.seq <= st.stored.seq {
		s.mu.Unlock()
		return nil
	}
	n, _ := slices.BinarySearchFunc(st.pending, q.seq, func(e emitted, seq uint64) int { return compareU(e.pos.seq, seq) })
	if n >= len(st.pending) || st.pending[n].pos != q {
		s.mu.Unlock()
		return duplex.Permanent(fmt.Errorf("pgpoll: %s: Ack(%s): not a position this source delivered", s.cfg.System, p))
	}
	batch := slices.Clone(st.pending[:n+1])
	var prune []int64
	var done []uint64
	for _, b := range st.prunes {
		if b.seq <= q.seq {
			prune = append(prune, b.ids...)
			done = append(done, b.n)
		}
	}
	s.mu.Unlock()

	if err := s.store(ctx, q, batch, prune); err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st != st { // a new Stream started meanwhile
		return nil
	}
	k := 0
	for k < len(st.pending) && st.pending[k].pos.seq <= q.seq {
		k++
	}
	st.pending = slices.Delete(st.pending, 0, k)
	st.dropPrunes(done)
	st.stored = q
	return nil
}

func compareU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// store writes the state of the changes in batch, settled up to q.
func (s *Source) store(ctx context.Context, q pos, batch []emitted, prune []int64) error {
	type rowKey struct{ tbl, key string }
	lastRow := make(map[rowKey]entry, len(batch))
	lastWM := make(map[string]mark)
	for _, e := range batch {
		lastRow[rowKey{e.tbl.name, e.key}] = e.entry
		lastWM[e.tbl.name] = e.wm
	}
	var upT, upK, upH, upI, delT, delK []string
	for k, e := range lastRow {
		if e.deleted {
			delT, delK = append(delT, k.tbl), append(delK, k.key)
			continue
		}
		upT, upK, upH, upI = append(upT, k.tbl), append(upK, k.key), append(upH, e.hash), append(upI, string(e.image))
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if len(upT) > 0 {
			if _, err := tx.Exec(ctx, "INSERT INTO "+s.names.rows+` (sync, system, tbl, key, hash, image)
				SELECT $1, $2, x.tbl, x.key::jsonb, x.hash, x.image::jsonb FROM unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS x(tbl, key, hash, image)
				ON CONFLICT (sync, system, tbl, key) DO UPDATE SET hash = excluded.hash, image = excluded.image`,
				s.cfg.Sync, s.cfg.System, upT, upK, upH, upI); err != nil {
				return fmt.Errorf("store emitted images: %w", err)
			}
		}
		if len(delT) > 0 {
			if _, err := tx.Exec(ctx, "DELETE FROM "+s.names.rows+` r USING unnest($3::text[], $4::text[]) AS x(tbl, key)
				WHERE r.sync = $1 AND r.system = $2 AND r.tbl = x.tbl AND r.key = x.key::jsonb`,
				s.cfg.Sync, s.cfg.System, delT, delK); err != nil {
				return fmt.Errorf("forget deleted rows: %w", err)
			}
		}
		for tbl, wm := range lastWM {
			if !wm.set {
				continue
			}
			var key any
			if wm.key != nil {
				b, _ := json.Marshal(wm.key)
				key = string(b)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+s.names.watermark+` (sync, system, tbl, ts, key) VALUES ($1, $2, $3, $4, $5::jsonb)
				ON CONFLICT (sync, system, tbl) DO UPDATE SET ts = excluded.ts, key = excluded.key, updated_at = now()`,
				s.cfg.Sync, s.cfg.System, tbl, wm.stored(), key); err != nil {
				return fmt.Errorf("store watermark of %s: %w", tbl, err)
			}
		}
		if len(prune) > 0 {
			if _, err := tx.Exec(ctx, "DELETE FROM "+s.names.tombstones+" WHERE id = ANY($1)", prune); err != nil {
				return fmt.Errorf("drop consumed tombstones: %w", err)
			}
		}
		_, err := tx.Exec(ctx, "INSERT INTO "+s.names.position+` (sync, system, position) VALUES ($1, $2, $3)
			ON CONFLICT (sync, system) DO UPDATE SET position = excluded.position, updated_at = now()`,
			s.cfg.Sync, s.cfg.System, string(q.Position()))
		return err
	})
	if err != nil {
		return pgutil.Classify(fmt.Errorf("pgpoll: %s: Ack(%s): %w", s.cfg.System, q.Position(), err))
	}
	return nil
}

// changeID derives a change's ID from what it is: the same change read
// again (after a restart or from the overlap) gets the same ID.
func (s *Source) changeID(m *tableMeta, key string, op duplex.Op, before, after string) string {
	h := sha256.New()
	for _, part := range []string{s.cfg.Sync, s.cfg.System, m.name, key, op.String(), before, after} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return "poll:" + pgutil.Sanitize(s.cfg.System) + ":" + hex.EncodeToString(h.Sum(nil)[:16])
}

// keyJSON renders key columns (as text) as a JSON array, the form of
// poll_rows.key.
func keyJSON(texts []string) string {
	b, _ := json.Marshal(texts)
	return string(b)
}

// canonicalKey re-renders a key read back from jsonb in keyJSON's form.
func canonicalKey(s string) string {
	var texts []string
	if json.Unmarshal([]byte(s), &texts) != nil {
		return s
	}
	return keyJSON(texts)
}

// hash returns the hash of a row's content (every column's text form).
func (m *tableMeta) hash(texts []*string) string {
	h := sha256.New()
	var n [8]byte
	for i, c := range m.cols {
		h.Write([]byte(c.name))
		if texts[i] == nil {
			h.Write([]byte{0, 'n'})
			continue
		}
		h.Write([]byte{0, 'v'})
		l := len(*texts[i])
		for j := range n {
			n[j] = byte(l >> (8 * j))
		}
		h.Write(n[:])
		h.Write([]byte(*texts[i]))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// image renders a row as the JSON object poll_rows.image stores.
func (m *tableMeta) image(texts []*string) ([]byte, error) {
	obj := make(map[string]*string, len(m.cols))
	for i, c := range m.cols {
		obj[c.name] = texts[i]
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("pgpoll: image of a row of %s: %w", m.table, err)
	}
	return b, nil
}

// decode decodes a row's text values.
func (m *tableMeta) decode(texts []*string) (duplex.Values, error) {
	v := make(duplex.Values, len(m.cols))
	for i, c := range m.cols {
		if texts[i] == nil {
			v[c.name] = nil
			continue
		}
		x, err := c.decode([]byte(*texts[i]))
		if err != nil {
			return nil, fmt.Errorf("pgpoll: %s column %s: %w", m.table, c.name, err)
		}
		v[c.name] = x
	}
	return v, nil
}

// decodeImage decodes a stored image; columns the table no longer has are
// left out.
func (m *tableMeta) decodeImage(image []byte) (duplex.Values, error) {
	var obj map[string]*string
	if err := json.Unmarshal(image, &obj); err != nil {
		return nil, err
	}
	v := make(duplex.Values, len(m.cols))
	for _, c := range m.cols {
		t, ok := obj[c.name]
		if !ok {
			continue
		}
		if t == nil {
			v[c.name] = nil
			continue
		}
		x, err := c.decode([]byte(*t))
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", c.name, err)
		}
		v[c.name] = x
	}
	return v, nil
}

// keyOf returns the primary key of a decoded row.
func (m *tableMeta) keyOf(row duplex.Values) duplex.Key {
	k := make(duplex.Key, len(m.key))
	for i, ki := range m.key {
		name := m.cols[ki].name
		k[i] = duplex.Column{Name: name, Value: row[name]}
	}
	return k
}
