package pgvalue_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgvalue"
	"github.com/duplexsync/duplex/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestJSONEqualMatchesPostgres checks duplex.Equal against PostgreSQL on
// pairs of JSON texts: jsonb values (as written, and as decoded from the
// server's output) are Equal exactly when jsonb's = says so, and json
// values exactly when their texts (which json keeps) are the same.
func TestJSONEqualMatchesPostgres(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	decode := pgvalue.Decoder(3802)
	for _, p := range [][2]string{
		{`{"n": 12345678901234567890}`, `{"n": 12345678901234567891}`},
		{`{"n": 12345678901234567890}`, `{"n": 12345678901234567890.0}`},
		{`{"n": 1.0}`, `{"n": 1}`},
		{`1e2`, `100`},
		{`0.1e1`, `1.000`},
		{`-0`, `0`},
		{`-0.0e-7`, `0`},
		{`1e1000`, `1e1001`},
		{`1e1000`, `10e999`},
		{`1e-1000`, `0`},
		{`0.10000000000000000001`, `0.1`},
		{`9007199254740993`, `9007199254740992`},
		{`{"a": 1, "b": [1, 2]}`, `{"b": [1, 2], "a": 1}`},
		{`{"a": 1, "a": 2}`, `{"a": 2}`},
		{`{"a": 1, "a": 2}`, `{"a": 1}`},
		{`[[1, [2, [3]]]]`, `[[1, [2, [3.0]]]]`},
		{`[[1, [2, [3]]]]`, `[[1, [[2], 3]]]`},
		{`[1, 2]`, `[2, 1]`},
		{`{"\u0061": "\u00e9\n"}`, `{"a": "é\n"}`},
		{`"\ud83d\ude00"`, `"😀"`},
		{`"1"`, `1`},
		{`null`, `{}`},
		{`{"a": null}`, `{}`},
		{` [ ] `, `[]`},
	} {
		var pgEqual bool
		var textA, textB string
		require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT $1::text::jsonb = $2::text::jsonb, $1::text::jsonb::text, $2::text::jsonb::text`,
			p[0], p[1]).Scan(&pgEqual, &textA, &textB))
		require.Equal(t, pgEqual, duplex.Equal(duplex.JSONB(p[0]), duplex.JSONB(p[1])), "jsonb %s = %s", p[0], p[1])
		a, err := decode([]byte(textA))
		require.NoError(t, err)
		b, err := decode([]byte(textB))
		require.NoError(t, err)
		require.IsType(t, duplex.JSONB(nil), a)
		require.Equal(t, pgEqual, duplex.Equal(a, b), "jsonb as read back: %s = %s", textA, textB)

		var sameText bool
		require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT $1::text::json::text = $2::text::json::text`, p[0], p[1]).Scan(&sameText))
		require.Equal(t, sameText, duplex.Equal(json.RawMessage(p[0]), json.RawMessage(p[1])), "json %s = %s", p[0], p[1])
	}
}
