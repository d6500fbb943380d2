package duplexpg

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pgpoll"
	"github.com/duplexsync/duplex/check/checkpg"
	"github.com/duplexsync/duplex/resolve"
)

// Capture is how an endpoint's changes are captured.
type Capture int

const (
	// Logical captures changes through a logical replication slot
	// (cdc/pglogical): the database needs wal_level = logical.
	Logical Capture = iota
	// Poll reads changed rows by a timestamp column (cdc/pgpoll), for
	// databases without logical replication; see Config.Poll.
	Poll
)

// Defaults of Config.
const (
	DefaultLWWColumn      = "updated_at"
	DefaultSkew           = 500 * time.Millisecond
	DefaultLockWait       = 3 * time.Second
	DefaultLockCheck      = 5 * time.Second
	DefaultMaxRetainedWAL = 1 << 30
	DefaultRedisPrefix    = "duplex:"
)

// Config configures what NewSync and NewPipeline build on two endpoints.
// Zero values mean the documented defaults; the defaults work on any table
// with a primary key.
type Config struct {
	// Tables are the tables to sync; each needs a primary key, the same on
	// both sides. Required.
	Tables []duplex.Table
	// Authority, when set, decides fields by their owner first
	// (resolve.ParseAuthority); it is checked against both catalogs. nil:
	// none.
	Authority *resolve.Authority
	// Policy decides the conflicts Authority leaves undecided; what it
	// leaves undecided is dead-lettered. nil: last-write-wins per table, on
	// LWWColumn where both sides have it and on commit timestamps elsewhere
	// (their conflicts go to the DLQ where a side has
	// track_commit_timestamp off), with Skew.
	Policy duplex.Resolver
	// LWWColumn is the timestamp column the default Policy compares.
	// "": DefaultLWWColumn (updated_at).
	LWWColumn string
	// Skew is the clock-skew tolerance of the default Policy: writes closer
	// than this go to the DLQ. 0: DefaultSkew (500ms); negative: none
	// (only equal times tie).
	Skew time.Duration
	// Capture is how changes are captured on both endpoints. The zero
	// value is Logical.
	Capture Capture
	// Poll configures Capture Poll (ConnString, Sync, System, Tables and
	// Logger are filled in).
	Poll pgpoll.Config
	// KeepReplicaIdentity forbids the sync to set REPLICA IDENTITY FULL on
	// the tables (logical capture needs it): tables without it are an error.
	KeepReplicaIdentity bool
	// Triggers says which triggers fire on the rows the sync writes
	// (applypg.Config.Triggers).
	Triggers applypg.TriggerConfig
	// Sequences says what the preflight does about keys fed by sequences
	// on both sides (checkpg.Config.Sequences). "": refuse to start.
	Sequences checkpg.SequenceFix
	// SkipOnboarding skips the onboarding of the rows both databases hold
	// on the first start of the sync (duplex.OnboardingConfig.Disabled).
	SkipOnboarding bool
	// OnboardingChunk is how many keys an onboarding chunk covers. 0: the
	// library default.
	OnboardingChunk int
	// OnboardingProgress, when set, receives the onboarding's progress
	// (after the metrics). It must not block.
	OnboardingProgress func(duplex.OnboardingProgress)
	// ReconcileOnly builds the Sync for ReconcileTables and Check only: no
	// replication slot or publication is created, and Run refuses to run.
	ReconcileOnly bool
	// RecreateSlots lets NewSync re-create a replication slot that was
	// dropped or invalidated after the sync started, logged at Warn: the
	// changes made in between are not synced (reconcile the tables). false:
	// such a slot is an error.
	RecreateSlots bool
	// Redis, when set, adds a Redis front cache to the dedup (dedupredis)
	// under RedisPrefix. nil: the applier's ledger in PostgreSQL only.
	Redis redis.UniversalClient
	// RedisPrefix starts the sync's Redis keys:
	// <RedisPrefix><sync>:<system>:<change id>. "": DefaultRedisPrefix.
	RedisPrefix string
	// Registerer, when set, registers the sync's metrics (package metrics:
	// duplex_* series, DLQ depth and retained WAL read at scrape time,
	// preflight findings, onboarding progress). Close unregisters them.
	// nil: the metrics are kept (Health reads them) but not registered.
	Registerer prometheus.Registerer
	// LockWait is how long to wait for the sync's lock held by another
	// instance before giving up. 0: DefaultLockWait; negative: no wait.
	LockWait time.Duration
	// LockCheck is how often Run checks that it still holds its lock (and
	// takes it again after a lost session). 0: DefaultLockCheck.
	LockCheck time.Duration
	// MaxRetainedWAL is the most WAL bytes a replication slot may hold back
	// before Health turns unhealthy and a warning is logged every minute.
	// 0: DefaultMaxRetainedWAL (1GB); negative: no limit.
	MaxRetainedWAL int64
	// OptionLabels names the options in error messages the way the
	// program's users set them (a flag, a configuration key), keyed by the
	// Config field name ("LWWColumn", "KeepReplicaIdentity", "Capture").
	// A missing key: the field name.
	OptionLabels map[string]string
	// Options tunes the Pipelines.
	Options duplex.Options
	// Logger receives logs. nil: slog.Default().
	Logger *slog.Logger
}

// withDefaults checks c and returns it with the defaults filled in.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if len(c.Tables) == 0 {
		errs = append(errs, &duplex.ConfigError{Field: "duplexpg: Config.Tables", Reason: "is required"})
	}
	if c.Capture != Logical && c.Capture != Poll {
		errs = append(errs, &duplex.ConfigError{Field: "duplexpg: Config.Capture", Reason: fmt.Sprintf("unknown capture %d", c.Capture)})
	}
	if c.OnboardingChunk < 0 {
		errs = append(errs, &duplex.ConfigError{Field: "duplexpg: Config.OnboardingChunk", Reason: "must not be negative"})
	}
	if c.LockCheck < 0 {
		errs = append(errs, &duplex.ConfigError{Field: "duplexpg: Config.LockCheck", Reason: "must not be negative"})
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if c.LWWColumn == "" {
		c.LWWColumn = DefaultLWWColumn
	}
	switch {
	case c.Skew == 0:
		c.Skew = DefaultSkew
	case c.Skew < 0:
		c.Skew = 0
	}
	switch {
	case c.LockWait == 0:
		c.LockWait = DefaultLockWait
	case c.LockWait < 0:
		c.LockWait = 0
	}
	if c.LockCheck == 0 {
		c.LockCheck = DefaultLockCheck
	}
	switch {
	case c.MaxRetainedWAL == 0:
		c.MaxRetainedWAL = DefaultMaxRetainedWAL
	case c.MaxRetainedWAL < 0:
		c.MaxRetainedWAL = 0
	}
	if c.RedisPrefix == "" {
		c.RedisPrefix = DefaultRedisPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// label names the option field in error messages (OptionLabels).
func (c *Config) label(field string) string {
	if l, ok := c.OptionLabels[field]; ok {
		return l
	}
	return field
}
