package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// Conflict policies for fields the authority map does not cover.
const (
	conflictLWW    = "lww"
	conflictDLQ    = "dlq"
	conflictAWins  = "a-wins"
	conflictBWins  = "b-wins"
	cdcLogical     = "logical"
	cdcPoll        = "poll"
	envAdminPasswd = "PGBISYNC_ADMIN_PASSWORD"
	readyLine      = "pgbisync: ready"
)

// config is what the flags say.
type config struct {
	a, b              string
	tables            []duplex.Table
	tablesText        string
	authority         string
	conflict          string
	skew              time.Duration
	lwwColumn         string
	cdc               string
	pollInterval      time.Duration
	pollColumn        string
	pollTimeZone      string
	pollDeletes       string
	redisURL          string
	redisPrefix       string
	admin             string
	adminUser         string
	adminPassword     string
	name              string
	noReplicaIdentity bool
	onboarding        bool
	onboardingChunk   int
	reconcile         bool
	batch             int
	lockWait          time.Duration
	lockCheck         time.Duration
	maxRetainedText   string
	maxRetained       int64
	logLevel          string
	checkOnly         bool
	sequences         string
	fireTriggersText  string
	fireTriggers      []string
	allTriggers       bool
	cpuProfile        string
	recreateSlots     bool
}

// parseFlags reads args (without the program name) into a config and checks
// it. Usage errors are reported through the returned error; the FlagSet
// prints its own usage on -h.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("pgbisync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.a, "a", "", "connection string (URL or key=value) of database A (required)")
	fs.StringVar(&c.b, "b", "", "connection string (URL or key=value) of database B (required)")
	fs.StringVar(&c.tablesText, "tables", "", "comma-separated tables to sync, schema.table or table (schema public); names are case-sensitive (required)")
	fs.StringVar(&c.authority, "authority", "", "field authority: comma-separated table.field=a|b|both rules, e.g. customers.name=a,customers.payment_status=b")
	fs.StringVar(&c.conflict, "conflict", conflictLWW, "how conflicts on fields the authority map does not cover are decided: lww, dlq, a-wins or b-wins")
	fs.DurationVar(&c.skew, "skew", 500*time.Millisecond, "clock-skew tolerance of -conflict lww: writes closer than this go to the DLQ")
	fs.StringVar(&c.lwwColumn, "lww-column", "updated_at", "timestamp column -conflict lww compares; tables without it compare commit timestamps (which need track_commit_timestamp = on, else their conflicts go to the DLQ)")
	fs.StringVar(&c.cdc, "cdc", cdcLogical, "change capture: logical (replication slots) or poll")
	fs.DurationVar(&c.pollInterval, "poll-interval", 200*time.Millisecond, "pause between passes of -cdc poll")
	fs.StringVar(&c.pollColumn, "poll-column", "updated_at", "timestamp column -cdc poll finds changed rows by (every write must set it)")
	fs.StringVar(&c.pollTimeZone, "poll-time-zone", "", "time zone (IANA name, e.g. America/New_York) of the sessions that write a timestamp-without-time-zone -poll-column, on both sides; empty: each database's TimeZone setting (timestamptz columns need none)")
	fs.StringVar(&c.pollDeletes, "poll-deletes", "keydiff", "how -cdc poll sees deletes: keydiff (compare keys periodically), tombstones (an AFTER DELETE trigger on each table) or none")
	fs.StringVar(&c.redisURL, "redis", "", "Redis URL for the dedup front cache (empty: PostgreSQL ledger only)")
	fs.StringVar(&c.redisPrefix, "redis-prefix", "duplex:", "start of the Redis keys; the sync's are <prefix><name>:<side>:<change id>")
	fs.StringVar(&c.admin, "admin", "", "address of the admin server (DLQ UI at /, JSON API at /dlq, /metrics, /healthz); empty: none")
	fs.StringVar(&c.adminUser, "admin-user", "", "user name of the admin server's basic auth")
	fs.StringVar(&c.adminPassword, "admin-password", "", "password of the admin server's basic auth (or env "+envAdminPasswd+")")
	fs.StringVar(&c.name, "name", "", "name of the sync: it names the slots, publications, origins and state, so a restart with the same name resumes (required)")
	fs.BoolVar(&c.onboarding, "onboarding", true, "on the first start of -name, bring together the rows both databases already hold before streaming (copy rows one side lacks, record equal rows as agreed, decide different rows by -authority/-conflict); -onboarding=false skips it, e.g. for databases known to be identical")
	fs.BoolVar(&c.reconcile, "reconcile", false, "instead of syncing: compare -tables on both databases in batched key ranges, repair what differs through -authority/-conflict (copy rows one side lacks, decide different rows, dead-letter undecided ones), print a line per table and exit; takes the sync's lock, so run it while the sync of -name is stopped")
	fs.IntVar(&c.onboardingChunk, "onboarding-chunk", 0, "keys per onboarding chunk, each committed with its progress (0: the library default, 5000)")
	fs.BoolVar(&c.noReplicaIdentity, "no-replica-identity", false, "do not set REPLICA IDENTITY FULL on the tables (they must have it already)")
	fs.IntVar(&c.batch, "batch", 0, "most changes applied in one transaction (0: the library default)")
	fs.DurationVar(&c.lockWait, "lock-wait", 3*time.Second, "how long to wait for the sync's lock (held by another pgbisync with the same -name) before giving up")
	fs.StringVar(&c.maxRetainedText, "max-retained-wal", "1GB", "ceiling on the WAL a replication slot may hold back (kB, MB, GB; 0: none): above it /healthz turns unhealthy and a warning is logged every minute (the slot is kept: nothing is lost, but the server's disk fills; see the README's slot hygiene)")
	fs.DurationVar(&c.lockCheck, "lock-check", 5*time.Second, "how often the sync checks that it still holds its lock (and takes it again after a lost session)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&c.checkOnly, "check", false, "print the preflight report (both sides of every table side by side, each finding a blocker, warning or fine, with the fix) and exit: status 0, or 2 with blockers; changes nothing")
	fs.StringVar(&c.sequences, "sequences", "", "keys fed by sequences (serial, identity) on both sides: empty refuses to start; interleave makes A's odd and B's even (INCREMENT BY 2); ranges gives A the lower half of the range and B the upper half")
	fs.StringVar(&c.fireTriggersText, "fire-triggers", "", "comma-separated triggers (table.trigger or schema.table.trigger) that fire on the rows the sync writes too: marked ENABLE ALWAYS at start; others do not (the sync applies with session_replication_role = replica)")
	fs.BoolVar(&c.allTriggers, "all-triggers", false, "apply with every trigger firing and foreign keys checked on apply (session_replication_role = origin), as before the replica mode")
	fs.BoolVar(&c.recreateSlots, "recreate-slots", false, "re-create a replication slot dropped or invalidated after the sync of -name started, with a warning, instead of refusing to start: the changes made in between are not synced (run -reconcile afterwards)")
	fs.StringVar(&c.cpuProfile, "cpu-profile", "", "write a Go CPU profile (pprof format) of the whole run to this file, from start-up until pgbisync exits; empty: none")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q (every option is a flag)", fs.Args())
	}
	if c.adminPassword == "" {
		c.adminPassword = os.Getenv(envAdminPasswd)
	}
	return c, c.check()
}

// check validates the flags; the error joins every problem.
func (c *config) check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.a == "" {
		bad("-a is required (connection string of database A)")
	}
	if c.b == "" {
		bad("-b is required (connection string of database B)")
	}
	if c.name == "" {
		bad("-name is required (it names the sync's slots, publications and state)")
	} else if !pgutil.UsableName(c.name) {
		bad("-name %q is not usable: use letters, digits and _", c.name)
	}
	tables, err := parseTables(c.tablesText)
	if err != nil {
		errs = append(errs, err)
	}
	c.tables = tables
	if !slices.Contains([]string{conflictLWW, conflictDLQ, conflictAWins, conflictBWins}, c.conflict) {
		bad("-conflict %q: want lww, dlq, a-wins or b-wins", c.conflict)
	}
	if c.onboardingChunk < 0 {
		bad("-onboarding-chunk %d: must not be negative", c.onboardingChunk)
	}
	if c.skew < 0 {
		bad("-skew %s: the clock-skew tolerance must not be negative", c.skew)
	}
	if c.conflict == conflictLWW && c.lwwColumn == "" {
		bad("-lww-column is required with -conflict lww")
	}
	if !slices.Contains([]string{"", "interleave", "ranges"}, c.sequences) {
		bad("-sequences %q: want interleave or ranges (or nothing, to refuse)", c.sequences)
	}
	c.fireTriggers = nil
	for _, f := range strings.Split(c.fireTriggersText, ",") {
		if f = strings.TrimSpace(f); f != "" {
			c.fireTriggers = append(c.fireTriggers, f)
		}
	}
	if !slices.Contains([]string{cdcLogical, cdcPoll}, c.cdc) {
		bad("-cdc %q: want logical or poll", c.cdc)
	}
	if c.pollInterval <= 0 {
		bad("-poll-interval %s: must be positive", c.pollInterval)
	}
	if _, ok := pollDeletes[c.pollDeletes]; !ok {
		bad("-poll-deletes %q: want keydiff, tombstones or none", c.pollDeletes)
	}
	if c.cdc == cdcPoll && c.pollColumn == "" {
		bad("-poll-column is required with -cdc poll")
	}
	if c.batch < 0 {
		bad("-batch %d: must not be negative", c.batch)
	}
	if n, err := parseSize(c.maxRetainedText); err != nil {
		bad("-max-retained-wal %q: %v", c.maxRetainedText, err)
	} else {
		c.maxRetained = n
	}
	if c.lockCheck <= 0 {
		bad("-lock-check %s: must be positive", c.lockCheck)
	}
	if c.lockWait < 0 {
		bad("-lock-wait %s: must not be negative", c.lockWait)
	}
	if _, err := parseLevel(c.logLevel); err != nil {
		errs = append(errs, err)
	}
	if (c.adminUser == "") != (c.adminPassword == "") {
		bad("-admin-user and -admin-password (or %s) go together", envAdminPasswd)
	}
	if c.admin != "" {
		host, _, err := net.SplitHostPort(c.admin)
		switch {
		case err != nil:
			bad("-admin %q: want host:port (%v)", c.admin, err)
		case c.adminUser == "" && !loopback(host):
			bad("-admin %q is not a loopback address: set -admin-user and -admin-password (or %s) to serve the admin UI on it, or bind 127.0.0.1", c.admin, envAdminPasswd)
		}
	}
	return errors.Join(errs...)
}

// parseTables reads -tables: comma-separated schema.table or table
// (schema public). Names are taken as written (case-sensitive).
func parseTables(s string) ([]duplex.Table, error) {
	var out []duplex.Table
	var errs []error
	seen := map[duplex.Table]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		t, err := duplex.ParseTable(item)
		if err != nil {
			errs = append(errs, fmt.Errorf("-tables: %q is not schema.table or table", item))
			continue
		}
		if seen[t] {
			errs = append(errs, fmt.Errorf("-tables: %s is listed twice", t))
			continue
		}
		seen[t] = true
		out = append(out, t)
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("-tables is required (comma-separated schema.table or table)"))
	}
	return out, errors.Join(errs...)
}

// loopback reports whether host (from -admin) only listens locally.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// secrets returns the literal passwords the flags carry, in every form they
// may appear in a message (raw, URL-escaped), longest first.
func (c *config) secrets() []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, dsn := range []string{c.a, c.b, c.redisURL} {
		for _, p := range pgutil.DSNPasswords(dsn) {
			add(p)
			add(url.QueryEscape(p))
			add(url.PathEscape(p))
			add((&url.URL{User: url.UserPassword("u", p)}).User.String()[2:])
		}
	}
	add(c.adminPassword)
	slices.SortFunc(out, func(x, y string) int { return len(y) - len(x) })
	return out
}

// redactingWriter replaces every secret in what is written through it,
// so that no password reaches the logs or the terminal whatever message
// carries it. Writes are whole lines (slog writes one record per call).
type redactingWriter struct {
	mu      sync.Mutex
	w       io.Writer
	secrets []string
}

// Write implements io.Writer; it reports len(p) written on success.
func (r *redactingWriter) Write(p []byte) (int, error) {
	s := string(p)
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, "xxxxx")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := io.WriteString(r.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}

// parseSize reads a byte size such as 512MB, 1GB, 64kB or 1048576.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"KB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("want a non-negative size such as 512MB or 1GB")
	}
	return n * mult, nil
}
