package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
)

// keySync is a fakeSync that also keeps both rows (dlq.KeyActions): it
// draws keys id=100, 101, ... and records the keys KeepBoth was given;
// fail makes the next KeepBoth calls fail with those errors, in order.
type keySync struct {
	*fakeSync
	mu     sync.Mutex
	drawn  int64
	kept   []string // "<move>:<key>"
	fail   []error
	newErr error
}

func (k *keySync) NewKey(_ context.Context, _ *dlq.Entry, _ string) (duplex.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.newErr != nil {
		return nil, k.newErr
	}
	k.drawn++
	return duplex.Key{{Name: "id", Value: 99 + k.drawn}}, nil
}

func (k *keySync) KeepBoth(_ context.Context, _ *dlq.Entry, move string, newKey duplex.Key) (duplex.ActionResult, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kept = append(k.kept, move+":"+newKey.String())
	if len(k.fail) > 0 {
		err := k.fail[0]
		k.fail = k.fail[1:]
		return duplex.ActionResult{}, err
	}
	return duplex.ActionResult{Outcome: duplex.OutcomeApplied, Detail: "kept both"}, nil
}

// insertInsert is the entry of two rows made under key id=n, one on each
// side.
func insertInsert(n int) *duplex.DeadLetter {
	l := heldLetter(n, fmt.Sprint("ii", n), ab, tCustomers, "name")
	l.Conflict.Kind, l.Conflict.Base = duplex.InsertInsert, nil
	return l
}

// TestAdminKeepBoth: POST /dlq/{id}/keep-both?move= draws a key, records
// it in the entry, keeps both and resolves the entry; after a failure the
// next keep-both finishes with the same key (no second draw) and the
// other side's keep-both waits for it; a failure that wrote nothing (the
// key taken) forgets it; one that does not apply
// answers 409 with the reason, the entry pending.
func TestAdminKeepBoth(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds(t) {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			s := kind.new(t)
			ks := &keySync{fakeSync: newFakeSync(s), fail: []error{
				duplex.Unavailable(errors.New("crash between the commits")),
				fmt.Errorf("%w: id=101 is on a", duplex.ErrKeyTaken),
			}}
			h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: ks})
			id := put(t, s, heldLetter(1, "c1", ab, tCustomers, "name"))
			target := fmt.Sprintf("/dlq/%d/keep-both", id)
			requireError(t, post(t, h, target), http.StatusBadRequest, "parameter move is required")

			requireError(t, post(t, h, target+"?move=b"), http.StatusBadGateway, "crash between the commits")
			e := getEntry(t, s, id)
			require.Equal(t, dlq.StatusPending, e.Status)
			require.Contains(t, e.Resolution, "keep-both move=b new_key=id=100")

			// The other side waits until this one is finished.
			requireError(t, post(t, h, target+"?move=a"), http.StatusConflict, "under way")

			// The key turns out taken (nothing written): forgotten, the
			// next keep-both draws another.
			requireError(t, post(t, h, target+"?move=b"), http.StatusConflict, "id=101 is on a")
			e = getEntry(t, s, id)
			require.Equal(t, dlq.StatusPending, e.Status)
			require.Contains(t, e.Resolution, "nothing written")

			rec := post(t, h, target+"?move=b")
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			rep := decode[actionReply](t, rec)
			require.Equal(t, dlq.StatusResolved, rep.Entry.Status)
			require.Equal(t, "kept both: b's row is id=101", rep.Entry.Resolution)
			require.Equal(t, []string{"b:id=100", "b:id=100", "b:id=101"}, ks.kept, "the same key after a failure, a new one after the key was taken")

			rec = post(t, h, target+"?move=b")
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			require.Contains(t, decode[actionReply](t, rec).Message, "already resolved")
			require.Len(t, ks.kept, 3, "not kept again")

			ks.newErr = fmt.Errorf("%w: the key of public.customers is not fed by a sequence", duplex.ErrNotOffered)
			id2 := put(t, s, heldLetter(2, "c2", ab, tCustomers, "name"))
			requireError(t, post(t, h, fmt.Sprintf("/dlq/%d/keep-both?move=a", id2)), http.StatusConflict, "not fed by a sequence")
			require.Equal(t, dlq.StatusPending, getEntry(t, s, id2).Status)

			// In bulk, by filter (the list form's side field names the side).
			ks.newErr = nil
			rec = post(t, h, "/dlq/bulk?action=keep-both&winner=a&key=id=2")
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			bulk := decode[dlq.BulkResult](t, rec)
			require.Equal(t, 1, bulk.Done, bulk.Message())
			require.Equal(t, "a:id=102", ks.kept[len(ks.kept)-1])
			require.Equal(t, dlq.StatusResolved, getEntry(t, s, id2).Status)

			// The page offers it; without KeyActions it answers 501.
			id2 = put(t, s, heldLetter(3, "c3", ab, tCustomers, "name"))
			require.NotContains(t, request(t, h, "GET", fmt.Sprintf("/entries/%d", id2), nil).Body.String(), `id="keep-both-a"`,
				"not for a row changed on both sides")
			id2 = put(t, s, insertInsert(4))
			page := request(t, h, "GET", fmt.Sprintf("/entries/%d", id2), nil).Body.String()
			require.Contains(t, page, `id="keep-both-a"`)
			require.Contains(t, page, `id="keep-both-b"`)
			plain := newAdmin(t, dlq.AdminConfig{Store: s, Actions: newFakeSync(s)})
			requireError(t, post(t, plain, fmt.Sprintf("/dlq/%d/keep-both?move=a", id2)), http.StatusNotImplemented, "cannot draw keys")
			require.NotContains(t, request(t, plain, "GET", fmt.Sprintf("/entries/%d", id2), nil).Body.String(), `id="keep-both-a"`)
		})
	}
}

// TestAdminUniqueCollision: a unique collision's entry shows, in JSON and
// on its page, the constraint, the contested values and the holding row.
func TestAdminUniqueCollision(t *testing.T) {
	t.Parallel()
	s := dlq.NewMemory(dlq.MemoryConfig{})
	l := deadLetter(10, ab, tCustomers, duplex.ReasonConflict)
	l.Conflict = &duplex.ConflictInfo{Kind: duplex.UniqueCollision, Fields: []string{"email"},
		Source: duplex.Values{"id": int64(10), "email": "ann@x"}, Target: duplex.Values{"id": int64(20), "email": "ann@x"},
		Unique: &duplex.UniqueInfo{Constraint: "customers_email_key", Columns: []string{"email"}, Values: duplex.Values{"email": "ann@x"},
			HolderKey: duplex.Key{{Name: "id", Value: int64(20)}}}}
	id := put(t, s, l)
	h := newAdmin(t, dlq.AdminConfig{Store: s})
	rec := request(t, h, "GET", fmt.Sprintf("/dlq/%d", id), nil)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), `"unique":{"constraint":"customers_email_key","columns":["email"],"values":{"email":"ann@x"},"holder_key":[{"name":"id","value":20}]}`)
	page := request(t, h, "GET", fmt.Sprintf("/entries/%d", id), nil).Body.String()
	require.Contains(t, page, `customers_email_key (email=&#34;ann@x&#34;), held on b by id=20`)
}

// TestBrowserKeepBoth keeps both rows of an entry from its page: the
// button for side b's row, the flash naming the new key, the entry
// resolved.
func TestBrowserKeepBoth(t *testing.T) {
	t.Parallel()
	s := dlq.NewMemory(dlq.MemoryConfig{})
	id := put(t, s, insertInsert(1))
	ks := &keySync{fakeSync: newFakeSync(s)}
	h, err := dlq.NewAdmin(dlq.AdminConfig{Store: s, Actions: ks, Auth: dlq.NoAuth, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	list := serveAdmin(t, h)
	ctx := browser(t)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(fmt.Sprintf("%sentries/%d", list, id))))
	require.Equal(t, "Keep both: new key for b's row", text(t, ctx, "#keep-both-b"))
	click(t, ctx, "#keep-both-b", "#flash")
	require.Equal(t, fmt.Sprintf("kept both of entry %d: applied (kept both)", id), text(t, ctx, "#flash"))
	require.Equal(t, "resolved", text(t, ctx, "#status"))
	require.Equal(t, "kept both: b's row is id=100", text(t, ctx, "#resolution"))
	require.Equal(t, []string{"b:id=100"}, ks.kept)
}
