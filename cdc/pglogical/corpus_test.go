package pglogical

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
)

// TestCaptureFuzzCorpus streams a workload touching every pgoutput message
// kind from a real server and writes the messages into
// testdata/fuzz/FuzzDecode, with the table's relation ID rewritten to
// fuzzRelID (its columns are fuzzColumns). It also checks that the real
// messages decode, in order. Run it when the decoder learns new messages:
//
//	DUPLEX_CAPTURE_CORPUS=1 go test -run TestCaptureFuzzCorpus ./cdc/pglogical/
func TestCaptureFuzzCorpus(t *testing.T) {
	if os.Getenv("DUPLEX_CAPTURE_CORPUS") == "" {
		t.Skip("set DUPLEX_CAPTURE_CORPUS=1 to capture the fuzz corpus")
	}
	ctx := t.Context()
	db := testenv.Postgres(t)
	testenv.RequireLogical(t, db)
	for _, sql := range []string{
		"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
		`CREATE TABLE t (id bigint PRIMARY KEY, name text, n bigint, note text, f8 float8, f4 real, ok bool,
			data bytea, ts timestamptz, tsn timestamp, d date, j json, jb jsonb, tags text[], num numeric,
			u uuid, i2 smallint, i4 integer, vc varchar, mood mood)`,
		"ALTER TABLE t REPLICA IDENTITY FULL",
		"ALTER TABLE t ALTER COLUMN note SET STORAGE EXTERNAL",
		"CREATE PUBLICATION corpus FOR TABLE t",
		"SELECT pg_create_logical_replication_slot('corpus', 'pgoutput')",
		"SELECT pg_replication_origin_create('duplex_s')",
	} {
		_, err := db.Pool.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	t.Cleanup(func() { _, _ = db.Pool.Exec(context.Background(), "SELECT pg_replication_origin_drop('duplex_s')") })
	var relID uint32
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT 't'::regclass::oid").Scan(&relID))

	row := func(id int) string {
		return fmt.Sprintf(`(%d, 'name %d', %d, NULL, 1.5, '-0', true, '\x00ff', '2024-02-29 12:34:56.789+01',
			'2024-02-29 12:34:56', '0044-03-15 BC', '{"a": 1, "a": 2}', '{"b": [1, 2]}', '{"a,b",c,NULL}', 'NaN',
			'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', -32768, 2147483647, 'ñ', 'happy')`, id, id, id)
	}
	for _, sql := range []string{
		"INSERT INTO t VALUES " + row(1) + ", " + row(2),
		"UPDATE t SET note = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 100) g) WHERE id = 1",
		"UPDATE t SET n = n + 1 WHERE id = 1", // note unchanged: 'u'
		"UPDATE t SET id = 3 WHERE id = 2",
		"DELETE FROM t WHERE id = 3",
		"BEGIN; SELECT pg_logical_emit_message(true, 'duplex_test', 'payload'); INSERT INTO t VALUES " + row(4) + "; COMMIT",
		"TRUNCATE t",
		"INSERT INTO t (id) VALUES (5)",
	} {
		_, err := db.Pool.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	// A transaction made under a replication origin.
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	for _, sql := range []string{
		"SELECT pg_replication_origin_session_setup('duplex_s')",
		"INSERT INTO t (id, name) VALUES (6, 'origin')",
		"SELECT pg_replication_origin_session_reset()",
	} {
		_, err := conn.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	conn.Release()
	_, err = db.Pool.Exec(ctx, "INSERT INTO t (id) VALUES (999)")
	require.NoError(t, err)

	rconn, err := pgconn.Connect(ctx, db.ReplicationURL())
	require.NoError(t, err)
	defer rconn.Close(context.Background())
	require.NoError(t, pglogrepl.StartReplication(ctx, rconn, "corpus", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'corpus'", "messages 'true'"},
	}))
	var msgs [][]byte
	deadline := time.Now().Add(time.Minute)
	for done := false; !done; {
		require.True(t, time.Now().Before(deadline), "capture timed out")
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		msg, err := rconn.ReceiveMessage(rctx)
		cancel()
		require.NoError(t, err)
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || len(cd.Data) == 0 || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		require.NoError(t, err)
		m := append([]byte(nil), xld.WALData...)
		msgs = append(msgs, m)
		if m[0] == 'I' {
			if _, c := decodeAll(t, relID, msgs[len(msgs)-1:]); c == nil {
				continue
			}
		}
		// The last insert (id 999) ends the workload after its commit.
		if m[0] == 'C' && len(msgs) > 2 && msgs[len(msgs)-2][0] == 'I' {
			_, changes := decodeAll(t, relID, msgs)
			if n := len(changes); n > 0 && changes[n-1].Key[0].Value == int64(999) {
				done = true
			}
		}
	}

	// The real messages decode, in order.
	_, changes := decodeAll(t, relID, msgs)
	var ops []string
	for _, c := range changes {
		ops = append(ops, c.Op.String())
	}
	t.Logf("captured %d messages, %d changes: %v", len(msgs), len(changes), ops)

	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	count := map[byte]int{}
	for _, m := range msgs {
		if count[m[0]] >= 4 {
			continue
		}
		count[m[0]]++
		m = rewriteRelID(m, relID, fuzzRelID)
		name := fmt.Sprintf("captured-%c-%d", m[0], count[m[0]])
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(m)) + ")\n"
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	t.Logf("wrote %v", count)
}

// decodeAll decodes msgs with a fresh decoder whose relation relID has key
// id; it returns the events and changes.
func decodeAll(t *testing.T, relID uint32, msgs [][]byte) ([]event, []duplex.Change) {
	t.Helper()
	d := newDecoder("corpus", "a", []string{"duplex_s"}, keyID)
	var evs []event
	var changes []duplex.Change
	for _, m := range msgs {
		var c duplex.Change
		ev, err := d.decode(m, &c)
		if err != nil && (m[0] == 'I' || m[0] == 'U' || m[0] == 'D') && d.relations[relID] == nil {
			continue // the relation message came before the captured window
		}
		require.NoError(t, err, "%q message", m[0])
		evs = append(evs, ev)
		if ev == evChange {
			changes = append(changes, c)
		}
	}
	return evs, changes
}

// rewriteRelID replaces relation ID from by to in a Relation, row or
// Truncate message.
func rewriteRelID(m []byte, from, to uint32) []byte {
	put := func(off int) {
		if off+4 <= len(m) && binary.BigEndian.Uint32(m[off:]) == from {
			binary.BigEndian.PutUint32(m[off:], to)
		}
	}
	switch m[0] {
	case 'R', 'I', 'U', 'D':
		put(1)
	case 'T':
		if len(m) >= 6 {
			n := int(binary.BigEndian.Uint32(m[1:]))
			for i := 0; i < n; i++ {
				put(6 + 4*i)
			}
		}
	}
	return m
}
