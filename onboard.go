// Onboarding: the first start (and ReconcileTables) compares both systems table by
// table in key order and makes them agree, recording agreements as it goes.

package duplex

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Scanner is implemented by Appliers that can read a table's rows in
// primary-key order (apply/applypg's Applier does). Onboarding compares the
// two systems' tables range by range through it.
type Scanner interface {
	// ScanRange returns up to limit rows of t (limit <= 0: no limit) whose
	// keys come after after (nil: from the first) and not after upTo (nil:
	// no bound), in the table's key order, with their keys. Rows carry
	// CommitTimeField when the Applier's Lookup does.
	ScanRange(ctx context.Context, t Table, after, upTo Key, limit int) ([]Key, []Values, error)
	// KeyText renders a key of t as text that ParseKeyText reads back: the
	// progress onboarding records.
	KeyText(ctx context.Context, t Table, k Key) (string, error)
	// ParseKeyText reads a key of t back from KeyText's text.
	ParseKeyText(ctx context.Context, t Table, s string) (Key, error)
	// EstimateRows returns the catalog's estimate of t's row count (for an
	// ETA; 0 when unknown).
	EstimateRows(ctx context.Context, t Table) (int64, error)
}

// SnapshotExporter is implemented by ChangeSources that, when they created
// their capture point (cdc/pglogical: the replication slot, with
// EXPORT_SNAPSHOT), exported a snapshot of the database as of that point:
// every transaction the snapshot does not see is captured. Onboarding reads
// at it on the first start, so rows it reads and changes the stream brings
// meet exactly: none in both, none in neither.
type SnapshotExporter interface {
	// Snapshot returns the exported snapshot's name, "" when there is none
	// (the capture point existed already, or it was released).
	Snapshot() string
	// ReleaseSnapshot gives the snapshot up.
	ReleaseSnapshot()
}

// SnapshotScanner is a Scanner that can read at an exported snapshot
// (apply/applypg's Applier can).
type SnapshotScanner interface {
	// ScanRangeAt is ScanRange in a transaction that sees the database as
	// the snapshot named snapshot does.
	ScanRangeAt(ctx context.Context, snapshot string, t Table, after, upTo Key, limit int) ([]Key, []Values, error)
}

// defaultOnboardingChunk is the default of OnboardingConfig.ChunkSize.
const defaultOnboardingChunk = 5000

// OnboardingConfig configures the onboarding of a Sync: on its first start,
// before streaming, the rows both systems already hold are brought
// together (see Sync.Onboard).
type OnboardingConfig struct {
	// Disabled skips onboarding (for systems known to hold the same rows,
	// or when only changes from now on should move).
	Disabled bool
	// Tables are the tables to onboard. Required for onboarding to run;
	// nil: onboarding is skipped, with a warning.
	Tables []Table
	// ChunkSize is how many keys of one side a chunk covers (0:
	// 5,000). Each chunk commits on each system in one
	// transaction with its progress.
	ChunkSize int
	// Progress, when set, receives the counts after every chunk, and once
	// more (Done set) when a table is finished. It must not block.
	Progress func(OnboardingProgress)
	// LogEvery is how often progress is logged. 0: every 5 seconds.
	LogEvery time.Duration
}

// OnboardingProgress counts what onboarding did to one table in this run.
type OnboardingProgress struct {
	Table Table
	// Compared counts the keys looked at (each key once, whichever side
	// holds it).
	Compared int64
	// Copied counts the rows present on one side only, copied to the other.
	Copied int64
	// Agreed counts the rows both sides held equal, recorded as agreed.
	Agreed int64
	// Decided counts the rows both sides held differently that the
	// Resolver decided, written where they differed.
	Decided int64
	// Held counts the rows the Resolver could not decide: dead-lettered
	// with both rows, both sides untouched.
	Held int64
	// Deferred counts the keys left to the stream because a side changed
	// them while onboarding ran (their change is merged when it arrives).
	Deferred int64
	// Estimate is the catalog's row estimate of the larger side (0:
	// unknown).
	Estimate int64
	// Elapsed is the time this run has spent on the table.
	Elapsed time.Duration
	// Done is set in the last report of the table.
	Done bool
	// Skipped is set when the table was onboarded by an earlier run.
	Skipped bool
}

// Rate returns the keys compared per second.
func (p OnboardingProgress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Compared) / p.Elapsed.Seconds()
}

// ETA estimates the time left from Estimate and Rate (0: unknown or done).
func (p OnboardingProgress) ETA() time.Duration {
	r := p.Rate()
	if p.Done || r <= 0 || p.Estimate <= p.Compared {
		return 0
	}
	return time.Duration(float64(p.Estimate-p.Compared) / r * float64(time.Second))
}

// onboardingSource names the progress of a table's onboarding among a
// system's checkpoints (a Pipeline's checkpoints are named after a system,
// which never starts with "onboarding:").
func onboardingSource(t Table) string { return "onboarding:" + t.String() }

// onboardingDone is the progress of a finished table.
const onboardingDone = "done"

// ErrOnboarding is returned by the actions that write agreement records
// (Resolve, Reconcile, KeepBoth, ReconcileTables, a second Onboard) while
// a Sync onboards: onboarding writes the records of its chunks without
// comparing them first, so it would overwrite theirs. Try again when it
// has finished.
var ErrOnboarding = errors.New("duplex: onboarding is running; try again when it has finished")

// refuseWhileOnboarding returns ErrOnboarding, naming what, while s
// onboards.
func (s *Sync) refuseWhileOnboarding(what string) error {
	if s.onboarding.Load() {
		return fmt.Errorf("%s: %w", what, ErrOnboarding)
	}
	return nil
}

// deadLetterKey names dl's table and key, for an error.
func deadLetterKey(dl *DeadLetter) string {
	if dl == nil {
		return "(no dead letter)"
	}
	return dl.Change.Table.String() + " " + dl.Change.Key.String()
}

// errNotOnboardable says why a Sync cannot onboard.
var errNotOnboardable = errors.New("duplex: onboarding needs both Appliers to be Scanners, Checkpointers and AgreementKeepers (apply/applypg's Applier is)")

// onboarder is one run of the onboarding of a Sync.
type onboarder struct {
	s      *Sync
	cfg    OnboardingConfig
	a, b   *Endpoint
	sa, sb Scanner
	ca, cb Checkpointer
	ka, kb AgreementKeeper
	// snapA, snapB: the snapshots each side is read at ("": its current
	// state), exported when the side's source created its slot.
	snapA, snapB string
	// repair: a reconcile of a sync that may be running (ReconcileTables):
	// no progress is recorded, keys are locked against the Pipelines, and
	// rows that differ despite records of one version are repaired.
	repair bool
}

func (s *Sync) onboarder() (*onboarder, error) {
	o := &onboarder{s: s, cfg: s.cfg.Onboarding, a: &s.cfg.A, b: &s.cfg.B}
	var ok1, ok2, ok3, ok4, ok5, ok6 bool
	o.sa, ok1 = o.a.Applier.(Scanner)
	o.sb, ok2 = o.b.Applier.(Scanner)
	o.ca, ok3 = o.a.Applier.(Checkpointer)
	o.cb, ok4 = o.b.Applier.(Checkpointer)
	o.ka, ok5 = o.a.Applier.(AgreementKeeper)
	o.kb, ok6 = o.b.Applier.(AgreementKeeper)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
		return nil, errNotOnboardable
	}
	if o.cfg.ChunkSize <= 0 {
		o.cfg.ChunkSize = defaultOnboardingChunk
	}
	if o.cfg.LogEvery <= 0 {
		o.cfg.LogEvery = 5 * time.Second
	}
	return o, nil
}

// firstStart reports whether the sync never streamed: neither system holds
// a Pipeline checkpoint of the other.
func (o *onboarder) firstStart(ctx context.Context) (bool, error) {
	pa, err := o.ca.Checkpoint(ctx, o.b.Name)
	if err != nil {
		return false, fmt.Errorf("duplex: onboarding: read %s's checkpoint of %s: %w", o.a.Name, o.b.Name, err)
	}
	pb, err := o.cb.Checkpoint(ctx, o.a.Name)
	if err != nil {
		return false, fmt.Errorf("duplex: onboarding: read %s's checkpoint of %s: %w", o.b.Name, o.a.Name, err)
	}
	return pa == "" && pb == "", nil
}

// Onboard brings together the rows both systems already hold, table by
// table (OnboardingConfig.Tables), and returns the counts per table. Run
// calls it before streaming on the first start of a sync name (and after a
// start that stopped while onboarding), unless OnboardingConfig.Disabled;
// call it directly only before Run.
//
//   - a row present on one side only is copied to the other;
//   - a row both hold equal is recorded as agreed on both systems (the base
//     of the next three-way merge);
//   - a row both hold differently is decided by the Resolver as a conflict
//     without a common base would be, and the decided row written where it
//     differs; what the Resolver leaves undecided is dead-lettered with
//     both rows, both sides untouched.
//
// Each chunk of keys commits on B (its writes, B's agreement records and
// B's progress, in one transaction), then on A likewise, with
// compare-and-set on every write, so a restart goes on after the last
// chunk A committed, and completes a chunk B committed alone from B's
// records. Writes go through the Appliers (the sources drop their echo).
// The change sources' capture points must exist before Onboard reads
// (pglogical: Setup created the slots). On the first start a side whose
// source exported a snapshot with its slot (SnapshotExporter) is read at
// it, so a write made while onboarding runs is either seen by onboarding or
// in the stream, never both nor neither; after a restart the current rows
// are read, and a write seen by both finds, when streamed, both sides
// holding it. Either way it is merged against the records onboarding wrote
// (see the README, "Starting on existing data"). Onboard releases the
// snapshots when it returns.
func (s *Sync) Onboard(ctx context.Context) ([]OnboardingProgress, error) {
	o, err := s.onboarder()
	if err != nil {
		return nil, err
	}
	first, err := o.firstStart(ctx)
	if err != nil {
		return nil, err
	}
	return o.run(ctx, first)
}

// onboardAtStart runs onboarding from Run: skipped when disabled, when the
// Appliers cannot, or when no table is configured.
func (s *Sync) onboardAtStart(ctx context.Context) error {
	log := s.cfg.Logger
	if s.cfg.Onboarding.Disabled {
		return nil
	}
	o, err := s.onboarder()
	if err != nil {
		log.InfoContext(ctx, "onboarding skipped", "sync", s.cfg.Name, "reason", err.Error())
		return nil
	}
	first, err := o.firstStart(ctx)
	if err != nil {
		return err
	}
	if len(o.cfg.Tables) == 0 {
		if first {
			log.WarnContext(ctx, "onboarding skipped: no tables configured (SyncConfig.Onboarding.Tables); rows both systems held before this first start are not compared", "sync", s.cfg.Name)
		}
		return nil
	}
	_, err = o.run(ctx, first)
	return err
}

func (o *onboarder) run(ctx context.Context, first bool) ([]OnboardingProgress, error) {
	if o.repair {
		if err := o.s.refuseWhileOnboarding(fmt.Sprintf("duplex: reconcile %v", o.cfg.Tables)); err != nil {
			return nil, err
		}
	} else {
		if !o.s.onboarding.CompareAndSwap(false, true) {
			return nil, fmt.Errorf("duplex: onboard: %w", ErrOnboarding)
		}
		defer o.s.onboarding.Store(false)
	}
	if first && !o.repair {
		o.snapA, o.snapB = o.snapshot(o.a), o.snapshot(o.b)
		defer o.release()
		o.s.cfg.Logger.InfoContext(ctx, "onboarding reads", "sync", o.s.cfg.Name,
			o.a.Name, readsAt(o.snapA), o.b.Name, readsAt(o.snapB))
	}
	var out []OnboardingProgress
	for _, t := range o.cfg.Tables {
		p, err := o.table(ctx, t, first)
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

// snapshot returns the snapshot e's source exported, when e's Applier can
// read at it.
func (o *onboarder) snapshot(e *Endpoint) string {
	x, ok1 := e.Source.(SnapshotExporter)
	_, ok2 := e.Applier.(SnapshotScanner)
	if !ok1 || !ok2 {
		return ""
	}
	return x.Snapshot()
}

// release gives up both sources' snapshots.
func (o *onboarder) release() {
	for _, e := range []*Endpoint{o.a, o.b} {
		if x, ok := e.Source.(SnapshotExporter); ok {
			x.ReleaseSnapshot()
		}
	}
}

func readsAt(snapshot string) string {
	if snapshot == "" {
		return "current rows"
	}
	return "the snapshot exported with the slot"
}

// table onboards t, resuming after the progress A recorded.
func (o *onboarder) table(ctx context.Context, t Table, first bool) (OnboardingProgress, error) {
	log := o.s.cfg.Logger
	p := OnboardingProgress{Table: t}
	what := "onboarding"
	var after Key
	resumed := false
	if o.repair {
		what = "reconcile"
	} else {
		src := onboardingSource(t)
		posA, err := o.ca.Checkpoint(ctx, src)
		if err != nil {
			return p, fmt.Errorf("duplex: onboarding %s: read %s's progress: %w", t, o.a.Name, err)
		}
		posB, err := o.cb.Checkpoint(ctx, src)
		if err != nil {
			return p, fmt.Errorf("duplex: onboarding %s: read %s's progress: %w", t, o.b.Name, err)
		}
		if posA == onboardingDone && posB == onboardingDone || (!first && posA == "" && posB == "") {
			p.Done, p.Skipped = true, true
			o.report(p)
			return p, nil
		}
		if posA != "" && posA != onboardingDone {
			if after, err = o.sa.ParseKeyText(ctx, t, string(posA)); err != nil {
				return p, fmt.Errorf("duplex: onboarding %s: read %s's progress %q: %w", t, o.a.Name, posA, err)
			}
		}
		resumed = posA != "" || posB != ""
	}
	for _, sc := range []Scanner{o.sa, o.sb} {
		n, err := sc.EstimateRows(ctx, t)
		if err != nil {
			return p, fmt.Errorf("duplex: onboarding %s: %w", t, err)
		}
		p.Estimate = max(p.Estimate, n)
	}
	log.InfoContext(ctx, what+" started", "sync", o.s.cfg.Name, "table", t.String(), "resumed", resumed, "estimated_rows", p.Estimate)
	start := time.Now()
	lastLog := start
	next, stop := o.chunks(ctx, t, after)
	defer stop()
	for {
		done, err := next(&p)
		if err != nil {
			return p, err
		}
		p.Elapsed = time.Since(start)
		if done {
			break
		}
		o.report(p)
		if time.Since(lastLog) >= o.cfg.LogEvery {
			lastLog = time.Now()
			log.InfoContext(ctx, what+" progress", "sync", o.s.cfg.Name, "table", t.String(),
				"compared", p.Compared, "copied", p.Copied, "agreed", p.Agreed, "decided", p.Decided, "held", p.Held,
				"deferred", p.Deferred, "rows_per_second", int64(p.Rate()), "eta", p.ETA().Round(time.Second).String())
		}
	}
	p.Done = true
	o.report(p)
	log.InfoContext(ctx, what+" done", "sync", o.s.cfg.Name, "table", t.String(),
		"compared", p.Compared, "copied", p.Copied, "agreed", p.Agreed, "decided", p.Decided, "held", p.Held,
		"deferred", p.Deferred, "seconds", p.Elapsed.Seconds(), "rows_per_second", int64(p.Rate()))
	return p, nil
}

func (o *onboarder) report(p OnboardingProgress) {
	if o.cfg.Progress != nil {
		o.cfg.Progress(p)
	}
}

// scanChunk reads the next chunk after after: up to ChunkSize keys of one
// side, and the other side's keys in the same span. hi is the chunk's last
// key (nil with last: the chunk runs to the end of both sides).
func (o *onboarder) scanChunk(ctx context.Context, t Table, after Key) (ka []Key, ra []Values, kb []Key, rb []Values, hi Key, last bool, err error) {
	n := o.cfg.ChunkSize
	read := func(e *Endpoint, sc Scanner, upTo Key, limit int) ([]Key, []Values, error) {
		snap := o.snapA
		if e == o.b {
			snap = o.snapB
		}
		var ks []Key
		var rs []Values
		var err error
		if ss, ok := sc.(SnapshotScanner); ok && snap != "" {
			ks, rs, err = ss.ScanRangeAt(ctx, snap, t, after, upTo, limit)
		} else {
			ks, rs, err = sc.ScanRange(ctx, t, after, upTo, limit)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("duplex: onboarding %s: read %s after %s: %w", t, e.Name, after, err)
		}
		return ks, rs, nil
	}
	if ka, ra, err = read(o.a, o.sa, nil, n); err != nil {
		return
	}
	if len(ka) == n {
		hi = ka[n-1]
		kb, rb, err = read(o.b, o.sb, hi, 0)
		return
	}
	if kb, rb, err = read(o.b, o.sb, nil, n); err != nil {
		return
	}
	if len(kb) == n {
		hi = kb[n-1]
		ka, ra, err = read(o.a, o.sa, hi, 0)
		return
	}
	return ka, ra, kb, rb, nil, true, nil
}

// side is what a chunk writes to one system.
type onboardSide struct {
	writes []Write
	recs   []AgreementWrite
}

// onboardChunk is what one chunk of onboarding writes to each system and
// what it counts.
type onboardChunk struct {
	toA, toB                          onboardSide
	held                              []*DeadLetter
	copied, agreed, decided, deferred int64
}

// chunk onboards the keys after after, up to the chunk's last key, which
// it returns (done: the table is finished).
func (o *onboarder) chunk(ctx context.Context, t Table, after Key, p *OnboardingProgress) (Key, bool, error) {
	pc, unlock, err := o.prepare(ctx, t, after)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	return pc.hi, pc.last, o.finish(ctx, t, pc, p)
}

// preparedChunk is a chunk read and planned: what it writes to each side,
// ready to commit.
type preparedChunk struct {
	hi       Key  // the chunk's last key
	last     bool // the chunk runs to the end of both sides
	compared int64
	c        onboardChunk
}

// prepare reads and plans the chunk after after. In a repair the chunk's
// keys stay locked until unlock (else unlock does nothing).
func (o *onboarder) prepare(ctx context.Context, t Table, after Key) (pc *preparedChunk, unlock func(), err error) {
	unlock = func() {}
	ka, ra, kb, rb, hi, last, err := o.scanChunk(ctx, t, after)
	if err != nil {
		return nil, unlock, err
	}
	pairs, keys := joinRows(ka, ra, kb, rb)
	if o.repair {
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = orderKey(&Change{Table: t, Key: k})
		}
		unlock = o.s.ab.locks.lock(names)
		// Read again under the locks: a merge may have written meanwhile.
		if ka, ra, kb, rb, err = o.reread(ctx, t, keys); err != nil {
			return nil, unlock, err
		}
		pairs, keys = joinRows(ka, ra, kb, rb)
	}
	recA, recB, err := o.records(ctx, t, keys)
	if err != nil {
		return nil, unlock, err
	}
	pc = &preparedChunk{hi: hi, last: last, compared: int64(len(pairs))}
	for i := range pairs {
		if err := o.pair(ctx, t, &pairs[i], recA[i], recB[i], &pc.c); err != nil {
			return nil, unlock, err
		}
	}
	return pc, unlock, nil
}

// finish commits a prepared chunk and counts it into p.
func (o *onboarder) finish(ctx context.Context, t Table, pc *preparedChunk, p *OnboardingProgress) error {
	dropped, err := o.commitChunk(ctx, t, pc.hi, pc.last, &pc.c)
	if err != nil {
		return err
	}
	p.Compared += pc.compared
	p.Copied += pc.c.copied
	p.Agreed += pc.c.agreed
	p.Decided += pc.c.decided
	p.Held += int64(len(pc.c.held))
	p.Deferred += pc.c.deferred + int64(len(dropped))
	return nil
}

// records reads both systems' agreement records of keys, at once.
func (o *onboarder) records(ctx context.Context, t Table, keys []Key) (recA, recB []Agreement, err error) {
	var (
		errB error
		wg   sync.WaitGroup
	)
	wg.Go(func() { recB, errB = o.kb.Agreements(ctx, t, keys) })
	recA, err = o.ka.Agreements(ctx, t, keys)
	wg.Wait()
	if err != nil {
		return nil, nil, fmt.Errorf("duplex: onboarding %s: read %s's agreed rows: %w", t, o.a.Name, err)
	}
	if errB != nil {
		return nil, nil, fmt.Errorf("duplex: onboarding %s: read %s's agreed rows: %w", t, o.b.Name, errB)
	}
	return recA, recB, nil
}

// pair plans one key of a chunk: the rows both systems hold and their
// agreement records rA and rB.
func (o *onboarder) pair(ctx context.Context, t Table, pr *rowPair, rA, rB Agreement, c *onboardChunk) error {
	a, aat := splitCommitTime(pr.a)
	b, bat := splitCommitTime(pr.b)
	version, done := o.recorded(t, pr.key, a, b, rA, rB, c)
	if done {
		return nil
	}
	switch {
	case a == nil && b == nil:
	case b == nil:
		c.toB.add(o.a.Name, t, pr.key, Write{Op: OpInsert, Set: a.Clone()}, a, agreedAt(version, a, a))
		c.toA.add(o.b.Name, t, pr.key, Write{}, nil, agreedAt(version, a, nil))
		c.copied++
	case a == nil:
		c.toA.add(o.b.Name, t, pr.key, Write{Op: OpInsert, Set: b.Clone()}, b, agreedAt(version, b, b))
		c.toB.add(o.a.Name, t, pr.key, Write{}, nil, agreedAt(version, b, nil))
		c.copied++
	default:
		return o.decidePair(ctx, t, pr.key, a, b, aat, bat, version, c)
	}
	return nil
}

// recorded looks at a key's agreement records: done means the key needs
// nothing from this chunk (in agreement, agreed by an earlier run, or a
// half an earlier run left, finished here or deferred); otherwise version
// is the version of the records to write.
func (o *onboarder) recorded(t Table, k Key, a, b Values, rA, rB Agreement, c *onboardChunk) (version uint64, done bool) {
	switch {
	case o.repair && (rA.Known || rB.Known):
		if rA.Version != rB.Version {
			// A merge committed on one system only: the next change of
			// the key finishes it.
			c.deferred++
			return 0, true
		}
		if sameRow(a, b) && sameRow(a, rA.Row) {
			return 0, true // in agreement
		}
		return rA.Version + 1, false // drift: repaired
	case rA.Known && rB.Known && rA.Version == rB.Version:
		// Agreed before (an earlier run): a difference now is an edit
		// made since, which the stream brings.
		return 0, true
	case rA.Known || rB.Known:
		// A chunk an earlier run committed on one system only: finish
		// its other half from the newer record.
		if o.finishHalf(t, k, a, b, rA, rB, &c.toA, &c.toB) {
			c.agreed++
		} else {
			c.deferred++
		}
		return 0, true
	}
	return 1, false
}

// decidePair plans a key both systems hold: equal rows agree, different
// ones go through the resolvers (decideRows).
func (o *onboarder) decidePair(ctx context.Context, t Table, k Key, a, b Values, aat, bat time.Time, version uint64, c *onboardChunk) error {
	d, err := o.s.decideRows(ctx, t, k, a, b, aat, bat, "onboarding")
	if err != nil {
		return err
	}
	switch {
	case d.same:
		c.toB.add(o.a.Name, t, k, Write{}, nil, agreedAt(version, a, a))
		c.toA.add(o.b.Name, t, k, Write{}, nil, agreedAt(version, a, b))
		c.agreed++
	case d.held != nil:
		// Both sides keep their rows; the records say which fields
		// nobody agreed on, so a later edit of the row meets them
		// as contested (the resolvers, or the DLQ again) and is
		// never taken for a decision.
		c.held = append(c.held, d.held)
		r := heldAgreement(a, d.held.Conflict.Fields, version)
		c.toB.add(o.a.Name, t, k, Write{}, nil, r)
		c.toA.add(o.b.Name, t, k, Write{}, nil, r)
	default:
		c.toB.add(o.a.Name, t, k, update(d.forB, b), d.forB, agreedAt(version, d.forA, a))
		c.toA.add(o.b.Name, t, k, update(d.forA, a), d.forA, agreedAt(version, d.forA, b))
		c.decided++
	}
	return nil
}

// agreedAt is the agreement record of version for a system that holds row
// after the chunk, peer being what the other system held.
func agreedAt(version uint64, row, peer Values) Agreement {
	return Agreement{Known: true, Version: version, Row: row, Peer: peer}
}

// commitChunk dead-letters the chunk's held keys and commits its writes
// and records, B first, then A: A's progress never passes B's, so a
// restart resumes after A's and finishes from B's records what B committed
// alone. It returns the keys B dropped (changed under the chunk).
func (o *onboarder) commitChunk(ctx context.Context, t Table, hi Key, last bool, c *onboardChunk) (map[string]bool, error) {
	for _, dl := range c.held {
		if err := o.s.cfg.DeadLetters.Put(ctx, dl); err != nil {
			return nil, fmt.Errorf("duplex: onboarding: dead-letter %s %s: %w", t, dl.Change.Key, err)
		}
	}
	progress := Position(onboardingDone)
	if o.repair {
		progress = ""
	} else if !last {
		s, err := o.sa.KeyText(ctx, t, hi)
		if err != nil {
			return nil, fmt.Errorf("duplex: onboarding %s: progress key %s: %w", t, hi, err)
		}
		progress = Position(s)
	}
	dropped, err := o.commit(ctx, o.b, t, &c.toB, progress, nil)
	if err != nil {
		return nil, err
	}
	c.toA.drop(dropped)
	if _, err := o.commit(ctx, o.a, t, &c.toA, progress, dropped); err != nil {
		return nil, err
	}
	return dropped, nil
}

// rowPair is a key with its rows on A and B (nil: absent).
type rowPair struct {
	key  Key
	a, b Values
}

// joinRows joins the two sides' rows by key: A's keys in their order, then
// the keys only B holds. It returns the pairs and their keys.
func joinRows(ka []Key, ra []Values, kb []Key, rb []Values) ([]rowPair, []Key) {
	idx := make(map[string]int, len(ka)+len(kb))
	pairs := make([]rowPair, 0, max(len(ka), len(kb)))
	for i, k := range ka {
		idx[k.String()] = len(pairs)
		pairs = append(pairs, rowPair{key: k, a: ra[i]})
	}
	for i, k := range kb {
		if j, ok := idx[k.String()]; ok {
			pairs[j].b = rb[i]
			continue
		}
		idx[k.String()] = len(pairs)
		pairs = append(pairs, rowPair{key: k, b: rb[i]})
	}
	keys := make([]Key, len(pairs))
	for i := range pairs {
		keys[i] = pairs[i].key
	}
	return pairs, keys
}

// finishHalf completes a key whose records differ: the newer record's
// system committed the key's onboarding, the other did not. When the
// lagging system still holds what the newer record took from it (Peer), it
// gets the agreed row and the record; otherwise it was edited since, and
// the stream's merge of that edit uses the newer record (nothing is
// written). It reports whether the key was completed.
func (o *onboarder) finishHalf(t Table, k Key, a, b Values, rA, rB Agreement, toA, toB *onboardSide) bool {
	newer, lag, lagRow, from := rB, toA, a, o.b.Name
	if rA.Version > rB.Version {
		newer, lag, lagRow, from = rA, toB, b, o.a.Name
	}
	if !sameRow(lagRow, newer.Peer) {
		return false
	}
	rec := Agreement{Known: true, Version: newer.Version, Row: newer.Row, Peer: newer.Row}
	switch {
	case newer.Row == nil || sameRow(lagRow, newer.Row):
		lag.add(from, t, k, Write{}, nil, rec)
	case lagRow == nil:
		lag.add(from, t, k, Write{Op: OpInsert, Set: newer.Row.Clone()}, newer.Row, rec)
	default:
		lag.add(from, t, k, update(newer.Row, lagRow), newer.Row, rec)
	}
	return true
}

// heldAgreement is the record of a row both sides keep differently until
// someone resolves it: a's row without the contested fields, which are
// Unknown.
func heldAgreement(a Values, contested []string, version uint64) Agreement {
	row := a.Clone()
	unknown := slices.Clone(contested)
	slices.Sort(unknown)
	for _, f := range unknown {
		delete(row, f)
	}
	return Agreement{Known: true, Version: version, Row: row, Peer: row, Unknown: unknown}
}

// sameRow reports whether a and b are both absent or hold equal values.
func sameRow(a, b Values) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	return valuesEqual(a, b)
}

// splitCommitTime returns row without CommitTimeField, and its value.
func splitCommitTime(row Values) (Values, time.Time) {
	v, ok := row[CommitTimeField]
	if !ok {
		return row, time.Time{}
	}
	at, _ := v.(time.Time)
	row = row.Clone()
	delete(row, CommitTimeField)
	return row, at
}

// update returns the write that makes cur hold want's values: the fields
// that differ, with cur's as expectations (Op 0: nothing differs).
func update(want, cur Values) Write {
	var b setExpect
	for f, v := range want {
		if c, ok := cur[f]; ok {
			b.add(f, v, c)
		}
	}
	if b.set == nil {
		return Write{}
	}
	return Write{Op: OpUpdate, Set: b.set, Expect: b.expect}
}

// add queues, for key k of t, the write w (Op 0: none) of row after from
// system from, and the key's record.
func (s *onboardSide) add(from string, t Table, k Key, w Write, after Values, rec Agreement) {
	if w.Op != 0 {
		w.Table, w.Key = t, k
		w.Change = &Change{Source: from, Table: t, Key: k, Op: w.Op, After: after}
		s.writes = append(s.writes, w)
	}
	s.recs = append(s.recs, AgreementWrite{Table: t, Key: k, Agreement: rec})
}

// drop removes the writes and records of the keys in keys.
func (s *onboardSide) drop(keys map[string]bool) {
	if len(keys) == 0 {
		return
	}
	w := s.writes[:0]
	for _, x := range s.writes {
		if !keys[x.Key.String()] {
			w = append(w, x)
		}
	}
	s.writes = w
	r := s.recs[:0]
	for _, x := range s.recs {
		if !keys[x.Key.String()] {
			r = append(r, x)
		}
	}
	s.recs = r
}

// commit writes one system's half of a chunk with its progress, in one
// transaction. A write refused because the row changed since it was read
// (ErrStale) is dropped with its key's record, and the rest committed; the
// keys dropped are returned (their changes are in the stream). already are
// keys dropped before (they are counted once).
func (o *onboarder) commit(ctx context.Context, e *Endpoint, t Table, s *onboardSide, progress Position, already map[string]bool) (map[string]bool, error) {
	dropped := map[string]bool{}
	for {
		b := &Batch{Writes: s.writes, Agreements: s.recs, Source: onboardingSource(t), Checkpoint: progress}
		err := e.Applier.Apply(ctx, b)
		if err == nil {
			return dropped, nil
		}
		var be *BatchError
		if !errors.Is(err, ErrStale) || !errors.As(err, &be) || be.Index < 0 || be.Index >= len(s.writes) {
			return nil, fmt.Errorf("duplex: onboarding %s: write %d rows and %d agreed rows to %s: %w", t, len(s.writes), len(s.recs), e.Name, err)
		}
		k := s.writes[be.Index].Key.String()
		if !already[k] {
			dropped[k] = true
		}
		o.s.cfg.Logger.DebugContext(ctx, "onboarding left a key to the stream: changed since read", "table", t.String(), "key", k, "system", e.Name)
		s.drop(map[string]bool{k: true})
	}
}

// reread reads the rows of keys on both sides (a repair under the keys'
// locks), in the shape scanChunk returns: the keys each side holds.
func (o *onboarder) reread(ctx context.Context, t Table, keys []Key) (ka []Key, ra []Values, kb []Key, rb []Values, err error) {
	read := func(e *Endpoint) ([]Key, []Values, error) {
		rows, err := e.Applier.Lookup(ctx, t, keys)
		if err != nil {
			return nil, nil, fmt.Errorf("duplex: reconcile %s: read %d keys on %s: %w", t, len(keys), e.Name, err)
		}
		var ks []Key
		var rs []Values
		for i, r := range rows {
			if r != nil {
				ks, rs = append(ks, keys[i]), append(rs, r)
			}
		}
		return ks, rs, nil
	}
	if ka, ra, err = read(o.a); err != nil {
		return
	}
	kb, rb, err = read(o.b)
	return
}

// ReconcileTables compares tables on both systems in batched key ranges,
// like onboarding, and repairs what differs: a row on one side only is
// copied to the other (nothing is deleted), a row both hold differently
// without a record of their agreement (or despite one: changed behind the
// sync's back) is decided by the Resolver as Reconcile decides it and
// written where it differs, with new agreement records; what the Resolver
// leaves undecided is dead-lettered, both sides untouched. Keys are locked
// against the Sync's Pipelines while a range is repaired, so it may run
// while the Sync runs; a key whose merge committed on one system only is
// left to its next change (counted as deferred). It records no progress:
// a second call compares everything again. It is the fast path of
// Reconcile for whole tables.
func (s *Sync) ReconcileTables(ctx context.Context, tables []Table, chunk int) ([]OnboardingProgress, error) {
	o, err := s.onboarder()
	if err != nil {
		return nil, err
	}
	o.repair = true
	if chunk > 0 {
		o.cfg.ChunkSize = chunk
	}
	o.cfg.Tables = tables
	return o.run(ctx, true)
}
