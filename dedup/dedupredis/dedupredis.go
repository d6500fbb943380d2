package dedupredis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/duplexsync/duplex"
)

// DefaultTTL is how long a mark lasts when Config.TTL is zero.
const DefaultTTL = 7 * 24 * time.Hour

// chunk is the most commands sent in one pipeline, bounding the client's
// buffers for very large batches.
const chunk = 4096

// Config configures a [Deduper].
type Config struct {
	// Prefix starts every key, scoping the marks to one sync and target,
	// for example "duplex:<sync>:<target>:". Required. In a Redis Cluster a
	// hash tag in the prefix ("{duplex:crm:billing}:") puts all the keys in
	// one slot; that is not needed (Seen and Mark pipeline single-key
	// commands) and concentrates the load on one node.
	Prefix string
	// TTL is how long a mark lasts, restarted by every Mark of the id; Seen
	// does not extend it. 0: DefaultTTL (7 days). Redis keeps expiries in
	// milliseconds.
	TTL time.Duration
	// Sync and Target name the sync and the system whose applied changes
	// the marks stand for. They are not part of the keys (Prefix scopes
	// them); duplex.NewPipeline checks them against its own names (see
	// duplex.Named). "": not checked.
	Sync, Target string
}

// Deduper is a [duplex.Deduper] in Redis. It is safe for concurrent use.
// It does not own the client and never closes it.
type Deduper struct {
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
	sync   string
	target string
}

var _ duplex.Deduper = (*Deduper)(nil)

// New checks cfg and returns a Deduper using client. It does no I/O: an
// unreachable Redis shows in the first Seen or Mark. The error joins every
// problem of cfg.
func New(client redis.UniversalClient, cfg Config) (*Deduper, error) {
	var errs []error
	if client == nil {
		errs = append(errs, &duplex.ConfigError{Field: "dedupredis: client", Reason: "is required"})
	}
	if cfg.Prefix == "" {
		errs = append(errs, &duplex.ConfigError{Field: "dedupredis: Config.Prefix", Reason: "is required"})
	}
	switch {
	case cfg.TTL < 0:
		errs = append(errs, &duplex.ConfigError{Field: "dedupredis: Config.TTL", Reason: "must not be negative"})
	case cfg.TTL > 0 && cfg.TTL < time.Millisecond:
		errs = append(errs, &duplex.ConfigError{Field: "dedupredis: Config.TTL", Reason: "must be at least 1ms"})
	case cfg.TTL == 0:
		cfg.TTL = DefaultTTL
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Deduper{client: client, prefix: cfg.Prefix, ttl: cfg.TTL, sync: cfg.Sync, target: cfg.Target}, nil
}

// Seen implements [duplex.Deduper]: answers[i] reports whether ids[i] is
// marked and not expired. It never writes to Redis. With a *redis.Client (a
// single server, or one found through Sentinel) it sends one MGET, where a
// missing key (redis.Nil in single-key commands) is a miss; with other
// clients (Cluster, Ring), whose keys live on several nodes, one EXISTS per
// id, pipelined. It returns ctx's error when ctx is already done.
func (d *Deduper) Seen(ctx context.Context, ids []string) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]bool, len(ids))
	keys := make([]string, 0, min(len(ids), chunk))
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		keys = keys[:0]
		for _, id := range part {
			keys = append(keys, d.prefix+id)
		}
		if err := d.seen(ctx, keys, out[start:start+len(part)]); err != nil {
			return nil, classify("dedupredis: seen", err)
		}
	}
	return out, nil
}

func (d *Deduper) seen(ctx context.Context, keys []string, out []bool) error {
	if c, ok := d.client.(*redis.Client); ok {
		vals, err := c.MGet(ctx, keys...).Result()
		if err != nil {
			return err
		}
		if len(vals) != len(keys) {
			return fmt.Errorf("MGET returned %d values for %d keys", len(vals), len(keys))
		}
		for i, v := range vals {
			out[i] = v != nil
		}
		return nil
	}
	cmds := make([]*redis.IntCmd, len(keys))
	pipe := d.client.Pipeline()
	for i, k := range keys {
		cmds[i] = pipe.Exists(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	for i, c := range cmds {
		n, err := c.Result()
		if err != nil { // Exec reports the first failure; be safe anyway
			return err
		}
		out[i] = n > 0
	}
	return nil
}

// Mark implements [duplex.Deduper] with one SET key 1 PX ttl per id,
// pipelined: it marks the ids and restarts their TTL. Marking an id again
// is not an error. After an error some of the ids may be marked (each SET
// is atomic, the batch is not); as the Pipeline calls Mark only for settled
// changes, that is harmless. It returns ctx's error when ctx is already
// done, marking nothing.
func (d *Deduper) Mark(ctx context.Context, ids []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		pipe := d.client.Pipeline()
		for _, id := range part {
			pipe.Set(ctx, d.prefix+id, "1", d.ttl)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return classify("dedupredis: mark", err)
		}
	}
	return nil
}

// String describes the Deduper for logs.
func (d *Deduper) String() string {
	return fmt.Sprintf("dedupredis(prefix=%q, ttl=%s)", d.prefix, d.ttl)
}
