package pgpoll

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
)

// TestWallMark: the safe point of a timestamp (without time zone) column
// is the wall-clock time of the writers' zone, held back before clocks go
// back, so that no row written later has an earlier value.
func TestWallMark(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	s, err := New(t.Context(), Config{ConnString: db.URL, Sync: "s", System: "a", Tables: []duplex.Table{{Schema: "public", Name: "items"}}})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	s.zone = "America/New_York"
	cases := []struct {
		name, at, want string
	}{
		{"summer time", "2025-07-01 12:00:00.123456+00", "2025-07-01 08:00:00.123456"},
		{"standard time", "2025-12-01 12:00:00+00", "2025-12-01 07:00:00"},
		// Clocks go back at 06:00 UTC (02:00 EDT becomes 01:00 EST): at
		// 01:30 EDT the rows written from 06:00 UTC on read 01:00 and later.
		{"before clocks go back", "2025-11-02 05:30:00+00", "2025-11-02 00:30:00"},
		{"within 3 hours before clocks go back", "2025-11-02 03:30:00+00", "2025-11-01 22:30:00"},
		{"over 3 hours before clocks go back", "2025-11-02 02:59:00+00", "2025-11-01 22:59:00"},
		{"after clocks went back", "2025-11-02 06:30:00+00", "2025-11-02 01:30:00"},
		// Clocks go forward at 07:00 UTC (02:00 EST becomes 03:00 EDT).
		{"before clocks go forward", "2025-03-09 06:30:00+00", "2025-03-09 01:30:00"},
	}
	for _, c := range cases {
		m, err := s.wallMark(t.Context(), c.at)
		require.NoError(t, err, c.name)
		require.Equal(t, c.want, m.tsText, c.name)
		want, err := time.Parse("2006-01-02 15:04:05.999999", c.want)
		require.NoError(t, err)
		require.True(t, m.ts.Equal(want), "%s: %s, want %s", c.name, m.ts, want)
		require.Equal(t, c.at, m.stored(), "%s: the instant is what is stored", c.name)
	}
}

// TestCappedWallMarks: within a pass, the watermark of a timestamp column
// moves to the last row read only when that row's wall-clock value is
// before the safe point's, compared on the wall clock.
func TestCappedWallMarks(t *testing.T) {
	t.Parallel()
	wall := func(s string) mark {
		ts, err := parseTS(s)
		require.NoError(t, err)
		return mark{set: true, ts: ts, tsText: s}
	}
	safe := wall("2025-11-02 00:30:00")
	safe.at = "2025-11-02 05:30:00+00"
	start := wall("2025-11-02 00:00:00")
	row := wall("2025-11-02 00:45:00")
	row.key = []string{"1"}
	// 00:45 is before the instant of the safe point (05:30 UTC is 01:30
	// EDT) but not before its wall-clock mark: the watermark stays there.
	require.Equal(t, safe, capped(start, safe, row))
	earlier := wall("2025-11-02 00:10:00")
	earlier.key = []string{"2"}
	require.Equal(t, earlier, capped(start, safe, earlier))
	require.Equal(t, start, capped(start, mark{}, earlier), "unknown safe point: no move")
	require.Equal(t, "2025-11-02 05:30:00+00", capped(start, safe, mark{}).stored())
}
