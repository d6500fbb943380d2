package loopguard_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/loopguard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOrigins(t *testing.T) {
	t.Parallel()
	g := loopguard.Origins("duplex_a", "duplex_b", "")
	for _, tt := range []struct {
		origin string
		echo   bool
	}{
		{"duplex_a", true},
		{"duplex_b", true},
		{"", false}, // a user's write
		{"duplex", false},
		{"other_tool", false},
	} {
		got, err := g.Echo(t.Context(), &duplex.Change{Origin: tt.origin, Op: duplex.OpUpdate})
		require.NoError(t, err)
		require.Equal(t, tt.echo, got, "origin %q", tt.origin)
	}

	none := loopguard.Origins()
	got, err := none.Echo(t.Context(), &duplex.Change{Origin: "duplex_a"})
	require.NoError(t, err)
	require.False(t, got)
}
