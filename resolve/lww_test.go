package resolve_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
)

const skew = 2 * time.Second

// at returns the epoch plus d.
func at(d time.Duration) time.Time { return epoch.Add(d) }

// lwwColumn compares the ts column with a 2s skew tolerance; its clock
// stands an hour after the epoch.
func lwwColumn() duplex.Resolver {
	return &resolve.LWW{Column: "ts", Skew: skew, Now: func() time.Time { return epoch.Add(time.Hour) }}
}

// concurrentEdits: both sides change name, each stamping ts.
func concurrentEdits(tsA, tsB any) scenario {
	return func(p *pair) {
		p.Seed(row(1, "name", "x", "ts", epoch))
		p.Update("a", 1, duplex.Values{"name": "from-a", "ts": tsA})
		p.Update("b", 1, duplex.Values{"name": "from-b", "ts": tsB})
	}
}

func TestLWWColumnNewerSideWins(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		tsA, tsB time.Time
		want     string
	}{
		{"a newer", at(10*time.Second + skew + 1), at(10 * time.Second), "from-a"},
		{"b newer", at(10 * time.Second), at(10*time.Second + skew + 1), "from-b"},
		{"b newer by far", at(time.Second), at(time.Minute), "from-b"},
		// 16:00:05+05:00 is 11:00:05 UTC: a's 12:00:10 UTC is newer, though b's wall clock reads later.
		{"time zones", time.Date(2025, 3, 1, 12, 0, 10, 0, time.UTC), time.Date(2025, 3, 1, 16, 0, 5, 0, time.FixedZone("UTC+5", 5*3600)), "from-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, _ := bothWays(t, lwwColumn, concurrentEdits(tc.tsA, tc.tsB))
			require.Empty(t, out.Dead)
			require.Equal(t, tc.want, out.A["id=1"]["name"])
			require.Equal(t, tc.want, out.B["id=1"]["name"])
			require.Len(t, out.Calls, 2)
			for _, s := range out.Calls {
				require.Equal(t, duplex.UpdateUpdate, s.Kind)
				won := s.Dir == "a->b" && tc.want == "from-a" || s.Dir == "b->a" && tc.want == "from-b"
				want := map[bool]duplex.Pick{true: duplex.TakeSource, false: duplex.KeepTarget}[won]
				require.Equal(t, map[string]duplex.Pick{"name": want, "ts": want}, s.Picks, s.String())
			}
		})
	}
}

func TestLWWColumnTooCloseToCall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		tsA, tsB time.Time
	}{
		{"equal", at(time.Minute), at(time.Minute)},
		{"exactly the skew apart", at(time.Minute), at(time.Minute + skew)},
		{"just inside", at(time.Minute + skew - 1), at(time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, _ := bothWays(t, lwwColumn, concurrentEdits(tc.tsA, tc.tsB))
			require.Len(t, out.Dead, 2, "both directions dead-letter")
			for _, d := range out.Dead {
				require.Equal(t, duplex.ReasonConflict, d.Reason)
				require.Equal(t, "lww", d.Conflict.DecidedBy)
				require.Contains(t, d.Error, "too close to call")
				require.Contains(t, d.Error, "within the skew tolerance 2s")
				require.Contains(t, d.Conflict.Fields, "name") // ts too, unless both wrote the same instant
			}
			require.Equal(t, "from-a", out.A["id=1"]["name"], "both versions stay: the targets are untouched")
			require.Equal(t, "from-b", out.B["id=1"]["name"])
		})
	}
}

func TestLWWColumnUnknownTimesDeadLetter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		tsA, tsB any
		reason   string
	}{
		{"NULL on one side", nil, at(time.Minute), "a's ts is NULL"},
		{"NULL on both", nil, nil, "ts is NULL"},
		{"not a time", "yesterday", at(time.Minute), "a's ts is a string, not a time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, _ := bothWays(t, lwwColumn, concurrentEdits(tc.tsA, tc.tsB))
			require.Len(t, out.Dead, 2)
			for _, d := range out.Dead {
				require.Contains(t, d.Error, tc.reason)
			}
		})
	}
}

func TestLWWColumnClockAheadDeadLetters(t *testing.T) {
	t.Parallel()
	out, _ := bothWays(t, lwwColumn, concurrentEdits(at(2*time.Hour), at(time.Minute)))
	require.Len(t, out.Dead, 2)
	require.Contains(t, out.Dead[0].Error, "a's time 2025-03-01T14:00:00Z is ahead of now (2025-03-01T13:00:00Z) by more than the skew tolerance 2s")
}

func TestLWWColumnInsertInsert(t *testing.T) {
	t.Parallel()
	out, _ := bothWays(t, lwwColumn, func(p *pair) {
		p.Insert("a", row(2, "name", "from-a", "ts", at(time.Minute)))
		p.Insert("b", row(2, "name", "from-b", "ts", at(2*time.Minute)))
	})
	require.Empty(t, out.Dead)
	require.Equal(t, row(2, "name", "from-b", "ts", at(2*time.Minute)), out.A["id=2"])
	require.Equal(t, duplex.InsertInsert, out.Calls[0].Kind)
}

func TestLWWColumnOnlyDecidesConflictingFields(t *testing.T) {
	t.Parallel()
	out, _ := bothWays(t, lwwColumn, func(p *pair) {
		p.Seed(row(1, "name", "x", "note", "x", "ts", epoch))
		p.Update("a", 1, duplex.Values{"name": "from-a", "note": "only a", "ts": at(time.Minute)})
		p.Update("b", 1, duplex.Values{"name": "from-b", "ts": at(2 * time.Minute)})
	})
	require.Empty(t, out.Dead)
	require.Equal(t, row(1, "name", "from-b", "note", "only a", "ts", at(2*time.Minute)), out.A["id=1"])
	require.Equal(t, duplex.Undecided, out.Calls[0].Picks["note"], "a field only one side changed is not LWW's business")
}

func TestLWWDeleteUpdate(t *testing.T) {
	t.Parallel()
	// The delete's time is its commit time (the fake clock: epoch+1s per
	// step, so a's delete commits at epoch+2s).
	t.Run("delete newer: deleted on both sides", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, lwwColumn, func(p *pair) {
			p.Seed(row(1, "name", "x", "ts", epoch))
			p.Update("b", 1, duplex.Values{"name": "from-b", "ts": epoch.Add(-time.Minute)})
			p.Delete("a", 1)
		})
		require.Nil(t, out.A["id=1"])
		require.Nil(t, out.B["id=1"])
		require.Empty(t, out.Dead, "a's delete, merged first, carries its time: the newer delete wins")
		// b's update merged first meets a row a deleted at an unknown time:
		// too early to call, dead-lettered; a's delete then settles the row.
		require.Len(t, out.DeadBA, 1)
		require.Equal(t, duplex.UpdateDelete, out.DeadBA[0].Conflict.Kind)
		require.Contains(t, out.DeadBA[0].Error, "a has no row: when it was deleted is unknown")
		for _, s := range out.Calls {
			if s.Kind == duplex.DeleteUpdate {
				require.Equal(t, map[string]duplex.Pick{"name": duplex.TakeSource, "ts": duplex.TakeSource}, s.Picks)
			}
		}
	})
	t.Run("update newer: the row survives on both sides", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, lwwColumn, func(p *pair) {
			p.Seed(row(1, "name", "x", "ts", epoch))
			p.Delete("a", 1)
			p.Update("b", 1, duplex.Values{"name": "from-b", "ts": at(time.Minute)})
		})
		require.Equal(t, "from-b", out.A["id=1"]["name"], "the newer update recreates the row a deleted")
		require.Equal(t, "from-b", out.B["id=1"]["name"])
		require.Empty(t, out.Dead)
		require.Len(t, out.DeadBA, 1, "b's update met a's delete before its time was known")
		require.Equal(t, duplex.Direction{From: "b", To: "a"}, out.DeadBA[0].Direction)
		require.Equal(t, "from-b", out.DeadBA[0].Change.After["name"], "the DLQ holds the update to replay")
	})
}

func TestLWWCommitTimes(t *testing.T) {
	t.Parallel()
	lww := func() duplex.Resolver {
		l, err := resolve.NewLWW("", 500*time.Millisecond)
		require.NoError(t, err)
		l.Now = func() time.Time { return epoch.Add(time.Hour) }
		return l
	}
	t.Run("the later commit wins", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, lww, func(p *pair) {
			p.Seed(row(1, "name", "x"))
			p.Update("b", 1, duplex.Values{"name": "from-b"}) // epoch+2s
			p.Update("a", 1, duplex.Values{"name": "from-a"}) // epoch+3s
		}, withCommitTimes())
		require.Empty(t, out.Dead)
		require.Equal(t, "from-a", out.B["id=1"]["name"])
		for _, s := range out.Calls {
			require.False(t, s.TargetTime.IsZero())
		}
	})
	t.Run("within the skew", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, lww, func(p *pair) {
			p.Seed(row(1, "name", "x"))
			p.Update("b", 1, duplex.Values{"name": "from-b"})
			p.Advance(-700 * time.Millisecond) // a's commit comes 300ms after b's
			p.Update("a", 1, duplex.Values{"name": "from-a"})
		}, withCommitTimes())
		require.Len(t, out.Dead, 2)
		require.Contains(t, out.Dead[0].Error, "300ms apart, within the skew tolerance 500ms")
	})
	t.Run("unknown when the target does not report them", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, lww, func(p *pair) {
			p.Seed(row(1, "name", "x"))
			p.Update("b", 1, duplex.Values{"name": "from-b"})
			p.Update("a", 1, duplex.Values{"name": "from-a"})
		})
		require.Len(t, out.Dead, 2)
		require.Contains(t, out.Dead[0].Error, "commit times are unknown")
		require.Contains(t, out.Dead[0].Error, "duplex.CommitTimeField")
	})
	t.Run("delete newer than the update", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, lww, func(p *pair) {
			p.Seed(row(1, "name", "x"))
			p.Update("b", 1, duplex.Values{"name": "from-b"})
			p.Delete("a", 1)
		}, withCommitTimes())
		require.Nil(t, out.A["id=1"])
		require.Nil(t, out.B["id=1"])
		require.Empty(t, out.Dead, "a's delete merged first: its commit time wins")
		require.Len(t, out.DeadBA, 1, "b's update merged first: a's delete time is unknown")
	})
}

func TestLWWConfigErrors(t *testing.T) {
	t.Parallel()
	_, err := resolve.NewLWW("ts", -time.Second)
	require.EqualError(t, err, "resolve: LWW Skew must not be negative (got -1s)")

	// A literal with a negative skew fails every conflict permanently: the
	// change goes to the DLQ with the configuration error.
	p := newPair(t, &resolve.LWW{Column: "ts", Skew: -time.Second})
	concurrentEdits(at(time.Minute), at(2*time.Minute))(p)
	p.Deliver("a", "b", false)
	dl := p.DeadLetters()
	require.Len(t, dl, 1)
	require.Equal(t, duplex.ReasonPermanentError, dl[0].Reason)
	require.Contains(t, dl[0].Error, "Skew must not be negative")

	l, err := resolve.NewLWW("updated_at", time.Second)
	require.NoError(t, err)
	err = l.ValidateColumn(map[duplex.Table]map[string]string{
		{Schema: "public", Name: "customers"}: {"id": "bigint", "updated_at": "timestamp(3) with time zone"},
		{Schema: "public", Name: "orders"}:    {"id": "bigint", "updated_at": "text"},
		{Schema: "public", Name: "notes"}:     {"id": "bigint"},
		{Schema: "crm", Name: "accounts"}:     {"updated_at": "TIMESTAMPTZ"},
	})
	require.Equal(t, []string{
		`resolve: LWW column "updated_at": table public.notes has no such column`,
		`resolve: LWW column "updated_at": public.orders.updated_at is text, not a timestamp`,
	}, strings.Split(err.Error(), "\n"))
	commit, err := resolve.NewLWW("", 0)
	require.NoError(t, err)
	require.NoError(t, commit.ValidateColumn(map[duplex.Table]map[string]string{{Name: "x"}: {}}), "commit times need no column")
}

func TestLWWTimestampColumnAloneTakesTheLaterStamp(t *testing.T) {
	t.Parallel()
	// The sides change different fields 1ms apart (well within the skew):
	// only the ts column itself is contested, and the later stamp wins on
	// both sides instead of the row going to the DLQ.
	out, p := bothWays(t, lwwColumn, func(p *pair) {
		p.Seed(row(1, "name", "x", "note", "x", "ts", epoch))
		p.Update("a", 1, duplex.Values{"name": "from a", "ts": at(time.Second)})
		p.Update("b", 1, duplex.Values{"note": "from b", "ts": at(time.Second + time.Millisecond)})
	})
	require.Empty(t, out.Dead)
	require.Empty(t, p.Diff())
	require.Equal(t, "from a", out.A["id=1"]["name"])
	require.Equal(t, "from b", out.A["id=1"]["note"])
	require.Equal(t, at(time.Second+time.Millisecond), out.A["id=1"]["ts"])
}
