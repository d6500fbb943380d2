package resolve_test

import (
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
	"github.com/duplexsync/duplex/resolve/resolvetest"
)

func farFuture() time.Time { return epoch.Add(1000 * time.Hour) }

func mustAuthority(t testing.TB, spec string) *resolve.Authority {
	t.Helper()
	a, err := resolve.ParseAuthority(spec)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestConformance runs the resolver kit on every resolver of the package,
// alone and in the chains users build: random interleavings of edits and
// deliveries on two replicas end with the replicas equal or the key
// dead-lettered, the same whatever the delivery order, with the same
// decisions every time, no input modified, no field decided outside the
// declared ones, no panic on odd values.
func TestConformance(t *testing.T) {
	t.Parallel()
	// Under Authority users write the fields their system owns (and shared
	// ones): that is what ownership means. A non-owner's write is not
	// propagated, by design.
	owned := map[string][]string{"a": {"name", "n", "tags"}, "b": {"note", "f", "tags"}}
	counters := resolvetest.Items().With("n", resolvetest.Int64Counter()).With("f", resolvetest.Float64Counter())
	for name, cfg := range map[string]resolvetest.Config{
		"default":         {NewResolver: func() duplex.Resolver { return nil }},
		"dead_letter_all": {NewResolver: func() duplex.Resolver { return resolve.DeadLetterAll() }},
		"side_wins_a":     {NewResolver: func() duplex.Resolver { return resolve.SideWins("a") }},
		"side_wins_b":     {NewResolver: func() duplex.Resolver { return resolve.SideWins("b") }},
		"authority": {
			Owned: owned,
			NewResolver: func() duplex.Resolver {
				return duplex.Chain(mustAuthority(t, "name=a,n=a,note=b,f=b,tags=both"), resolve.DeadLetterAll())
			},
		},
		"lww_column": {Stamp: "ts", NewResolver: func() duplex.Resolver { return &resolve.LWW{Column: "ts", Skew: skew, Now: farFuture} }},
		"lww_commit": {Times: resolvetest.ChangeTimes, NewResolver: func() duplex.Resolver { return &resolve.LWW{Skew: skew, Now: farFuture} }},
		"lww_xmin":   {Times: resolvetest.WriteTimes, NewResolver: func() duplex.Resolver { return &resolve.LWW{Skew: skew, Now: farFuture} }},
		"authority_lww": {
			Stamp: "ts",
			Owned: map[string][]string{"a": {"name", "n", "f", "tags"}, "b": {"note", "n", "f", "tags"}},
			NewResolver: func() duplex.Resolver {
				return duplex.Chain(mustAuthority(t, "name=a,note=b,n=both,f=both,tags=both,ts=both"),
					&resolve.LWW{Column: "ts", Skew: skew, Now: farFuture}, resolve.DeadLetterAll())
			},
		},
		"counter_delta": {Table: counters, Decides: []string{"n", "f"}, NewResolver: func() duplex.Resolver { return resolve.CounterDelta("n", "f") }},
		"union_tags":    {Decides: []string{"tags"}, NewResolver: func() duplex.Resolver { return resolve.UnionTags("tags") }},
		"merges": {
			Table: counters,
			NewResolver: func() duplex.Resolver {
				return duplex.Chain(resolve.CounterDelta("n", "f"), resolve.UnionTags("tags"), resolve.SideWins("b"))
			},
		},
		"by_table": {
			NewResolver: func() duplex.Resolver {
				return resolve.ByTable{Tables: map[duplex.Table]duplex.Resolver{items: resolve.SideWins("a")}, Default: resolve.DeadLetterAll()}
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			resolvetest.Run(t, cfg)
		})
	}
}

// TestPropertyAuthorityAlwaysConverges: every field is owned by exactly one
// side and users write only the fields their side owns (inserts, updates,
// and deletes that do not race an update of the other side). Under
// Authority alone, the replicas end equal with no dead letter at all, and
// every owned field holds the last value its owner wrote.
func TestPropertyAuthorityAlwaysConverges(t *testing.T) {
	t.Parallel()
	owned := map[string][]string{"a": {"name", "n"}, "b": {"note", "f", "tags"}}
	auth := mustAuthority(t, "name=a,n=a,note=b,f=b,tags=b,ts=a")
	rapid.Check(t, func(rt *rapid.T) {
		p := resolvetest.Play(rt, resolvetest.Config{
			NewResolver: func() duplex.Resolver { return auth },
			Owned:       owned,
			// The oracle follows each row from creation to the end: its
			// existence must be undisputed.
			Limits: resolvetest.Limits{NoKeyReuse: true, NoDeleteRace: true},
			Batch:  rapid.IntRange(1, 8).Draw(rt, "batch"),
		})
		if d := p.Diff(); len(d) > 0 {
			rt.Fatalf("replicas differ:\n  %s\n%s", strings.Join(d, "\n  "), p.Report())
		}
		if dl := p.DeadLetters(); len(dl) > 0 {
			rt.Fatalf("%d dead letters under Authority alone:\n%s", len(dl), p.Report())
		}
		// The owner's last write of each field of each surviving row.
		last := map[string]duplex.Values{}
		for _, side := range []string{"a", "b"} {
			for _, c := range p.DB(side).Changes() {
				if c.Origin != "" || c.After == nil {
					continue
				}
				k := c.Key.String()
				if last[k] == nil {
					last[k] = duplex.Values{}
				}
				for _, f := range owned[side] {
					if v, ok := c.After[f]; ok && (c.Before == nil || !duplex.Equal(c.Before[f], v)) {
						last[k][f] = v
					}
				}
			}
		}
		seed := resolvetest.Items().SeedRow(0)
		for k, r := range p.Rows("a") {
			for _, side := range []string{"a", "b"} {
				for _, f := range owned[side] {
					want, wrote := last[k][f]
					// Seed rows are written on both sides before the sync
					// starts, not by the owner alone.
					if got := r[f]; wrote && !duplex.Equal(got, want) || !wrote && got != nil && !duplex.Equal(seed[f], got) {
						rt.Fatalf("%s field %s (owned by %s) holds %v, its owner last wrote %v (wrote=%v)\n%s", k, f, side, got, want, wrote, p.Report())
					}
				}
			}
		}
	})
}
