package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex/cdc/pglogical"
)

// dbPrefix starts the name of every database, slot, publication,
// subscription and sync the benchmark creates; -cleanup removes leftovers
// by it.
const dbPrefix = "duplex_bench_"

// dataset is what a run's two databases hold besides the marker tables:
// tables seeded identically on both sides before replication starts, and
// the statements the workloads write them with.
type dataset struct {
	// table is the table the update workloads write.
	table string
	ddl   []string
	// seed inserts $1 rows into table (the same rows on both sides).
	seed string
	// updateRange updates the rows $1 < id <= $2 of table, updateOne the
	// row id = $1, updateKeys the rows id = ANY($1).
	updateRange, updateOne, updateKeys string
	// sum returns a scalar (as text) that is the same on both sides once
	// every update has arrived; with sumCounts it is an integer counting
	// the updates that arrived.
	sum       string
	sumCounts bool
	// insertBig inserts $1 new rows in one statement; countBig counts the
	// rows it added.
	insertBig, countBig string
	// published lists the tables native replication publishes a -> b.
	published string
}

// itemsData is the one-way workloads' dataset: items (every update adds 1
// to v, which starts at 0 everywhere, so sum(v) counts the updates that
// arrived) and big (the large transaction).
var itemsData = &dataset{
	table: "items",
	ddl: []string{
		`CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL DEFAULT 0, payload text NOT NULL)`,
		`CREATE TABLE big (id bigint PRIMARY KEY, a bigint NOT NULL, b text NOT NULL, c timestamptz NOT NULL)`,
	},
	seed:        `INSERT INTO items (id, v, payload) SELECT g, 0, repeat('x', 40) || g FROM generate_series(1, $1::int) g`,
	updateRange: `UPDATE items SET v = v + 1 WHERE id > $1 AND id <= $2`,
	updateOne:   `UPDATE items SET v = v + 1 WHERE id = $1`,
	updateKeys:  `UPDATE items SET v = v + 1 WHERE id = ANY($1)`,
	sum:         `SELECT coalesce(sum(v), 0)::text FROM items`,
	sumCounts:   true,
	insertBig:   `INSERT INTO big SELECT g, g, 'row number ' || g, now() FROM generate_series(1, $1::int) g`,
	countBig:    `SELECT count(*) FROM big`,
	published:   "items, big, marks_ab",
}

// customersData is the two-way workloads' dataset (issue 18): customers,
// written as an application would, with updated_at = now() (so pgbisync's
// default last-writer-wins compares it). Every update sets updated_at to
// its transaction's start, so the sum of updated_at is the same on both
// sides once the last update of every row has arrived; the workloads
// then compare the full row sets.
var customersData = &dataset{
	table: "customers",
	ddl: []string{`CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, payment_status text NOT NULL,
		last_activity timestamptz NOT NULL, updated_at timestamptz NOT NULL, notes text)`},
	seed: `INSERT INTO customers SELECT g, 'customer ' || g, 'customer' || g || '@example.com', CASE WHEN g % 10 = 0 THEN 'overdue' ELSE 'paid' END,
		timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', 'seeded'
		FROM generate_series(1, $1::int) g`,
	updateRange: `UPDATE customers SET ` + customerUpdate + ` WHERE id > $1 AND id <= $2`,
	updateOne:   `UPDATE customers SET ` + customerUpdate + ` WHERE id = $1`,
	updateKeys:  `UPDATE customers SET ` + customerUpdate + ` WHERE id = ANY($1)`,
	sum:         `SELECT coalesce(sum(extract(epoch FROM updated_at)), 0)::text FROM customers`,
	insertBig: `INSERT INTO customers SELECT ` + bigBase + ` + g, 'new customer ' || g, 'new' || g || '@example.com', 'trial', now(), now(), 'bulk load'
		FROM generate_series(1, $1::int) g`,
	countBig:  `SELECT count(*) FROM customers WHERE id > ` + bigBase,
	published: "customers, marks_ab",
}

// customerUpdate is what an update of a customer sets.
const customerUpdate = `payment_status = CASE payment_status WHEN 'paid' THEN 'due' ELSE 'paid' END, last_activity = now(), updated_at = now()`

// bigBase is the id after which the large transaction inserts customers.
const bigBase = "1000000000"

// markDDL returns the marker table name: written on its source with the
// write time in sent, and on the target (withArrived) with an extra column
// that the apply fills with its own clock by default.
func markDDL(name string, withArrived bool) string {
	ddl := "CREATE TABLE " + name + " (id bigint PRIMARY KEY, sent timestamptz NOT NULL"
	if withArrived {
		ddl += ", arrived timestamptz DEFAULT clock_timestamp()"
	}
	return ddl + ")"
}

// cluster is the PostgreSQL server the benchmark runs on, with an
// administrative pool to its maintenance database.
type cluster struct {
	url   string
	admin *pgxpool.Pool

	mu   sync.Mutex
	live map[string]*pair // pairs not yet dropped, by sync name
}

func newCluster(ctx context.Context, serverURL string) (*cluster, error) {
	admin, err := pgxpool.New(ctx, serverURL)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", serverURL, err)
	}
	if err := admin.Ping(ctx); err != nil {
		admin.Close()
		return nil, fmt.Errorf("connect to %s: %w (is PostgreSQL running? try make services)", serverURL, err)
	}
	var level string
	if err := admin.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		admin.Close()
		return nil, err
	}
	if level != "logical" {
		admin.Close()
		return nil, fmt.Errorf("wal_level is %q on %s, want logical (try make services)", level, serverURL)
	}
	return &cluster{url: serverURL, admin: admin, live: map[string]*pair{}}, nil
}

// dbURL returns the server URL pointed at database name, with extra
// query parameters.
func (c *cluster) dbURL(name string, params map[string]string) string {
	u, err := url.Parse(c.url)
	if err != nil {
		panic(fmt.Sprintf("bench: server URL %q: %v", c.url, err)) // checked by newCluster's connect
	}
	u.Path = "/" + name
	q := u.Query()
	for k, v := range params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// libpqConn returns the key=value connection string of database name, for
// CREATE SUBSCRIPTION.
func (c *cluster) libpqConn(name string) (string, error) {
	cfg, err := pgx.ParseConfig(c.url)
	if err != nil {
		return "", err
	}
	s := fmt.Sprintf("host=%s port=%d user=%s dbname=%s", cfg.Host, cfg.Port, cfg.User, name)
	if cfg.Password != "" {
		s += " password=" + cfg.Password
	}
	return s, nil
}

// pair is the two databases of one run: a and b, each with the benchmark's
// tables, and what replicates between them.
type pair struct {
	sync   string // sync, slot and subscription base name
	a, b   string // database names
	urlA   string // the URL of a for the benchmark's writers
	data   *dataset
	poolA  *pgxpool.Pool
	poolB  *pgxpool.Pool
	native bool // a publication, slot and subscription a -> b exist
	// release starts a replication started held (nil: not held).
	release func(context.Context) error
}

// nativeSlot is the slot (and publication, and subscription) name of the
// native replication of p.
func (p *pair) nativeSlot() string { return p.sync + "_native" }

// newPair creates the two databases of a run with the tables of d and
// seeds them with rows.
func (c *cluster) newPair(ctx context.Context, sync string, d *dataset, rows int) (*pair, error) {
	p := &pair{sync: sync, a: sync + "_a", b: sync + "_b", data: d}
	p.urlA = c.dbURL(p.a, map[string]string{"application_name": "duplex_bench_load"})
	c.mu.Lock()
	c.live[sync] = p
	c.mu.Unlock()
	for _, side := range []struct {
		name string
		pool **pgxpool.Pool
		own  string // the marker table written here
		peer string // the marker table arriving here
	}{{p.a, &p.poolA, "marks_ab", "marks_ba"}, {p.b, &p.poolB, "marks_ba", "marks_ab"}} {
		if _, err := c.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{side.name}.Sanitize()); err != nil {
			return p, fmt.Errorf("create database %s: %w", side.name, err)
		}
		pool, err := pgxpool.New(ctx, c.dbURL(side.name, map[string]string{"pool_max_conns": "16", "application_name": "duplex_bench_load"}))
		if err != nil {
			return p, fmt.Errorf("connect to %s: %w", side.name, err)
		}
		*side.pool = pool
		for _, ddl := range append(slices.Clone(d.ddl), markDDL(side.own, false), markDDL(side.peer, true)) {
			if _, err := pool.Exec(ctx, ddl); err != nil {
				return p, fmt.Errorf("create tables in %s: %w", side.name, err)
			}
		}
		if _, err := pool.Exec(ctx, d.seed, rows); err != nil {
			return p, fmt.Errorf("seed %s in %s: %w", d.table, side.name, err)
		}
		if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+d.table); err != nil {
			return p, fmt.Errorf("vacuum %s in %s: %w", d.table, side.name, err)
		}
	}
	return p, nil
}

// startNative replicates a -> b with PostgreSQL's own logical replication:
// a publication and a pgoutput slot on a, a subscription on b that neither
// creates the slot (same cluster) nor copies data (both sides are seeded).
//
// With held, the subscription starts disabled: a backlog builds up in the
// slot until p.release enables it.
func (c *cluster) startNative(ctx context.Context, p *pair, held bool) error {
	slot := p.nativeSlot()
	p.native = true
	if _, err := p.poolA.Exec(ctx, "CREATE PUBLICATION "+slot+" FOR TABLE "+p.data.published); err != nil {
		return fmt.Errorf("create publication %s in %s: %w", slot, p.a, err)
	}
	if _, err := p.poolA.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
		return fmt.Errorf("create slot %s in %s: %w", slot, p.a, err)
	}
	conn, err := c.libpqConn(p.a)
	if err != nil {
		return err
	}
	if _, err := p.poolB.Exec(ctx, fmt.Sprintf("CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s WITH (create_slot = false, copy_data = false, slot_name = '%s', enabled = %t)",
		slot, strings.ReplaceAll(conn, "'", "''"), slot, slot, !held)); err != nil {
		return fmt.Errorf("create subscription %s in %s: %w", slot, p.b, err)
	}
	if held {
		p.release = func(ctx context.Context) error {
			if _, err := p.poolB.Exec(ctx, "ALTER SUBSCRIPTION "+slot+" ENABLE"); err != nil {
				return fmt.Errorf("enable subscription %s in %s: %w", slot, p.b, err)
			}
			return nil
		}
	}
	return nil
}

// nativePIDs returns the walsender of the native slot and the apply
// worker of the subscription.
func (c *cluster) nativePIDs(ctx context.Context, p *pair) (walsenders, appliers []int, err error) {
	walsenders, err = c.slotPIDs(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	rows, err := c.admin.Query(ctx, `SELECT pid FROM pg_stat_subscription WHERE subname = $1 AND pid IS NOT NULL`, p.nativeSlot())
	if err != nil {
		return nil, nil, err
	}
	appliers, err = pgx.CollectRows(rows, pgx.RowTo[int])
	return walsenders, appliers, err
}

// slotPIDs returns the walsenders streaming the pair's slots.
func (c *cluster) slotPIDs(ctx context.Context, p *pair) ([]int, error) {
	rows, err := c.admin.Query(ctx, `SELECT active_pid FROM pg_replication_slots s JOIN pg_database d ON d.oid = s.datoid
		WHERE d.datname IN ($1, $2) AND active_pid IS NOT NULL`, p.a, p.b)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// backendPIDs returns the client backends of the pair's databases that
// carry one of the application_names apps (the sync process's
// connections).
func (c *cluster) backendPIDs(ctx context.Context, p *pair, apps []string) ([]int, error) {
	rows, err := c.admin.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname IN ($1, $2) AND application_name = ANY($3) AND backend_type = 'client backend'`, p.a, p.b, apps)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// dropPair removes everything of a run: the subscription, the slots (after
// their walsenders exit), the databases and the replication origins of the
// sync. It is safe to call more than once and after partial setup.
func (c *cluster) dropPair(ctx context.Context, p *pair) error {
	var errs []error
	if p.poolA != nil {
		p.poolA.Close()
	}
	if p.poolB != nil {
		p.poolB.Close()
	}
	if err := c.dropSubscriptions(ctx, p.b); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.dropSlots(ctx, []string{p.a, p.b}))
	for _, db := range []string{p.a, p.b} {
		if _, err := c.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("drop database %s: %w", db, err))
		}
	}
	// The origins of the sync's appliers (the bench's sync process and
	// pgbisync alike) are pglogical.OriginName(sync) + ":" + side.
	if _, err := c.admin.Exec(ctx, `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE starts_with(roname, $1)`, pglogical.OriginName(p.sync)+":"); err != nil {
		errs = append(errs, fmt.Errorf("drop replication origins of %s: %w", p.sync, err))
	}
	c.mu.Lock()
	delete(c.live, p.sync)
	c.mu.Unlock()
	return errors.Join(errs...)
}

// dropSubscriptions drops the subscriptions of database db, detaching
// them from their slots first (dropSlots removes those).
func (c *cluster) dropSubscriptions(ctx context.Context, db string) error {
	rows, err := c.admin.Query(ctx, `SELECT s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = $1`, db)
	if err != nil {
		return fmt.Errorf("list subscriptions of %s: %w", db, err)
	}
	subs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(subs) == 0 {
		return err
	}
	conn, err := pgx.Connect(ctx, c.dbURL(db, nil))
	if err != nil {
		return fmt.Errorf("connect to %s to drop its subscriptions: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, s := range subs {
		id := pgx.Identifier{s}.Sanitize()
		for _, stmt := range []string{"ALTER SUBSCRIPTION " + id + " DISABLE", "ALTER SUBSCRIPTION " + id + " SET (slot_name = NONE)", "DROP SUBSCRIPTION " + id} {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("drop subscription %s in %s: %s: %w", s, db, stmt, err)
			}
		}
	}
	return nil
}

// dropSlots terminates the walsenders of the slots of dbs, waits until
// the slots are inactive (up to 30 s) and drops them.
func (c *cluster) dropSlots(ctx context.Context, dbs []string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots s JOIN pg_database d ON d.oid = s.datoid
			WHERE d.datname = ANY($1) AND active_pid IS NOT NULL`, dbs); err != nil {
			return fmt.Errorf("terminate walsenders of %v: %w", dbs, err)
		}
		var active int
		if err := c.admin.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots s JOIN pg_database d ON d.oid = s.datoid
			WHERE d.datname = ANY($1) AND active`, dbs).Scan(&active); err != nil {
			return fmt.Errorf("read slots of %v: %w", dbs, err)
		}
		if active == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("slots of %v still active after 30s", dbs)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if _, err := c.admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots s JOIN pg_database d ON d.oid = s.datoid
		WHERE d.datname = ANY($1) AND NOT active`, dbs); err != nil {
		return fmt.Errorf("drop slots of %v: %w", dbs, err)
	}
	return nil
}

// dropLive drops every pair not dropped yet: the clean-up on the way out,
// after an error or a signal.
func (c *cluster) dropLive() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.mu.Lock()
	var pairs []*pair
	for _, p := range c.live {
		pairs = append(pairs, p)
	}
	c.mu.Unlock()
	var errs []error
	for _, p := range pairs {
		errs = append(errs, c.dropPair(ctx, p))
	}
	return errors.Join(errs...)
}

// cleanupAll drops what any benchmark run left behind: databases named
// duplex_bench_*, their subscriptions and slots, and the origins of syncs
// named so. Do not run it while a benchmark runs.
func (c *cluster) cleanupAll(ctx context.Context) (int, error) {
	rows, err := c.admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'duplex\_bench\_%'`)
	if err != nil {
		return 0, err
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, db := range dbs {
		errs = append(errs, c.dropSubscriptions(ctx, db))
	}
	errs = append(errs, c.dropSlots(ctx, dbs))
	for _, db := range dbs {
		if _, err := c.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("drop database %s: %w", db, err))
		}
	}
	if _, err := c.admin.Exec(ctx, `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname LIKE 'duplex:duplex\_bench\_%'`); err != nil {
		errs = append(errs, fmt.Errorf("drop replication origins: %w", err))
	}
	return len(dbs), errors.Join(errs...)
}
