package applypg

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// TriggerConfig says which triggers fire on the rows an Applier writes.
type TriggerConfig struct {
	// All applies with session_replication_role = origin, as a user's
	// session does: every enabled trigger fires on applied rows (a "touch"
	// trigger then rewrites the synced updated_at with the apply time, an
	// audit trigger logs each synced change a second time) and foreign
	// keys are checked on apply. false: replica, as logical replication.
	All bool
	// Fire names triggers ("schema.table.trigger", or "table.trigger" in
	// public) that should fire on applied rows all the same: New marks
	// each ENABLE ALWAYS (ALTER TABLE ... ENABLE ALWAYS TRIGGER ...), which
	// keeps it firing for the application's own writes too, and logs what
	// it changed. The role must own the tables.
	Fire []string
}

// ReplicaRole reports whether the Applier's sessions run with
// session_replication_role = replica: only ENABLE ALWAYS and ENABLE
// REPLICA triggers fire on the rows it writes, and foreign keys are not
// checked on them. It is false when TriggerConfig.All is set or when the
// role may not set the parameter (New then logs a warning with the fix).
func (a *Applier) ReplicaRole() bool { return a.replica }

// ReplicaRoleFix is the SQL that lets role set session_replication_role
// (PostgreSQL 15 and later; before that only a superuser may).
func ReplicaRoleFix(role string) string {
	return "GRANT SET ON PARAMETER session_replication_role TO " + pgx.Identifier{role}.Sanitize()
}

// CanSetReplicaRole reports whether the pool's role may set
// session_replication_role = replica, by trying it in a transaction that
// is rolled back; it also returns the role's name.
func CanSetReplicaRole(ctx context.Context, pool *pgxpool.Pool) (ok bool, role string, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT current_user").Scan(&role); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica")
		if pgutil.SQLState(err) == "42501" { // insufficient_privilege
			return errNoReplicaRole
		}
		ok = err == nil
		return err
	})
	if errors.Is(err, errNoReplicaRole) {
		return false, role, nil
	}
	if err != nil {
		return false, role, pgutil.Classify(fmt.Errorf("applypg: try session_replication_role = replica: %w", err))
	}
	return ok, role, nil
}

var errNoReplicaRole = errors.New("applypg: may not set session_replication_role")

// setupTriggers decides the apply sessions' replication role and marks
// the triggers of Triggers.Fire ENABLE ALWAYS.
func (a *Applier) setupTriggers(ctx context.Context) error {
	var errs []error
	for _, name := range a.cfg.Triggers.Fire {
		if err := a.fireAlways(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if a.cfg.Triggers.All {
		a.log.InfoContext(ctx, "applying with every trigger enabled (Triggers.All)")
		return nil
	}
	ok, role, err := CanSetReplicaRole(ctx, a.pool)
	if err != nil {
		return fmt.Errorf("applypg: %s: %w", a.cfg.Target, err)
	}
	a.replica = ok
	if !ok {
		a.log.WarnContext(ctx, "the role may not set session_replication_role: user triggers will fire on applied rows and foreign keys are checked on apply",
			"role", role, "fix", ReplicaRoleFix(role))
	}
	return nil
}

// fireAlways marks one trigger of Triggers.Fire ENABLE ALWAYS, unless it is.
func (a *Applier) fireAlways(ctx context.Context, name string) error {
	parts := strings.Split(name, ".")
	if len(parts) == 2 {
		parts = append([]string{"public"}, parts...)
	}
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return &duplex.ConfigError{Field: "Triggers.Fire", Reason: fmt.Sprintf("%q is not schema.table.trigger or table.trigger", name)}
	}
	var enabled string
	err := a.pool.QueryRow(ctx, `SELECT t.tgenabled::text FROM pg_catalog.pg_trigger t
		JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND t.tgname = $3 AND NOT t.tgisinternal`, parts[0], parts[1], parts[2]).Scan(&enabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return &duplex.ConfigError{Field: "Triggers.Fire", Reason: fmt.Sprintf("%s: table %s.%s has no trigger %s", a.cfg.Target, parts[0], parts[1], parts[2])}
	}
	if err != nil {
		return pgutil.Classify(fmt.Errorf("applypg: %s: read trigger %s of %s.%s: %w", a.cfg.Target, parts[2], parts[0], parts[1], err))
	}
	if enabled == "A" {
		return nil
	}
	sql := "ALTER TABLE " + pgx.Identifier{parts[0], parts[1]}.Sanitize() + " ENABLE ALWAYS TRIGGER " + pgx.Identifier{parts[2]}.Sanitize()
	if _, err := a.pool.Exec(ctx, sql); err != nil {
		return pgutil.Classify(fmt.Errorf("applypg: %s: make trigger %s of %s.%s fire on applied rows (%s): %w", a.cfg.Target, parts[2], parts[0], parts[1], sql, err))
	}
	a.log.InfoContext(ctx, "trigger now fires on applied rows", "table", parts[0]+"."+parts[1], "trigger", parts[2], "sql", sql)
	return nil
}
