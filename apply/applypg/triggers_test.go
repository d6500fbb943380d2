package applypg_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/internal/testenv"
)

// triggersDDL gives items the two triggers of the issue: a "touch" trigger
// rewriting note on every write, and an audit trigger logging every write.
const triggersDDL = itemsDDL + `;
CREATE TABLE audit (seq bigserial PRIMARY KEY, id bigint NOT NULL);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := 'touched'; RETURN NEW; END $$;
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (id) VALUES (NEW.id); RETURN NULL; END $$;
CREATE TRIGGER touch BEFORE INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER audit AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION audit();`

// TestUserTriggersDoNotFireOnAppliedRows: by default the Applier writes
// in replica mode: the touch and audit triggers stay silent on applied
// rows (the synced note is kept as sent), while they still fire for a
// user's own writes; a trigger listed in Triggers.Fire is marked ENABLE
// ALWAYS and fires on applied rows; Triggers.All fires them all.
func TestUserTriggersDoNotFireOnAppliedRows(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	note := func(db *testenv.DB, id int64) string {
		var s string
		require.NoError(t, db.Pool.QueryRow(ctx, "SELECT note FROM items WHERE id = $1", id).Scan(&s))
		return s
	}
	write := func(id int64) duplex.Write {
		w := ins(id, "synced", 1)
		w.Set["note"] = "from a"
		return w
	}

	t.Run("default", func(t *testing.T) {
		t.Parallel()
		db := testenv.Postgres(t)
		exec(t, db, triggersDDL)
		a := newApplier(t, db, testenv.UniqueName(t, "s"))
		require.True(t, a.ReplicaRole(), "the test role (superuser) may set session_replication_role")
		require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{write(1)}}))
		require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{upd(1, duplex.Values{"n": int64(2)}, nil)}}))
		require.Equal(t, "from a", note(db, 1), "the touch trigger did not rewrite the applied row")
		require.Zero(t, count(t, db, "SELECT count(*) FROM audit"), "the audit trigger did not log applied writes")
		exec(t, db, "INSERT INTO items (id, name, n) VALUES (2, 'user', 1)")
		require.Equal(t, "touched", note(db, 2), "the user's own writes still fire it")
		require.Equal(t, 1, count(t, db, "SELECT count(*) FROM audit"))
		// The pool's connections went back in origin mode.
		var role string
		require.NoError(t, db.Pool.QueryRow(ctx, "SHOW session_replication_role").Scan(&role))
		require.Equal(t, "origin", role)
	})
	t.Run("fire", func(t *testing.T) {
		t.Parallel()
		db := testenv.Postgres(t)
		exec(t, db, triggersDDL)
		a := newApplier(t, db, testenv.UniqueName(t, "s"), func(c *applypg.Config) { c.Triggers.Fire = []string{"items.audit"} })
		require.Equal(t, 1, count(t, db, "SELECT count(*) FROM pg_trigger WHERE tgname = 'audit' AND tgenabled = 'A'"), "marked ENABLE ALWAYS")
		require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{write(1)}}))
		require.Equal(t, "from a", note(db, 1))
		require.Equal(t, 1, count(t, db, "SELECT count(*) FROM audit"), "the listed trigger fired")
		_, err := applypg.New(ctx, db.Pool, applypg.Config{Sync: testenv.UniqueName(t, "s"), Target: "b", Logger: logger(t),
			Triggers: applypg.TriggerConfig{Fire: []string{"items.nosuch", "a.b.c.d"}}})
		require.ErrorContains(t, err, "table public.items has no trigger nosuch")
		require.ErrorContains(t, err, `"a.b.c.d" is not schema.table.trigger`)
	})
	t.Run("all", func(t *testing.T) {
		t.Parallel()
		db := testenv.Postgres(t)
		exec(t, db, triggersDDL)
		a := newApplier(t, db, testenv.UniqueName(t, "s"), func(c *applypg.Config) { c.Triggers.All = true })
		require.False(t, a.ReplicaRole())
		require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{write(1)}}))
		require.Equal(t, "touched", note(db, 1))
		require.Equal(t, 1, count(t, db, "SELECT count(*) FROM audit"))
	})
}

// TestReplicaRoleNeedsThePrivilege: a role that may not set
// session_replication_role is told so (CanSetReplicaRole), with the GRANT
// that fixes it; after the GRANT it may.
func TestReplicaRoleNeedsThePrivilege(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	role := testenv.Role(t, db)
	pool := testenv.ConnectAs(t, db, role)
	ok, name, err := applypg.CanSetReplicaRole(t.Context(), pool)
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, role, name)
	exec(t, db, applypg.ReplicaRoleFix(role))
	ok, _, err = applypg.CanSetReplicaRole(t.Context(), pool)
	require.NoError(t, err)
	require.True(t, ok, "after %s", applypg.ReplicaRoleFix(role))
}
