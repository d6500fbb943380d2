package dlqtest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
)

// collision returns the dead letter of a unique collision on
// customers_email_key: the row with key id=own travelling dir is refused
// because the target's row id=holder has the e-mail already.
func collision(cid string, dir duplex.Direction, at time.Time, own, holder int64, email string) *duplex.DeadLetter {
	l := letter(cid, int(own))
	l.Direction, l.At, l.Reason, l.Error = dir, at, duplex.ReasonConflict, "unique collision: "+cid
	l.Change.Source, l.Change.Op = dir.From, duplex.OpInsert
	l.Change.After = duplex.Values{"id": own, "email": email, "name": dir.From + "'s"}
	l.Conflict = &duplex.ConflictInfo{Kind: duplex.UniqueCollision, Fields: []string{"email"},
		Source: l.Change.After.Clone(), Target: duplex.Values{"id": holder, "email": email, "name": dir.To + "'s"},
		Unique: &duplex.UniqueInfo{Constraint: "customers_email_key", Columns: []string{"email"}, Values: duplex.Values{"email": email},
			Detail: "Key (email)=(" + email + ") already exists.", HolderKey: duplex.Key{{Name: "id", Value: holder}}}, Merge: true}
	return l
}

// uniqueCollisionOneEntry: the two directions' dead letters of one unique
// collision (each side's row refused by the other, under different keys)
// in a two-way sync are one pending entry holding both rows and the
// constraint; another value of the constraint is another entry, and so is
// each change of a one-way pipeline.
func uniqueCollisionOneEntry(t *testing.T, s Sink) {
	put(t, s, collision("u1", dirAB, base, 10, 20, "ann@x"))
	put(t, s, collision("u2", dirBA, base.Add(time.Second), 20, 10, "ann@x"))
	e := only(t, s, dlq.Filter{Status: dlq.StatusPending})
	require.Equal(t, 2, e.Count)
	require.Equal(t, "u2", e.Change.ID, "the entry holds the newest put")
	require.Equal(t, duplex.UniqueCollision, e.Conflict.Kind)
	require.Equal(t, "b's", e.Conflict.Source["name"])
	require.Equal(t, "a's", e.Conflict.Target["name"])
	u := e.Conflict.Unique
	require.NotNil(t, u)
	require.Equal(t, "customers_email_key", u.Constraint)
	require.Equal(t, []string{"email"}, u.Columns)
	require.Equal(t, "ann@x", u.Values["email"])
	require.Equal(t, "Key (email)=(ann@x) already exists.", u.Detail)
	require.Equal(t, duplex.Key{{Name: "id", Value: int64(10)}}, u.HolderKey)
	require.Len(t, e.History, 1)
	require.Equal(t, "u1", e.History[0].ChangeID)
	require.Equal(t, "a's", e.History[0].Source["name"])
	require.Equal(t, "b's", e.History[0].Target["name"])

	// A replay of the first direction's change is the same entry.
	put(t, s, collision("u1", dirAB, base, 10, 20, "ann@x"))
	require.Equal(t, 3, only(t, s, dlq.Filter{}).Count)

	// Another e-mail is another collision.
	put(t, s, collision("u3", dirAB, base.Add(2*time.Second), 11, 21, "bob@x"))
	_, total, err := s.List(t.Context(), dlq.Filter{Status: dlq.StatusPending})
	require.NoError(t, err)
	require.Equal(t, 2, total)

	// One way (no merge), each change is an entry of its own.
	for _, cid := range []string{"u4", "u5"} {
		l := collision(cid, dirAB, base.Add(3*time.Second), 12, 22, "cy@x")
		l.Conflict.Merge = false
		put(t, s, l)
	}
	_, total, err = s.List(t.Context(), dlq.Filter{Status: dlq.StatusPending})
	require.NoError(t, err)
	require.Equal(t, 4, total)
}
