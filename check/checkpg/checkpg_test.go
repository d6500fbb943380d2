package checkpg_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/check/checkpg"
	"github.com/duplexsync/duplex/internal/testenv"
)

func logger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	_, err := pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err, sql)
}

func table(name string) duplex.Table { return duplex.Table{Schema: "public", Name: name} }

// pair is two fresh databases and a way to check them.
type pair struct {
	a, b *testenv.DB
}

func newPair(t *testing.T, ddlA, ddlB string) *pair {
	t.Helper()
	p := &pair{a: testenv.Postgres(t), b: testenv.Postgres(t)}
	exec(t, p.a.Pool, ddlA)
	exec(t, p.b.Pool, ddlB)
	return p
}

func (p *pair) check(t *testing.T, fix bool, tables []duplex.Table, mod ...func(*checkpg.Config)) *duplex.Report {
	t.Helper()
	cfg := checkpg.Config{Sync: "t", A: checkpg.Side{Name: "a", Pool: p.a.Pool}, B: checkpg.Side{Name: "b", Pool: p.b.Pool},
		Tables: tables, ReplicaIdentity: "set", Logger: logger(t)}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := checkpg.New(cfg)
	require.NoError(t, err)
	r, err := c.Check(t.Context(), duplex.CheckParams{Fix: fix})
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, r.Write(&out))
	t.Logf("report:\n%s", out.String())
	return r
}

// findings returns the findings of check about t with severity s whose
// What contains what.
func findings(r *duplex.Report, t duplex.Table, check string, s duplex.Severity, what string) []duplex.Finding {
	var out []duplex.Finding
	for _, f := range r.All() {
		if f.Table == t && f.Check == check && f.Severity == s && strings.Contains(f.What, what) {
			out = append(out, f)
		}
	}
	return out
}

// requireFinding checks that r has exactly one such finding and returns it.
func requireFinding(t *testing.T, r *duplex.Report, tb duplex.Table, check string, s duplex.Severity, what string) duplex.Finding {
	t.Helper()
	fs := findings(r, tb, check, s, what)
	require.Len(t, fs, 1, "one %s %s finding about %s containing %q in %v", s, check, tb, what, r.All())
	return fs[0]
}

const customers = `CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text, updated_at timestamptz NOT NULL DEFAULT now())`

// TestSameSchemasAreFine: identical tables with the same rows, no
// sequences, triggers or extra constraints: no blocker, no warning.
func TestSameSchemasAreFine(t *testing.T) {
	t.Parallel()
	seed := customers + `; INSERT INTO customers SELECT i, 'e' || i, 'n' || i, '2026-01-01' FROM generate_series(1, 500) i`
	p := newPair(t, seed, seed)
	r := p.check(t, false, []duplex.Table{table("customers")})
	require.Zero(t, r.Count(duplex.Blocker), "%v", r.All())
	require.Zero(t, r.Count(duplex.Warning), "%v", r.All())
	requireFinding(t, r, table("customers"), "rows", duplex.Fine, "500 rows on each side")
	requireFinding(t, r, table("customers"), "sample", duplex.Fine, "sampled rows are the same")
	requireFinding(t, r, table("customers"), "key", duplex.Fine, "primary key (id)")
}

// TestLargeTableSampledByPage: past 100,000 rows the sample keys come from
// random pages; the same rows on both sides compare the same.
func TestLargeTableSampledByPage(t *testing.T) {
	t.Parallel()
	seed := customers + `; INSERT INTO customers SELECT i, 'e' || i, 'n' || i, '2026-01-01' FROM generate_series(1, 150000) i; ANALYZE customers`
	p := newPair(t, seed, seed)
	r := p.check(t, false, []duplex.Table{table("customers")}, func(c *checkpg.Config) { c.SampleRows = 50 })
	f := requireFinding(t, r, table("customers"), "sample", duplex.Fine, "sampled rows are the same on both sides")
	require.False(t, strings.HasPrefix(f.What, "0 "), "some rows were sampled: %s", f.What)
	requireFinding(t, r, table("customers"), "rows", duplex.Fine, "150000 rows on each side")
}

// TestSchemaDifferencesAreReported: each kind of difference between the
// sides is detected and reported with its severity and fix.
func TestSchemaDifferencesAreReported(t *testing.T) {
	t.Parallel()
	p := newPair(t, `
		CREATE TABLE accounts (id bigint PRIMARY KEY);
		CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text, note varchar(10), status text DEFAULT 'new',
			score int CHECK (score >= 0), extra text, account bigint REFERENCES accounts,
			CONSTRAINT customers_email_key UNIQUE (email));
		CREATE TABLE visits (id bigint PRIMARY KEY, customer bigint REFERENCES customers ON DELETE CASCADE);
		CREATE TABLE nokey (x int);
		INSERT INTO customers (id, email, name) VALUES (1, 'a@x', 'ann'), (2, 'b@x', 'bob');
		ALTER TABLE customers REPLICA IDENTITY FULL;`, `
		CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text NOT NULL, note text, status text DEFAULT 'active',
			score int, account bigint,
			CONSTRAINT customers_email_key UNIQUE (email), CONSTRAINT customers_name_key UNIQUE (name));
		CREATE TABLE nokey (x int);
		INSERT INTO customers (id, email, name) VALUES (1, 'a@x', 'anne');`)
	cu := table("customers")
	r := p.check(t, false, []duplex.Table{cu, table("nokey"), table("missing")}, func(c *checkpg.Config) { c.ReplicaIdentity = "full" })

	requireFinding(t, r, table("missing"), "table", duplex.Blocker, "does not exist on a")
	requireFinding(t, r, table("missing"), "table", duplex.Blocker, "does not exist on b")
	f := requireFinding(t, r, table("nokey"), "key", duplex.Blocker, "no primary key on a")
	require.Contains(t, f.Fix, "ADD PRIMARY KEY")
	f = requireFinding(t, r, cu, "columns", duplex.Warning, "column extra is on a only")
	require.Equal(t, `on b: ALTER TABLE "public"."customers" ADD COLUMN "extra" text`, f.Fix)
	f = requireFinding(t, r, cu, "columns", duplex.Warning, "column note is character varying(10) on a, text on b")
	require.Contains(t, f.Fix, `ALTER COLUMN "note" TYPE character varying(10)`)
	f = requireFinding(t, r, cu, "columns", duplex.Warning, "column name is NOT NULL on b only")
	require.Contains(t, f.Fix, `on a: ALTER TABLE "public"."customers" ALTER COLUMN "name" SET NOT NULL`)
	requireFinding(t, r, cu, "columns", duplex.Warning, "column status defaults to 'new'::text on a, 'active'::text on b")
	f = requireFinding(t, r, cu, "checks", duplex.Warning, "customers_score_check CHECK ((score >= 0)) is on a only")
	require.Contains(t, f.Fix, `on b: ALTER TABLE "public"."customers" ADD CONSTRAINT "customers_score_check" CHECK ((score >= 0))`)
	f = requireFinding(t, r, cu, "unique", duplex.Warning, "customers_email_key UNIQUE (email) on both sides")
	require.Contains(t, f.Why, "dead-letter queue with both rows and the constraint's name")
	requireFinding(t, r, cu, "unique", duplex.Warning, "customers_name_key UNIQUE (name) is on b only")
	f = requireFinding(t, r, cu, "foreign_keys", duplex.Warning, "customers_account_fkey on a references public.accounts, which is not synced")
	require.Contains(t, f.Why, "written without its parent")
	requireFinding(t, r, cu, "foreign_keys", duplex.Warning, "customers_account_fkey FOREIGN KEY (account) REFERENCES accounts(id) is on a only")
	f = requireFinding(t, r, cu, "foreign_keys", duplex.Warning, "visits_customer_fkey of public.visits (not synced) on a references this table (ON DELETE CASCADE)")
	require.Contains(t, f.Why, "does not cascade")
	requireFinding(t, r, cu, "replica_identity", duplex.Fine, "REPLICA IDENTITY FULL on a")
	f = requireFinding(t, r, cu, "replica_identity", duplex.Blocker, "REPLICA IDENTITY DEFAULT on b")
	require.Contains(t, f.Fix, `ALTER TABLE "public"."customers" REPLICA IDENTITY FULL`)
	requireFinding(t, r, cu, "rows", duplex.Warning, "2 rows on a, 1 on b")
	requireFinding(t, r, cu, "sample", duplex.Warning, "2 of 2 sampled rows differ between the sides; first: key (id)=(1): column name differs")

	// With the source setting the replica identity, that blocker goes.
	r = p.check(t, false, []duplex.Table{cu})
	requireFinding(t, r, cu, "replica_identity", duplex.Fine, "REPLICA IDENTITY DEFAULT on b: set to FULL at start")
	require.Zero(t, r.Count(duplex.Blocker), "%v", r.All())
}

// touchDDL is the common "touch" trigger and an audit trigger.
const touchDDL = customers + `;
CREATE TABLE audit (id bigint);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NULL; END $$;
CREATE TRIGGER touch BEFORE INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER audit AFTER INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION audit();`

// TestTriggersReported: in replica mode ordinary triggers are fine, an
// ENABLE ALWAYS one warns, one listed to fire is fine; a role that may
// not set session_replication_role gets the GRANT, each trigger that will
// fire named, and the foreign keys that must be DEFERRABLE.
func TestTriggersReported(t *testing.T) {
	t.Parallel()
	p := newPair(t, touchDDL+`; ALTER TABLE customers ENABLE ALWAYS TRIGGER audit;`, touchDDL)
	cu := table("customers")
	r := p.check(t, false, []duplex.Table{cu})
	requireFinding(t, r, cu, "triggers", duplex.Fine, "trigger touch on a does not fire on applied rows")
	requireFinding(t, r, cu, "triggers", duplex.Fine, "trigger touch on b does not fire on applied rows")
	f := requireFinding(t, r, cu, "triggers", duplex.Warning, "trigger audit on a is ENABLE ALWAYS")
	require.Contains(t, f.Fix, `ALTER TABLE "public"."customers" ENABLE TRIGGER "audit"`)
	requireFinding(t, r, duplex.Table{}, "privileges", duplex.Fine, "on a the sync applies with session_replication_role = replica")

	r = p.check(t, false, []duplex.Table{cu}, func(c *checkpg.Config) { c.Triggers.Fire = []string{"customers.audit"} })
	requireFinding(t, r, cu, "triggers", duplex.Fine, "trigger audit on a fires on applied rows, as configured")
	requireFinding(t, r, cu, "triggers", duplex.Fine, "trigger audit on b fires on applied rows, as configured")

	// Without the right to set session_replication_role, on b.
	exec(t, p.b.Pool, `CREATE TABLE orders (id bigint PRIMARY KEY, customer bigint REFERENCES customers)`)
	exec(t, p.a.Pool, `CREATE TABLE orders (id bigint PRIMARY KEY, customer bigint REFERENCES customers)`)
	role := testenv.Role(t, p.b)
	exec(t, p.b.Pool, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO "+role)
	p.b = &testenv.DB{URL: p.b.URL, Name: p.b.Name, Pool: testenv.ConnectAs(t, p.b, role)}
	r = p.check(t, false, []duplex.Table{cu, table("orders")})
	f = requireFinding(t, r, duplex.Table{}, "privileges", duplex.Warning, "on b the role "+role+" may not set session_replication_role")
	require.Contains(t, f.Fix, applypg.ReplicaRoleFix(role))
	f = requireFinding(t, r, cu, "triggers", duplex.Warning, "trigger touch on b fires on applied rows: the role "+role+" may not set session_replication_role")
	require.Contains(t, f.Fix, `GRANT SET ON PARAMETER session_replication_role TO "`+role+`"`)
	requireFinding(t, r, cu, "triggers", duplex.Warning, "trigger audit on b fires on applied rows")
	f = requireFinding(t, r, table("orders"), "foreign_keys", duplex.Warning, "orders_customer_fkey on b references synced public.customers (ON DELETE NO ACTION), checked at once")
	require.Contains(t, f.Fix, `ADD CONSTRAINT "orders_customer_fkey" FOREIGN KEY (customer) REFERENCES customers(id) DEFERRABLE INITIALLY DEFERRED`)
	requireFinding(t, r, table("orders"), "foreign_keys", duplex.Fine, "orders_customer_fkey on a references synced public.customers")
}
