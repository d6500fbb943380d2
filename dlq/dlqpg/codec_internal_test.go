package dlqpg

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/valuecodec/valuecodectest"
)

func TestChangeRoundTrip(t *testing.T) {
	t.Parallel()
	full := duplex.Change{
		ID:         "slot\x00/0/16B3748#3",
		Source:     "a",
		Table:      duplex.Table{Schema: "public", Name: "cust\xffomers"},
		Key:        duplex.Key{{Name: "tenant", Value: "acme"}, {Name: "id", Value: int64(42)}},
		Op:         duplex.OpUpdate,
		Before:     duplex.Values{"id": int64(42), "note": nil},
		After:      duplex.Values{"id": int64(42), "blob": []byte{0}, "small": 7},
		Unchanged:  []string{"big_text"},
		CommitTime: time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC),
		Position:   "0/16B3748",
		Origin:     "o",
	}
	for name, c := range map[string]duplex.Change{
		"full":      full,
		"zero":      {},
		"empties":   {Key: duplex.Key{}, Before: duplex.Values{}, After: duplex.Values{}, Unchanged: []string{}},
		"truncate":  {Op: duplex.OpTruncate},
		"op number": {Op: duplex.Op(9)},
	} {
		b, err := encodeChange(&c)
		require.NoError(t, err, name)
		got, err := decodeChange(b)
		require.NoError(t, err, name)
		valuecodectest.RequireSame(t, c.Key == nil, got.Key == nil, name+" nil key")
		valuecodectest.RequireSame(t, c.Unchanged, got.Unchanged, name+" unchanged")
		valuecodectest.RequireSame(t, c.Before, got.Before, name+" before")
		valuecodectest.RequireSame(t, c.After, got.After, name+" after")
		valuecodectest.RequireSame(t, c.CommitTime, got.CommitTime, name+" commit time")
		require.Len(t, got.Key, len(c.Key))
		for i := range c.Key {
			require.Equal(t, c.Key[i].Name, got.Key[i].Name)
			valuecodectest.RequireSame(t, c.Key[i].Value, got.Key[i].Value, name+" key")
		}
		c.Key, got.Key = nil, nil
		c.Before, c.After, got.Before, got.After = nil, nil, nil, nil
		c.CommitTime, got.CommitTime = time.Time{}, time.Time{}
		require.Equal(t, c, got, name)
	}
	var doc map[string]any
	b, err := encodeChange(&full)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &doc))
	require.Equal(t, "update", doc["op"], "ops read as names")
	require.Equal(t, "a", doc["source"])
}

func TestConflictRoundTrip(t *testing.T) {
	t.Parallel()
	b, err := encodeConflict(nil)
	require.NoError(t, err)
	require.Nil(t, b)
	got, err := decodeConflict(nil)
	require.NoError(t, err)
	require.Nil(t, got)

	for _, ci := range []duplex.ConflictInfo{
		{Kind: duplex.UpdateUpdate, Fields: []string{"name"}, Source: duplex.Values{"name": "x"}, Target: duplex.Values{"name": nil}, DecidedBy: "lww"},
		{},
		{Kind: duplex.ConflictKind(200), Fields: []string{}, Source: duplex.Values{}},
	} {
		b, err := encodeConflict(&ci)
		require.NoError(t, err)
		got, err := decodeConflict(b)
		require.NoError(t, err)
		require.Equal(t, ci.Kind, got.Kind)
		require.Equal(t, ci.Fields, got.Fields)
		require.Equal(t, ci.DecidedBy, got.DecidedBy)
		valuecodectest.RequireSame(t, ci.Source, got.Source, "source")
		valuecodectest.RequireSame(t, ci.Target, got.Target, "target")
	}
}

func TestPgText(t *testing.T) {
	t.Parallel()
	require.Equal(t, "abc", pgText("abc"))
	require.Equal(t, "a\uFFFDb\uFFFD", pgText("a\x00b\xff"))
}
