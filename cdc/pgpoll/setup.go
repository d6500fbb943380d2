package pgpoll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/backoff"
	"github.com/duplexsync/duplex/internal/pgstate"
	"github.com/duplexsync/duplex/internal/pgutil"
	"github.com/duplexsync/duplex/internal/pgvalue"
)

// DeleteDetection chooses how deletes are captured.
type DeleteDetection int

// The ways of detecting deletes.
const (
	// DeletesNone captures no deletes.
	DeletesNone DeleteDetection = iota
	// DeletesTombstones installs an AFTER DELETE trigger per table that
	// records deleted keys in the sync's own schema (opt-in).
	DeletesTombstones
	// DeletesKeyDiff compares the keys last emitted with the table's every
	// Config.KeyDiffEvery.
	DeletesKeyDiff
)

// String returns "none", "tombstones" or "keydiff".
func (d DeleteDetection) String() string {
	switch d {
	case DeletesNone:
		return "none"
	case DeletesTombstones:
		return "tombstones"
	case DeletesKeyDiff:
		return "keydiff"
	}
	return fmt.Sprintf("DeleteDetection(%d)", int(d))
}

// Config configures a polling Source.
type Config struct {
	// ConnString connects to the polled database (URL or key=value form).
	// Required.
	ConnString string
	// Sync names the sync; the state rows and the tombstone trigger carry
	// it. Required.
	Sync string
	// System names this database in the sync ("a", "crm"); it becomes
	// Change.Source. Required.
	System string
	// Tables lists the tables to poll. Each needs a primary key and the
	// timestamp column. Required.
	Tables []duplex.Table
	// Column is the timestamp column (timestamp or timestamptz) that every
	// write sets. "": "updated_at". An index on (Column, primary key)
	// keeps passes cheap. timestamptz is recommended: see ColumnTimeZone
	// for timestamp (without time zone).
	Column string
	// ColumnTimeZone is the TimeZone of the sessions that write a Column
	// of type timestamp without time zone (now() stores the wall-clock
	// time of the writer's zone): a name PostgreSQL knows, such as an IANA
	// name ("America/New_York"). The source reads such columns in this
	// zone. "": the TimeZone a new session of ConnString gets, that is the
	// database's, the role's or the server's default, or one set by
	// ConnString itself (timezone, options, PGTZ); set it when the writers
	// set their zone per session. Unused for timestamptz columns. See the
	// package documentation, "Timestamp without time zone".
	ColumnTimeZone string
	// PageSize is the most rows read per query, and so the most changes
	// delivered per batch. 0: 1000.
	PageSize int
	// Interval is the pause between passes that reached the end of every
	// table. 0: 200ms.
	Interval time.Duration
	// Overlap is subtracted from the safe point of every pass, for
	// timestamps set by application clocks that may run behind the
	// database's. 0: none.
	Overlap time.Duration
	// DeleteDetection chooses how deletes are captured. Zero: DeletesNone.
	DeleteDetection DeleteDetection
	// KeyDiffEvery is how often DeletesKeyDiff compares keys. 0: 10s.
	KeyDiffEvery time.Duration
	// StateSchema is the sync's own schema. "": pgstate.DefaultSchema.
	StateSchema string
	// ReconnectMin and ReconnectMax bound the backoff after a failed pass.
	// 0: 100ms and 10s.
	ReconnectMin, ReconnectMax time.Duration
	// Logger receives logs. nil: slog.Default().
	Logger *slog.Logger
}

// Source polls tables by a timestamp column. It implements
// duplex.ChangeSource; see the package documentation.
type Source struct {
	cfg   Config
	log   *slog.Logger
	pool  *pgxpool.Pool
	retry backoff.Policy
	names stateNames

	connZone *string // the connection string's TimeZone, if it sets one

	setupMu sync.Mutex
	tables  []*tableMeta // set by Setup
	byName  map[string]*tableMeta
	zone    string // the writers' TimeZone, for timestamp columns; set by Setup

	ackMu sync.Mutex // serialises Acks
	mu    sync.Mutex
	st    *progress // emitted, unacknowledged state; nil before Stream
}

var _ duplex.ChangeSource = (*Source)(nil)

// New checks cfg and connects to the database; it creates nothing (see
// Setup, which Stream also calls). Close releases the connections.
func New(ctx context.Context, cfg Config) (*Source, error) {
	errs := pgutil.CheckSource(cfg.ConnString, cfg.Sync, cfg.System, cfg.Tables)
	if cfg.PageSize < 0 || cfg.Interval < 0 || cfg.Overlap < 0 || cfg.KeyDiffEvery < 0 {
		errs = append(errs, &duplex.ConfigError{Field: "PageSize/Interval/Overlap/KeyDiffEvery", Reason: "must not be negative"})
	}
	if cfg.DeleteDetection < DeletesNone || cfg.DeleteDetection > DeletesKeyDiff {
		errs = append(errs, &duplex.ConfigError{Field: "DeleteDetection", Reason: fmt.Sprintf("unknown value %d", int(cfg.DeleteDetection))})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.Column == "" {
		cfg.Column = "updated_at"
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = 1000
	}
	if cfg.Interval == 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.KeyDiffEvery == 0 {
		cfg.KeyDiffEvery = 10 * time.Second
	}
	if cfg.StateSchema == "" {
		cfg.StateSchema = pgstate.DefaultSchema
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pcfg, err := pgxpool.ParseConfig(cfg.ConnString)
	if err != nil {
		return nil, duplex.Permanent(fmt.Errorf("pgpoll: %s: invalid connection string: %w", cfg.System, err))
	}
	// Timestamps travel as text: one time zone and date style for every
	// connection, so a watermark read back parses to the same instant.
	// Parameter names are case-insensitive: drop the connection string's
	// spellings, or the server may apply either. The connection string's
	// TimeZone stays what the zone of the writers defaults to (see
	// writersZone).
	var connZone *string
	for k, v := range pcfg.ConnConfig.RuntimeParams {
		switch strings.ToLower(k) {
		case "timezone":
			connZone = &v
			delete(pcfg.ConnConfig.RuntimeParams, k)
		case "datestyle":
			delete(pcfg.ConnConfig.RuntimeParams, k)
		}
	}
	pcfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	pcfg.ConnConfig.RuntimeParams["datestyle"] = "ISO, YMD"
	// Page queries must use the index on (timestamp, key) for the cursor at
	// hand; a generic plan of the prepared statement may not.
	pcfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	pcfg.ConnConfig.RuntimeParams["application_name"] = "duplex pgpoll " + pgutil.Sanitize(cfg.Sync) + "/" + pgutil.Sanitize(cfg.System)
	pcfg.MaxConns = 3
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("pgpoll: %s: connect: %w", cfg.System, err)
	}
	return &Source{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "cdc", "source", "pgpoll", "system", cfg.System),
		pool:     pool,
		retry:    backoff.Policy{Min: cfg.ReconnectMin, Max: cfg.ReconnectMax},
		names:    newStateNames(cfg.StateSchema),
		connZone: connZone,
	}, nil
}

// Close releases the source's connections. Call it after Stream returned.
func (s *Source) Close() { s.pool.Close() }

// TriggerName returns the name of the tombstone trigger a sync's system
// installs on its tables: "duplex_poll_<sync>__<system>", shortened with a
// hash past 63 bytes.
func TriggerName(sync, system string) string {
	return pgutil.ObjectName("duplex_poll_", sync, system)
}

// stateNames are the quoted names of the source's state tables.
type stateNames struct {
	schema, rows, watermark, position, tombstones, tombstoneFunc string
}

func newStateNames(schema string) stateNames {
	q := func(n string) string { return pgx.Identifier{schema, n}.Sanitize() }
	return stateNames{
		schema:        pgx.Identifier{schema}.Sanitize(),
		rows:          q("poll_rows"),
		watermark:     q("poll_watermark"),
		position:      q("poll_position"),
		tombstones:    q("poll_tombstones"),
		tombstoneFunc: q("poll_tombstone"),
	}
}

// ddl returns the statements creating the state tables (idempotent).
//
//   - poll_rows(sync, system, tbl, key, hash, image): the image last emitted
//     and acknowledged per row (column -> text form, or null), and its hash.
//   - poll_watermark(sync, system, tbl, ts, key): where the next pass of a
//     table starts: after (ts, key), or at ts when key is null; ts is in
//     the column's own text form.
//   - poll_position(sync, system, position): the last acknowledged position.
//   - poll_tombstones(id, sync, system, tbl, key, deleted_at): keys deleted
//     since the last acknowledgement (DeletesTombstones).
func (n stateNames) ddl() []string {
	return []string{
		"CREATE SCHEMA IF NOT EXISTS " + n.schema,
		`CREATE TABLE IF NOT EXISTS ` + n.rows + ` (
			sync text NOT NULL,
			system text NOT NULL,
			tbl text NOT NULL,
			key jsonb NOT NULL,
			hash text NOT NULL,
			image jsonb NOT NULL,
			PRIMARY KEY (sync, system, tbl, key))`,
		`CREATE TABLE IF NOT EXISTS ` + n.watermark + ` (
			sync text NOT NULL,
			system text NOT NULL,
			tbl text NOT NULL,
			ts text NOT NULL,
			key jsonb,
			updated_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (sync, system, tbl))`,
		`CREATE TABLE IF NOT EXISTS ` + n.position + ` (
			sync text NOT NULL,
			system text NOT NULL,
			position text NOT NULL,
			updated_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (sync, system))`,
		`CREATE TABLE IF NOT EXISTS ` + n.tombstones + ` (
			id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			sync text NOT NULL,
			system text NOT NULL,
			tbl text NOT NULL,
			key jsonb NOT NULL,
			deleted_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`CREATE INDEX IF NOT EXISTS poll_tombstones_sync ON ` + n.tombstones + ` (sync, system, tbl, id)`,
		// TG_ARGV: sync, system, table, then the primary-key columns. The
		// key is rendered as the source renders it: a JSON array of each
		// column cast to text.
		`CREATE OR REPLACE FUNCTION ` + n.tombstoneFunc + `() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	k jsonb;
	expr text := '';
	i int;
BEGIN
	FOR i IN 3 .. TG_NARGS - 1 LOOP
		IF expr <> '' THEN expr := expr || ', '; END IF;
		expr := expr || format('($1).%I::text', TG_ARGV[i]);
	END LOOP;
	EXECUTE 'SELECT jsonb_build_array(' || expr || ')' INTO k USING OLD;
	INSERT INTO ` + n.tombstones + ` (sync, system, tbl, key) VALUES (TG_ARGV[0], TG_ARGV[1], TG_ARGV[2], k);
	RETURN NULL;
END $$`,
	}
}

// column is one column of a polled table.
type column struct {
	name   string
	typ    string // format_type, for casts
	decode func([]byte) (any, error)
}

// tableMeta is what Setup learned about a table.
type tableMeta struct {
	idx    int
	table  duplex.Table
	name   string // table.String(), the tbl of the state rows
	quoted string
	cols   []column
	key    []int // indices of the primary-key columns in cols
	ts     int   // index of the timestamp column in cols
	wall   bool  // the timestamp column is timestamp without time zone
}

// Setup checks every table (it exists, has a primary key and the
// timestamp column, of type timestamp or timestamptz) and creates the
// state tables, and the tombstone triggers with DeletesTombstones. It is
// idempotent; Stream calls it when it was not called before.
func (s *Source) Setup(ctx context.Context) error {
	s.setupMu.Lock()
	defer s.setupMu.Unlock()
	if s.tables != nil {
		return nil
	}
	var metas []*tableMeta
	var errs []error
	for i, t := range s.cfg.Tables {
		m, err := s.inspect(ctx, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.idx = i
		metas = append(metas, m)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	zone, err := s.columnZone(ctx, metas)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('duplex pgpoll ' || $1))", s.cfg.StateSchema); err != nil {
			return err
		}
		// Only when something is missing: a role that owns none of it (but
		// may use it) can then run Setup too.
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AND to_regclass($3) IS NOT NULL
			AND to_regclass($4) IS NOT NULL AND to_regprocedure($5) IS NOT NULL`,
			s.names.rows, s.names.watermark, s.names.position, s.names.tombstones, s.names.tombstoneFunc+"()").Scan(&exists); err != nil {
			return fmt.Errorf("pgpoll: look for state tables in schema %s: %w", s.cfg.StateSchema, err)
		}
		for _, stmt := range s.names.ddl() {
			if exists {
				break
			}
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("pgpoll: create state tables in schema %s: %w", s.cfg.StateSchema, err)
			}
		}
		tgName := TriggerName(s.cfg.Sync, s.cfg.System)
		trigger := pgx.Identifier{tgName}.Sanitize()
		for _, m := range metas {
			var has bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2)", m.quoted, tgName).Scan(&has); err != nil {
				return fmt.Errorf("pgpoll: look for tombstone trigger on %s: %w", m.table, err)
			}
			if s.cfg.DeleteDetection == DeletesTombstones && has {
				continue
			}
			if s.cfg.DeleteDetection != DeletesTombstones {
				if !has {
					continue
				}
				if _, err := tx.Exec(ctx, "DROP TRIGGER "+trigger+" ON "+m.quoted); err != nil {
					return fmt.Errorf("pgpoll: drop tombstone trigger on %s (DeleteDetection is not DeletesTombstones): %w", m.table, err)
				}
				s.log.InfoContext(ctx, "dropped tombstone trigger", "table", m.name)
				continue
			}
			args := []string{quoteLiteral(s.cfg.Sync), quoteLiteral(s.cfg.System), quoteLiteral(m.name)}
			for _, k := range m.key {
				args = append(args, quoteLiteral(m.cols[k].name))
			}
			stmt := "CREATE TRIGGER " + trigger + " AFTER DELETE ON " + m.quoted +
				" FOR EACH ROW EXECUTE FUNCTION " + s.names.tombstoneFunc + "(" + strings.Join(args, ", ") + ")"
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("pgpoll: create tombstone trigger on %s: %w", m.table, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.tables, s.zone = metas, zone
	s.byName = make(map[string]*tableMeta, len(metas))
	for _, m := range metas {
		s.byName[m.name] = m
	}
	s.log.InfoContext(ctx, "setup done", "tables", len(metas), "deletes", s.cfg.DeleteDetection.String())
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// inspect reads a table's columns and primary key from the catalog.
func (s *Source) inspect(ctx context.Context, t duplex.Table) (*tableMeta, error) {
	m := &tableMeta{table: t, name: t.String(), quoted: pgx.Identifier{t.Schema, t.Name}.Sanitize(), ts: -1}
	var oid uint32
	err := s.pool.QueryRow(ctx, `
		SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, t.Schema, t.Name).Scan(&oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, duplex.Permanent(fmt.Errorf("pgpoll: table %s does not exist", t))
	}
	if err != nil {
		return nil, fmt.Errorf("pgpoll: inspect table %s: %w", t, err)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod),
			CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE a.atttypid END::int8,
			coalesce((SELECT k.ord FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
				WHERE i.indrelid = a.attrelid AND i.indisprimary AND k.attnum = a.attnum), 0)::int8
		FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, oid)
	if err != nil {
		return nil, fmt.Errorf("pgpoll: columns of %s: %w", t, err)
	}
	keyOrd := map[int64]int{}
	var baseTS uint32
	for rows.Next() {
		var c column
		var base, ord int64
		if err := rows.Scan(&c.name, &c.typ, &base, &ord); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pgpoll: columns of %s: %w", t, err)
		}
		c.decode = pgvalue.Decoder(uint32(base))
		if c.name == s.cfg.Column {
			m.ts = len(m.cols)
			baseTS = uint32(base)
		}
		if ord > 0 {
			keyOrd[ord] = len(m.cols)
		}
		m.cols = append(m.cols, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgpoll: columns of %s: %w", t, err)
	}
	for i := int64(1); i <= int64(len(keyOrd)); i++ {
		m.key = append(m.key, keyOrd[i])
	}
	if len(m.key) == 0 {
		return nil, duplex.Permanent(fmt.Errorf("pgpoll: table %s has no primary key; duplex matches rows by primary key, add one (ALTER TABLE %s ADD PRIMARY KEY (...))", t, m.quoted))
	}
	if m.ts < 0 {
		return nil, duplex.Permanent(fmt.Errorf("pgpoll: table %s has no column %s (Config.Column): polling needs a timestamp column that every write sets", t, s.cfg.Column))
	}
	const oidTimestamp, oidTimestamptz = 1114, 1184
	if baseTS != oidTimestamp && baseTS != oidTimestamptz {
		return nil, duplex.Permanent(fmt.Errorf("pgpoll: table %s column %s is %s, want timestamp or timestamptz", t, s.cfg.Column, m.cols[m.ts].typ))
	}
	m.wall = baseTS == oidTimestamp
	return m, nil
}

// columnZone returns the zone that the timestamp (without time zone)
// columns of metas are read in, "" when there are none, and says which
// zone it is and warns about the columns' type.
func (s *Source) columnZone(ctx context.Context, metas []*tableMeta) (string, error) {
	var wall []string
	for _, m := range metas {
		if m.wall {
			wall = append(wall, m.name)
		}
	}
	if len(wall) == 0 {
		if s.cfg.ColumnTimeZone != "" {
			s.log.InfoContext(ctx, "ColumnTimeZone unused: every poll column is timestamptz", "column", s.cfg.Column)
		}
		return "", nil
	}
	zone, from := s.cfg.ColumnTimeZone, "Config.ColumnTimeZone"
	if zone == "" {
		var err error
		if zone, err = s.writersZone(ctx); err != nil {
			return "", err
		}
		from = "database"
		if s.connZone != nil {
			from = "ConnString"
		}
	}
	// The zone is used in AT TIME ZONE: check that PostgreSQL reads it so
	// (22023, invalid_parameter_value: an unknown zone).
	if _, err := s.pool.Exec(ctx, "SELECT now() AT TIME ZONE $1::text", zone); err != nil {
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "22023" && from == "Config.ColumnTimeZone" {
			return "", &duplex.ConfigError{Field: "ColumnTimeZone", Reason: fmt.Sprintf("PostgreSQL does not know the time zone %q (%s)", zone, pgErr.Message)}
		}
		return "", fmt.Errorf("pgpoll: %s: check time zone %q (from %s): %w", s.cfg.System, zone, from, err)
	}
	s.log.InfoContext(ctx, "reading timestamp without time zone poll columns in the writers' zone",
		"time_zone", zone, "from", from, "column", s.cfg.Column, "tables", strings.Join(wall, ","))
	for _, t := range wall {
		s.log.WarnContext(ctx, "poll column is timestamp without time zone: its values are ambiguous in the hour when clocks go back, "+
			"and right only if every writer's session is in time_zone; timestamptz is recommended",
			"table", t, "column", s.cfg.Column, "time_zone", zone)
	}
	return zone, nil
}

// writersZone returns the TimeZone of a new session of the connection
// string without the source's override (UTC): the database's, role's or
// server's default, or the connection string's own.
func (s *Source) writersZone(ctx context.Context) (string, error) {
	cc := s.pool.Config().ConnConfig
	delete(cc.RuntimeParams, "timezone")
	if s.connZone != nil {
		cc.RuntimeParams["timezone"] = *s.connZone
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return "", fmt.Errorf("pgpoll: %s: connect to read the database's TimeZone: %w", s.cfg.System, err)
	}
	defer conn.Close(ctx)
	var zone string
	if err := conn.QueryRow(ctx, "SHOW timezone").Scan(&zone); err != nil {
		return "", fmt.Errorf("pgpoll: %s: read the database's TimeZone: %w", s.cfg.System, err)
	}
	return zone, nil
}
