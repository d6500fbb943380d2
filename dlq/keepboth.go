package dlq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/duplexsync/duplex"
)

// keepBothPrefix starts the resolution of an entry whose keep-both drew
// its new key ("keep-both move=b new_key=id=57 ..."): the key is recorded
// in the entry before anything is written, and a later keep-both of the
// entry (after a crash or a failure between the two sides' commits) reads
// it back, so the row moves to that key and never to a second one.
const keepBothPrefix = "keep-both move="

// keepBothPlan returns the new key recorded in resolution for a keep-both
// moving side move's row.
func keepBothPlan(resolution, move string) (duplex.Key, bool) {
	rest, ok := strings.CutPrefix(resolution, keepBothPrefix)
	if !ok {
		return nil, false
	}
	side, rest, ok := strings.Cut(rest, " new_key=")
	if !ok || side != move {
		return nil, false
	}
	text, _, _ := strings.Cut(rest, " ")
	i := strings.LastIndexByte(text, '=')
	if i <= 0 {
		return nil, false
	}
	n, err := strconv.ParseInt(text[i+1:], 10, 64)
	if err != nil {
		return nil, false
	}
	return duplex.Key{{Name: text[:i], Value: n}}, true
}

var errNoKeyActions = withStatus(http.StatusNotImplemented,
	errors.New("dlq: keep both is not available: the admin handler's Actions cannot draw keys (use dlq.SyncActions(sync))"))

// keepBoth keeps both rows of entry id's key, giving side move's row a
// new key: drawn (Actions.NewKey) and recorded in the entry first, then
// written to both sides (KeyActions.KeepBoth); the entry is resolved. A
// failure leaves the entry pending with the key recorded, so the next
// keep-both of the same side finishes with that key; a failure that wrote
// nothing and needs another key (duplex.ErrKeyTaken) or another action
// (duplex.ErrNotOffered) forgets it.
func (a *admin) keepBoth(ctx context.Context, id int64, who, move string) (actionReply, error) {
	ka, ok := a.actions.(KeyActions)
	if !ok {
		return actionReply{}, errNoKeyActions
	}
	e, err := a.store.Get(ctx, id)
	if err != nil {
		return actionReply{}, err
	}
	switch e.Status {
	case StatusResolved:
		return actionReply{Entry: e, Message: fmt.Sprintf("entry %d is already resolved", id)}, nil
	case StatusDismissed:
		return actionReply{}, &TransitionError{ID: id, Status: e.Status, From: []Status{StatusPending}, To: StatusResolved}
	}
	what := fmt.Sprintf("entry %d (%s %s) for %s's row", id, e.Change.Table, e.Change.Key, move)
	key, planned := keepBothPlan(e.Resolution, move)
	if !planned && strings.HasPrefix(e.Resolution, keepBothPrefix) {
		// The other side's row may be moved already: finish that first.
		return actionReply{}, withStatus(http.StatusConflict, fmt.Errorf("dlq: keep both of %s: a keep both of the other side's row is under way (%s): run that one again to finish it",
			what, e.Resolution))
	}
	if !planned {
		if e.Status != StatusPending {
			return actionReply{}, withStatus(http.StatusConflict, fmt.Errorf("dlq: keep both of %s: the entry is %s (%s)", what, e.Status, e.Resolution))
		}
		if key, err = ka.NewKey(ctx, &e, move); err != nil {
			return actionReply{}, withStatus(actionStatus(err), fmt.Errorf("dlq: keep both of %s: %w", what, err))
		}
		var tok [4]byte
		_, _ = rand.Read(tok[:])
		claim := fmt.Sprintf("%s%s new_key=%s (drawn by request %s)", keepBothPrefix, move, key, hex.EncodeToString(tok[:]))
		if e, err = a.store.SetStatus(ctx, id, []Status{StatusPending}, StatusRetried, who, claim); err != nil {
			return actionReply{}, err
		}
		if e.Resolution != claim {
			// Another request drew a key first: go on with its key.
			if key, planned = keepBothPlan(e.Resolution, move); !planned {
				return actionReply{}, withStatus(http.StatusConflict, fmt.Errorf("dlq: keep both of %s: someone acted first (%s)", what, e.Resolution))
			}
		}
	}
	res, err := ka.KeepBoth(ctx, &e, move, key)
	if err != nil {
		resolution := fmt.Sprintf("%s%s new_key=%s (failed; keep both again finishes with this key): %v", keepBothPrefix, move, key, err)
		if errors.Is(err, duplex.ErrKeyTaken) || errors.Is(err, duplex.ErrNotOffered) {
			resolution = "keep both failed, nothing written: " + err.Error()
		}
		if rerr := a.reopen(ctx, id, who, resolution); rerr != nil {
			a.log.ErrorContext(ctx, "dlq admin: cannot reopen entry after failed keep both", "id", id, "err", rerr)
		}
		return actionReply{}, withStatus(actionStatus(err), fmt.Errorf("dlq: keep both of %s with new key %s failed: %w", what, key, err))
	}
	e, err = a.store.SetStatus(ctx, id, []Status{StatusPending, StatusRetried}, StatusResolved, who, fmt.Sprintf("kept both: %s's row is %s", move, key))
	if err != nil {
		return actionReply{}, fmt.Errorf("dlq: kept both of %s (%s) but the entry was not updated: %w", what, res.Outcome, err)
	}
	msg := fmt.Sprintf("kept both of entry %d: %s", id, res.Outcome)
	if res.Detail != "" {
		msg += " (" + res.Detail + ")"
	}
	return actionReply{Entry: e, Result: &res, Message: msg}, nil
}

// reopen makes entry id pending with resolution (SetStatus records a
// resolution only with a move, so a pending entry goes through retried).
func (a *admin) reopen(ctx context.Context, id int64, who, resolution string) error {
	e, err := a.store.Get(ctx, id)
	if err != nil {
		return err
	}
	if e.Status == StatusPending {
		if _, err := a.store.SetStatus(ctx, id, []Status{StatusPending}, StatusRetried, who, resolution); err != nil {
			return err
		}
	}
	_, err = a.store.SetStatus(ctx, id, []Status{StatusRetried}, StatusPending, who, resolution)
	return err
}

// actionStatus is the HTTP status of an action's failure: 409 when the
// data or the entry is not in a state the action can take, 502 else.
func actionStatus(err error) int {
	for _, e := range []error{duplex.ErrNotOffered, duplex.ErrKeyTaken, duplex.ErrNewerData, duplex.ErrNotRunning, duplex.ErrKeyBusy, duplex.ErrOnboarding} {
		if errors.Is(err, e) {
			return http.StatusConflict
		}
	}
	return http.StatusBadGateway
}
