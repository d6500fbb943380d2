package dlq

import (
	"context"
	"fmt"

	"github.com/duplexsync/duplex"
)

// settleHeldRows retries, after the retry of unique collision e went
// through, the other pending entries of its two rows: the entry's row in
// its direction and the holding row in the other. A later edit of a row
// whose insert was refused is an edit of a row the other side never had,
// held as an entry of its own; the retry brought the row over, so those
// entries now find nothing left to do, or apply what is newer. It returns
// a sentence saying what it did ("" when there was nothing).
func (a *admin) settleHeldRows(ctx context.Context, e *Entry, who string) string {
	u := e.Conflict.Unique
	rows := []struct {
		dir duplex.Direction
		key string
	}{{e.Direction, e.Key()}}
	if u.HolderKey != nil {
		rows = append(rows, struct {
			dir duplex.Direction
			key string
		}{e.Direction.Reverse(), u.HolderKey.String()})
	}
	settled, failed := 0, 0
	for _, r := range rows {
		pending, err := a.store.PendingForKey(ctx, r.dir, e.Change.Table, r.key)
		if err != nil {
			a.log.WarnContext(ctx, "dlq admin: cannot list the held row's other entries", "id", e.ID, "err", err)
			failed++
			continue
		}
		for _, p := range pending {
			if p.ID == e.ID {
				continue
			}
			rep, err := a.retry(ctx, p.ID, who)
			switch {
			case err != nil:
				a.log.WarnContext(ctx, "dlq admin: retry of a held row's later entry failed", "id", p.ID, "err", err)
				failed++
			case rep.Entry.Status == StatusResolved:
				settled++
			default:
				failed++
			}
		}
	}
	if settled+failed == 0 {
		return ""
	}
	return fmt.Sprintf("; retried the rows' %d later entries: %d resolved, %d still pending", settled+failed, settled, failed)
}
