package pglogical

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/duplexsync/duplex"
)

var _ duplex.SnapshotExporter = (*Source)(nil)

// exported is the snapshot a Source exported when it created its slot,
// held by the replication connection that created it (a snapshot stays
// importable while its exporter's session is idle).
type exported struct {
	name string
	conn *pgconn.PgConn
}

// createSlotExporting creates the slot over a replication connection with
// EXPORT_SNAPSHOT: the exported snapshot sees exactly the transactions
// committed before the slot's consistent point, so every later one is in
// the slot. The connection is kept until ReleaseSnapshot. exists reports a
// slot created concurrently (SQLSTATE 42710).
func (s *Source) createSlotExporting(ctx context.Context) (exists bool, err error) {
	conn, err := s.replicationConn(ctx)
	if err != nil {
		return false, fmt.Errorf("pglogical: create replication slot %s: connect: %w", s.slot, err)
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, s.slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42710" {
			return true, nil
		}
		return false, fmt.Errorf("pglogical: create replication slot %s: %w", s.slot, err)
	}
	s.mu.Lock()
	old := s.snapshot
	s.snapshot = &exported{name: res.SnapshotName, conn: conn}
	s.mu.Unlock()
	if old != nil {
		_ = old.conn.Close(context.WithoutCancel(ctx))
	}
	return false, nil
}

// Snapshot implements duplex.SnapshotExporter: the name of the snapshot
// exported when Setup created the slot, "" when Setup found the slot (a
// restart) or the snapshot was released. Reading at it (SET TRANSACTION
// SNAPSHOT in a REPEATABLE READ transaction) sees the database exactly as
// of the slot's start: every transaction it does not see is in the slot.
func (s *Source) Snapshot() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snapshot == nil {
		return ""
	}
	return s.snapshot.name
}

// ReleaseSnapshot implements duplex.SnapshotExporter: it closes the
// connection holding the exported snapshot (transactions that imported it
// keep it). Stream and Close release it too.
func (s *Source) ReleaseSnapshot() {
	s.mu.Lock()
	ex := s.snapshot
	s.snapshot = nil
	s.mu.Unlock()
	if ex != nil {
		_ = ex.conn.Close(context.Background())
	}
}
