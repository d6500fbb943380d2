package pglogical

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/backoff"
	"github.com/duplexsync/duplex/internal/pgstate"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// Config configures a logical replication Source.
type Config struct {
	// ConnString connects to the source database (URL or key=value form).
	// The source adds replication=database for its streaming connection.
	// Required.
	ConnString string
	// Sync names the sync; the slot, publication and origin names derive
	// from it (see SlotName, OriginName). Required.
	Sync string
	// System names this database in the sync ("a", "crm"); it becomes
	// Change.Source and part of the slot name. Required.
	System string
	// Tables lists the tables to capture. Each needs a primary key. Required.
	Tables []duplex.Table
	// SetReplicaIdentity lets the source set REPLICA IDENTITY FULL on tables
	// that lack it (before images are needed for per-field conflicts). When
	// false, such tables are an error that explains what to run.
	SetReplicaIdentity bool
	// SkipOrigins lists replication origins whose transactions are dropped:
	// the sync's own writes. A name matches an origin equal to it or starting
	// with it and ":". nil: OriginName(Sync).
	SkipOrigins []string
	// Marker enables the loop guard's marker fallback for roles that may not
	// use replication origins: the marker table of StateSchema is added to
	// the publication, and a transaction that an applier of this sync marked
	// is dropped. Origins (SkipOrigins) keep working alongside.
	Marker bool
	// StateSchema is the sync's own schema (for the marker table).
	// "": pgstate.DefaultSchema.
	StateSchema string
	// BatchSize is the most changes delivered in one batch. 0: 1024.
	BatchSize int
	// Linger is how long a partly filled batch waits for more changes
	// before it is delivered. 0: 2ms. A batch is delivered sooner when the
	// stream has been quiet for Quiet: a backlog streams without pause and
	// fills batches, while a transaction written alone goes out at once.
	Linger time.Duration
	// Quiet is how long the stream must have sent nothing for a partly
	// filled batch to go before its Linger has passed. 0: 200µs.
	Quiet time.Duration
	// StatusInterval is how often the acknowledged position is reported to
	// the server. 0: 1s.
	StatusInterval time.Duration
	// Heartbeat, when positive, writes a logical message into the WAL this
	// often, so that an idle database's slot keeps advancing. 0: off.
	Heartbeat time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between reconnects.
	// 0: 100ms and 10s.
	ReconnectMin, ReconnectMax time.Duration
	// SlotBusyTimeout is how long to keep trying when the slot is in use by
	// another connection (a previous process's walsender that has not exited
	// yet) before giving up: two syncs with one name never run together.
	// 0: 20s.
	SlotBusyTimeout time.Duration
	// Logger receives logs. nil: slog.Default().
	Logger *slog.Logger
}

// Source captures changes from PostgreSQL through a logical replication slot
// with the pgoutput plugin. It implements duplex.ChangeSource.
//
// Each change carries a stable ID (slot, commit LSN and ordinal in the
// transaction) and a Position that encodes where to restart once it is
// settled. The position reported to the server as flushed is only ever one
// the Pipeline acknowledged (or, when nothing is in flight, the server's own
// idle position), so a crash at any moment loses nothing: the slot replays
// from there with the same IDs.
type Source struct {
	cfg   Config
	slot  string
	log   *slog.Logger
	pool  *pgxpool.Pool
	retry backoff.Policy

	mu        sync.Mutex
	keys      map[duplex.Table][]string
	bases     map[uint32]uint32
	ready     bool
	acked     pos                      // furthest acknowledged change
	delivered pos                      // furthest delivered change
	idle      pglogrepl.LSN            // server position seen while nothing was pending
	flushed   pglogrepl.LSN            // last flush position sent
	xids      map[pglogrepl.LSN]uint32 // transactions delivered and not yet acknowledged, by commit LSN
	// horizon is the xmin of the newest snapshot WaitVisible took: the
	// transactions before it are over (horizonKnown: one was taken).
	horizon      uint32
	horizonKnown bool
	// snapshot is the one exported when Setup created the slot, until
	// released.
	snapshot *exported
}

var _ duplex.ChangeSource = (*Source)(nil)

// New checks cfg and connects to the database. It does not create anything
// until Stream is called. Close releases the connection pool.
func New(ctx context.Context, cfg Config) (*Source, error) {
	errs := pgutil.CheckSource(cfg.ConnString, cfg.Sync, cfg.System, cfg.Tables)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.SkipOrigins == nil {
		cfg.SkipOrigins = []string{OriginName(cfg.Sync)}
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1024
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = 200 * time.Microsecond
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 2 * time.Millisecond
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = time.Second
	}
	if cfg.SlotBusyTimeout <= 0 {
		cfg.SlotBusyTimeout = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	slot := SlotName(cfg.Sync, cfg.System)
	pcfg, err := pgxpool.ParseConfig(cfg.ConnString)
	if err != nil {
		return nil, duplex.Permanent(fmt.Errorf("pglogical: %s: invalid connection string: %w", cfg.System, err))
	}
	pcfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("pglogical: %s: connect: %w", cfg.System, err)
	}
	return &Source{
		cfg:   cfg,
		slot:  slot,
		log:   cfg.Logger.With("component", "cdc", "source", "pglogical", "system", cfg.System, "slot", slot),
		pool:  pool,
		retry: backoff.Policy{Min: cfg.ReconnectMin, Max: cfg.ReconnectMax},
		keys:  make(map[duplex.Table][]string),
		bases: make(map[uint32]uint32),
	}, nil
}

// Slot returns the replication slot's name.
func (s *Source) Slot() string { return s.slot }

// Close releases the source's connections. Call it after Stream returned.
func (s *Source) Close() {
	s.ReleaseSnapshot()
	s.pool.Close()
}

// RetainedWAL returns how many bytes of WAL the slot holds back on the
// server (current WAL position minus the slot's confirmed position).
func (s *Source) RetainedWAL(ctx context.Context) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `
		SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, s.slot).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("pglogical: retained WAL of slot %s: %w", s.slot, err)
	}
	return n, nil
}

// Ack implements duplex.ChangeSource. The slot's flush position advances to
// p's restart point at the next status update.
func (s *Source) Ack(_ context.Context, p duplex.Position) error {
	q, err := parsePos(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acked.before(q) {
		s.acked = q
	}
	for lsn := range s.xids {
		if lsn < q.commit {
			delete(s.xids, lsn)
		}
	}
	return nil
}

// flushLSN returns the position to report as flushed: the acknowledged
// restart point, or the server's idle position when every delivered change
// is settled. It never goes backwards and is never zero once known.
func (s *Source) flushLSN() pglogrepl.LSN {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := max(s.flushed, s.acked.resume)
	if !s.acked.before(s.delivered) { // nothing in flight
		f = max(f, s.idle)
	}
	s.flushed = f
	return f
}

func (s *Source) keyColumns(t duplex.Table) ([]string, error) {
	s.mu.Lock()
	k, ok := s.keys[t]
	s.mu.Unlock()
	if ok {
		return k, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := inspect(ctx, s.pool, t)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.keys[t] = info.key
	s.mu.Unlock()
	return info.key, nil
}

// Setup checks the database (wal_level, tables, primary keys, replica
// identity) and creates the publication and the replication slot when they
// are missing; Stream calls it on first use. resuming says the caller has a
// stored position, which makes a missing slot an error (it was dropped, and
// changes may be lost) instead of something to create. Errors name the
// table or setting at fault and say how to fix it; permanent ones are
// marked duplex.Permanent. Setup is idempotent.
func (s *Source) Setup(ctx context.Context, resuming bool) error {
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if ready {
		return nil
	}
	if err := s.setup(ctx, resuming); err != nil {
		return err
	}
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	return nil
}

// baseType returns the base type of a domain (through up to two levels of
// domains), or oid itself; catalog answers are cached.
func (s *Source) baseType(oid uint32) uint32 {
	s.mu.Lock()
	b, ok := s.bases[oid]
	s.mu.Unlock()
	if ok {
		return b
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b = oid
	err := s.pool.QueryRow(ctx, `
		SELECT CASE WHEN ty.typtype = 'd' THEN
			CASE WHEN bt.typtype = 'd' THEN bt.typbasetype ELSE bt.oid END
		ELSE ty.oid END
		FROM pg_type ty LEFT JOIN pg_type bt ON bt.oid = ty.typbasetype WHERE ty.oid = $1`, oid).Scan(&b)
	if err != nil {
		return oid // decoded by its own OID: the text form
	}
	s.mu.Lock()
	s.bases[oid] = b
	s.mu.Unlock()
	return b
}

// errBusy says the slot is in use by another connection.
type errBusy struct{ err error }

func (e errBusy) Error() string { return e.err.Error() }
func (e errBusy) Unwrap() error { return e.err }

// errFatal marks errors that reconnecting cannot fix.
type errFatal struct{ err error }

func (e errFatal) Error() string { return e.err.Error() }
func (e errFatal) Unwrap() error { return e.err }

// Stream implements duplex.ChangeSource. On first use it checks the
// database (wal_level, primary keys, replica identity) and creates the
// publication and slot when missing. It resumes after from, or after the
// slot's confirmed position when from is "". Connection losses are retried
// with backoff; a dropped, invalidated or busy slot is returned as an error.
func (s *Source) Stream(ctx context.Context, from duplex.Position, fn func(context.Context, []duplex.Change) error) error {
	// Onboarding, which reads at the exported snapshot, is over.
	s.ReleaseSnapshot()
	var start pos
	if from != "" {
		var err error
		if start, err = parsePos(from); err != nil {
			return duplex.Permanent(err)
		}
	}
	s.mu.Lock()
	if s.acked.before(start) {
		s.acked = start
	}
	// This call delivers everything after start, or after what was
	// acknowledged: what an earlier call delivered but nobody settled (its
	// fn failed) must come again, not be skipped as already delivered.
	s.delivered = start
	if from == "" {
		s.delivered = s.acked
	}
	// Likewise the server position an earlier call saw while nothing was
	// pending may lie past those changes: it no longer says anything.
	s.idle = 0
	s.mu.Unlock()
	for attempt := 1; ; attempt++ {
		err := s.Setup(ctx, from != "")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if duplex.IsPermanent(err) {
			return err
		}
		d := s.retry.Delay(attempt)
		s.log.WarnContext(ctx, "setup failed; retrying", "attempt", attempt, "backoff", d, slog.Any("err", err))
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
	s.ReleaseSnapshot() // a slot Setup just created: nobody reads at its snapshot
	if s.cfg.Heartbeat > 0 {
		hctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var wg sync.WaitGroup
		wg.Go(func() { s.heartbeat(hctx) })
		defer wg.Wait()
		defer cancel()
	}
	var busySince time.Time
	for attempt := 1; ; attempt++ {
		var streamed bool
		err := s.streamOnce(ctx, fn, &streamed)
		if streamed {
			attempt = 1 // the connection worked: back off from the start
		}
		if ctx.Err() != nil {
			return nil
		}
		var fatal errFatal
		if errors.As(err, &fatal) {
			return fatal.err
		}
		var busy errBusy
		if errors.As(err, &busy) {
			if busySince.IsZero() {
				busySince = time.Now()
			}
			if time.Since(busySince) > s.cfg.SlotBusyTimeout {
				return duplex.Permanent(busy.err)
			}
		} else {
			busySince = time.Time{}
		}
		if err == nil {
			attempt = 0
			continue
		}
		d := s.retry.Delay(attempt)
		s.log.WarnContext(ctx, "replication connection lost; reconnecting", "attempt", attempt, "backoff", d, slog.Any("err", err))
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
}

func (s *Source) heartbeat(ctx context.Context) {
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.pool.Exec(ctx, "SELECT pg_logical_emit_message(false, 'duplex_heartbeat', '')"); err != nil && ctx.Err() == nil {
				s.log.DebugContext(ctx, "heartbeat failed", slog.Any("err", err))
			}
		}
	}
}

// outputParams are the session settings of the replication connection that
// make pgoutput's text output exact and decodable (internal/pgvalue).
var outputParams = map[string]string{
	"DateStyle":          "ISO",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
}

func (s *Source) replicationConn(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(s.cfg.ConnString)
	if err != nil {
		return nil, errFatal{duplex.Permanent(fmt.Errorf("pglogical: %s: invalid connection string: %w", s.cfg.System, err))}
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = s.slot
	// pgoutput renders values with the walsender session's settings, which
	// start from the database's and role's defaults. Pin the ones that
	// shape the text form, so that a default such as bytea_output = escape
	// or DateStyle = SQL cannot make values undecodable, nor
	// extra_float_digits = 0 round floats.
	for k, v := range outputParams {
		cfg.RuntimeParams[k] = v
	}
	return pgconn.ConnectConfig(ctx, cfg)
}

// streamOnce runs one replication connection until it fails or ctx ends.
// It sets *streamed once the server started streaming.
func (s *Source) streamOnce(ctx context.Context, fn func(context.Context, []duplex.Change) error, streamed *bool) error {
	conn, err := s.replicationConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var confirmed pglogrepl.LSN
	var confirmedText *string
	if err := s.pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", s.slot).Scan(&confirmedText); err == nil && confirmedText != nil {
		confirmed, _ = pglogrepl.ParseLSN(*confirmedText)
	}
	s.mu.Lock()
	startLSN := max(s.acked.resume, s.flushed, confirmed)
	if s.flushed < startLSN {
		s.flushed = startLSN
	}
	skipThrough := s.delivered // already delivered on an earlier connection
	s.mu.Unlock()
	err = pglogrepl.StartReplication(ctx, conn, s.slot, startLSN, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + strings.ReplaceAll(s.slot, "'", "''") + "'"},
	})
	if err != nil {
		return classifyStart(s.slot, err)
	}
	*streamed = true
	s.log.InfoContext(ctx, "streaming", "from_lsn", startLSN.String())

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make(chan []duplex.Change, 2)
	recvErr := make(chan error, 1)
	go func() {
		recvErr <- s.receive(sctx, conn, startLSN, skipThrough, out)
		close(out)
	}()
	var fnErr error
	for batch := range out {
		if fnErr != nil {
			continue // drain so the receiver can stop
		}
		if err := fn(ctx, batch); err != nil {
			fnErr = err
			cancel()
		}
	}
	rerr := <-recvErr
	if fnErr != nil {
		return errFatal{fnErr}
	}
	return rerr
}

func classifyStart(slot string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "42704":
			return errFatal{duplex.Permanent(fmt.Errorf("pglogical: replication slot %s does not exist (dropped while the sync was running?): changes made since may be lost; re-seed the target and restart the sync: %w", slot, err))}
		case pe.Code == "55006":
			return errBusy{fmt.Errorf("pglogical: replication slot %s is in use by another process: is another sync with the same name running? %w", slot, err)}
		case pe.Code == "55000" && strings.Contains(pe.Message, "invalidated"), strings.Contains(pe.Message, "can no longer get changes"):
			return errFatal{duplex.Permanent(fmt.Errorf("pglogical: replication slot %s was invalidated: its WAL was removed and changes were lost; re-seed the target and recreate the slot: %w", slot, err))}
		}
	}
	return fmt.Errorf("pglogical: start replication on slot %s: %w", slot, err)
}

// receive reads the replication stream, decodes it, and sends batches on
// out. It owns conn: it also sends the status updates.
func (s *Source) receive(ctx context.Context, conn *pgconn.PgConn, startLSN pglogrepl.LSN, skipThrough pos, out chan<- []duplex.Change) error {
	dec := newDecoder(s.slot, s.cfg.System, s.cfg.SkipOrigins, s.keyColumns)
	dec.baseType = s.baseType
	if s.cfg.Marker {
		sc, name := pgstate.MarkerTable(s.cfg.StateSchema)
		dec.marker, dec.markerSync = duplex.Table{Schema: sc, Name: name}, s.cfg.Sync
	}
	prevEnd := startLSN // end of the last transaction seen: restart point of a partial one
	var pending []duplex.Change
	var pendingPos []pos
	lingerUntil := time.Time{}
	quietFrom := time.Time{} // when the last message came: a partial batch goes Quiet after it
	nextStatus := time.Now()

	sendStatus := func() error {
		nextStatus = time.Now().Add(s.cfg.StatusInterval)
		f := s.flushLSN()
		if f == 0 {
			return nil // nothing known yet; never report zero
		}
		if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: f, WALFlushPosition: f, WALApplyPosition: f,
		}); err != nil {
			return fmt.Errorf("pglogical: send status: %w", err)
		}
		nextStatus = time.Now().Add(s.cfg.StatusInterval)
		return nil
	}
	// deliver hands n pending changes to the Stream goroutine, keeping the
	// replication connection alive while it waits.
	deliver := func(n int) error {
		batch := make([]duplex.Change, n)
		for i := range n {
			batch[i] = pending[i]
			batch[i].Position = pendingPos[i].position()
		}
		// Count the batch as in flight before it leaves: the flush position
		// must not pass it even while it waits in the channel.
		s.mu.Lock()
		prev := s.delivered
		if s.delivered.before(pendingPos[n-1]) {
			s.delivered = pendingPos[n-1]
		}
		s.mu.Unlock()
		// If it never leaves (the connection failed meanwhile), it was not
		// delivered: the reconnect must not skip it.
		undo := func() {
			s.mu.Lock()
			s.delivered = prev
			s.mu.Unlock()
		}
		pending = append(pending[:0], pending[n:]...)
		pendingPos = append(pendingPos[:0], pendingPos[n:]...)
		for {
			wait := time.Until(nextStatus)
			t := time.NewTimer(max(wait, 0))
			select {
			case out <- batch:
				t.Stop()
				return nil
			case <-ctx.Done():
				t.Stop()
				undo()
				return ctx.Err()
			case <-t.C:
				if err := sendStatus(); err != nil {
					undo()
					return err
				}
			}
		}
	}

	add := func(c duplex.Change, p pos) {
		if len(pending) == 0 {
			lingerUntil = time.Now().Add(s.cfg.Linger)
		}
		pending = append(pending, c)
		pendingPos = append(pendingPos, p)
	}
	var c duplex.Change
	var rctx deadlineCtx
	defer rctx.stop()
	for {
		now := time.Now()
		if now.After(nextStatus) {
			if err := sendStatus(); err != nil {
				return err
			}
		}
		due := lingerUntil
		if q := quietFrom.Add(s.cfg.Quiet); q.Before(due) {
			due = q
		}
		if len(pending) > 0 && !dec.tx.active && !now.Before(due) {
			if err := deliver(len(pending)); err != nil {
				return err
			}
		}
		deadline := nextStatus
		if len(pending) > 0 && !dec.tx.active && due.Before(deadline) {
			deadline = due
		}
		msg, err := conn.ReceiveMessage(rctx.get(ctx, deadline))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("pglogical: receive: %w", err)
		}
		quietFrom = time.Now()
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("pglogical: keepalive: %w", err)
				}
				if !dec.tx.active && len(pending) == 0 {
					s.noteIdle(ka.ServerWALEnd)
				}
				if ka.ReplyRequested {
					if err := sendStatus(); err != nil {
						return err
					}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("pglogical: xlog data: %w", err)
				}
				ev, err := dec.decode(xld.WALData, &c)
				if err != nil {
					return errFatal{duplex.Permanent(err)}
				}
				switch ev {
				case evChange:
					p := pos{commit: dec.tx.commitLSN, ordinal: dec.tx.ordinal - 1, resume: prevEnd}
					if !skipThrough.before(p) {
						continue // delivered before the reconnect
					}
					add(c, p)
					if len(pending) > s.cfg.BatchSize {
						// Never deliver a transaction's last change before its
						// commit: hold one back so it can carry the restart point.
						if err := deliver(s.cfg.BatchSize); err != nil {
							return err
						}
					}
				case evMove:
					for i, ch := range []duplex.Change{c, dec.moved} {
						p := pos{commit: dec.tx.commitLSN, ordinal: dec.tx.ordinal - 2 + i, resume: prevEnd}
						if skipThrough.before(p) {
							add(ch, p)
						}
					}
					if len(pending) > s.cfg.BatchSize {
						if err := deliver(s.cfg.BatchSize); err != nil {
							return err
						}
					}
				case evTruncate:
					for _, t := range dec.truncated {
						p := pos{commit: dec.tx.commitLSN, ordinal: dec.tx.ordinal, resume: prevEnd}
						dec.tx.ordinal++
						if !skipThrough.before(p) {
							continue
						}
						add(duplex.Change{
							ID:     s.slot + ":" + dec.tx.commitLSN.String() + ":" + fmt.Sprint(p.ordinal),
							Source: s.cfg.System, Table: t, Op: duplex.OpTruncate,
							CommitTime: dec.tx.commitTime, Origin: dec.tx.origin,
						}, p)
					}
				case evCommit:
					end := dec.tx.endLSN
					if n := len(pending); n > 0 && pendingPos[n-1].commit == dec.tx.commitLSN {
						pendingPos[n-1].resume = end
						s.noteXid(dec.tx.commitLSN, dec.tx.xid)
					}
					prevEnd = end
					if len(pending) == 0 {
						s.noteIdle(end)
					}
					if len(pending) >= s.cfg.BatchSize {
						if err := deliver(len(pending)); err != nil {
							return err
						}
					}
				}
			}
		case *pgproto3.ErrorResponse:
			return classifyStart(s.slot, pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return errors.New("pglogical: server ended the replication stream")
		}
	}
}

// deadlineCtx hands out a context with a deadline, reusing it until the
// deadline moves (a status update or a new batch's linger) rather than
// making one per message received.
type deadlineCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
	at     time.Time
}

func (d *deadlineCtx) get(parent context.Context, at time.Time) context.Context {
	if d.ctx == nil || !at.Equal(d.at) || d.ctx.Err() != nil {
		d.stop()
		d.ctx, d.cancel = context.WithDeadline(parent, at)
		d.at = at
	}
	return d.ctx
}

func (d *deadlineCtx) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}

// noteIdle records a server position reached while nothing was pending.
func (s *Source) noteIdle(lsn pglogrepl.LSN) {
	s.mu.Lock()
	if lsn > s.idle {
		s.idle = lsn
	}
	s.mu.Unlock()
}
