// Package dedupredis is a [duplex.Deduper] in Redis: the fast front cache
// of settled change IDs, shared by every process of a sync and surviving
// their restarts.
//
// Each marked ID is a key Prefix+ID holding "1", set with an expiry of
// [Config.TTL] (restarted by every Mark). [Deduper.Seen] checks a batch
// with one MGET on a single server, or with pipelined EXISTS commands on a
// Redis Cluster or Ring, where the keys of a batch live on several nodes;
// [Deduper.Mark] sets a batch with pipelined SET ... PX commands. Each is
// one round trip (per node) for up to 4,096 ids.
//
// # Redis is not the truth
//
// The target database is: the applier records every applied change ID in
// its own transaction ([duplex.Ledger]), and the Pipeline asks it about the
// IDs Redis has not seen. An ID Redis forgot (expired, evicted, lost in a
// restart without persistence or a failover) costs one ledger lookup, never
// a change lost or applied twice. Seen never marks and the Pipeline calls
// Mark only once a change is settled (its apply committed, or it was
// dead-lettered or found to be a no-op), so Redis failing at any point can
// only make it forget, never claim a change that was not settled.
//
// The other way round does not hold: the Pipeline skips what Redis says it
// has seen without asking the target. After restoring the target database
// from a backup (which rolls its ledger back too), delete the keys under the
// prefix, or Redis keeps changes the restored target no longer has from
// being applied again.
//
// # Outages
//
// Errors from Redis being unreachable (connection refused or reset,
// network and pool timeouts, a closed connection, LOADING, MASTERDOWN,
// CLUSTERDOWN, TRYAGAIN, READONLY after a failover, too many clients) are
// marked [duplex.Unavailable]; authentication, permission and WRONGTYPE
// errors [duplex.Permanent]; others [duplex.Transient]. The Pipeline treats
// a failed Seen as "not seen" and logs a failed Mark, so a Redis outage
// slows a sync down (every batch goes to the target's ledger) but never
// stops it.
//
// How long a call takes while Redis is unreachable is up to the client's
// options, and the Pipeline calls Seen and Mark on its worker, between
// batches. go-redis's defaults retry hard (each command up to 4 times, each
// dial 5 times 100ms apart, dial and read timeouts of 5s and 3s), so with
// them every Seen or Mark costs seconds while Redis is down. Give the client
// a Deduper uses short timeouts and few retries, for example
//
//	redis.NewClient(&redis.Options{
//		Addr:                  addr,
//		DialTimeout:           500 * time.Millisecond,
//		ReadTimeout:           500 * time.Millisecond,
//		WriteTimeout:          500 * time.Millisecond,
//		PoolTimeout:           time.Second,
//		MaxRetries:            1,
//		DialerRetries:         1,
//		ContextTimeoutEnabled: true,
//	})
//
// Once PoolSize dials in a row have failed, go-redis answers at once with
// the last dial error and probes the server once a second in the
// background; a small PoolSize makes that happen sooner.
//
// # Sizing
//
// Redis holds one key per change settled within the TTL; at 1,000 changes
// a second and the default TTL of 7 days that is 600 million keys, at about
// 100 bytes each (MEMORY USAGE reports 88 for a 45-byte key) 60 GB. The TTL
// only needs to cover how far back a source may redeliver (its
// unacknowledged tail after a restart); anything older is answered by the
// ledger. Pick the TTL from the change rate and the memory you can give.
package dedupredis
