package dlq

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// bulkTimeout bounds a whole bulk action once it has started.
const bulkTimeout = 30 * time.Minute

// bulkPage is how many entries a bulk action reads at a time.
const bulkPage = 200

// maxBulkErrors is how many failures a bulk reply lists (all are counted).
const maxBulkErrors = 20

// BulkResult is the answer to a bulk action (POST /dlq/bulk).
type BulkResult struct {
	// Action is what was done: retry, dismiss, resolve or keep-both.
	Action string `json:"action"`
	// Winner is the side a resolve kept, or the side whose rows a
	// keep-both gave new keys.
	Winner string `json:"winner,omitempty"`
	// Filter selected the entries (always the pending ones).
	Filter Filter `json:"filter"`
	// DryRun: nothing was done; Matched says how many entries would be.
	DryRun bool `json:"dry_run"`
	// Matched is the number of pending entries the filter selected.
	Matched int `json:"matched"`
	// Done and Failed count the entries acted on and those whose action
	// failed; Errors holds the first failures' messages.
	Done   int      `json:"done"`
	Failed int      `json:"failed"`
	Errors []string `json:"errors,omitempty"`
}

// Message says in a sentence what the bulk action did.
func (b *BulkResult) Message() string {
	what := b.Action
	if b.Winner != "" {
		what += " for " + b.Winner
	}
	if b.DryRun {
		return fmt.Sprintf("dry run: %d pending entries match; %s would act on them", b.Matched, what)
	}
	msg := fmt.Sprintf("bulk %s: %d of %d pending entries done, %d failed", what, b.Done, b.Matched, b.Failed)
	if len(b.Errors) > 0 {
		msg += " (first: " + b.Errors[0] + ")"
	}
	return msg
}

// bulk runs action on every pending entry matching f, oldest first (so
// the changes to one row are retried in their order), or only counts
// them when dryRun.
func (a *admin) bulk(r *http.Request, f Filter, dryRun bool) (BulkResult, error) {
	q := r.URL.Query()
	action := q.Get("action")
	if action == "" {
		action = r.PostFormValue("action")
	}
	res := BulkResult{Action: action, DryRun: dryRun}
	switch action {
	case "retry", "resolve", "keep-both":
		if a.actions == nil && !dryRun {
			return res, errNoActions
		}
		param := map[string]string{"resolve": "winner", "keep-both": "move"}[action]
		if param == "move" && r.FormValue("move") == "" {
			param = "winner" // the list page's form has one side field
		}
		if param != "" {
			var err error
			if res.Winner, err = a.sideParam(r, param); err != nil {
				return res, err
			}
		}
	case "dismiss":
	default:
		return res, badRequest("dlq: parameter action: unknown bulk action %q (want retry, dismiss, resolve or keep-both)", action)
	}
	f.Status, f.OldestFirst, f.Offset, f.After, f.Limit = StatusPending, true, 0, 0, bulkPage
	res.Filter = f
	who := a.who(r)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), bulkTimeout)
	defer cancel()
	_, total, err := a.store.List(ctx, Filter{Sync: f.Sync, Direction: f.Direction, Table: f.Table, Reason: f.Reason,
		Status: f.Status, Key: f.Key, Field: f.Field, Before: f.Before, Limit: 1})
	if err != nil {
		return res, fmt.Errorf("dlq: bulk %s: count entries: %w", action, err)
	}
	res.Matched = total
	if dryRun {
		return res, nil
	}
	// Entries acted on leave pending, and the ones that fail stay behind
	// the cursor, so paging by ID sees each entry once.
	for {
		page, _, err := a.store.List(ctx, f)
		if err != nil {
			return res, fmt.Errorf("dlq: bulk %s: list entries: %w", action, err)
		}
		for _, e := range page {
			f.After = e.ID
			var err error
			switch action {
			case "retry":
				_, err = a.retry(ctx, e.ID, who)
			case "dismiss":
				_, err = a.dismiss(ctx, e.ID, who)
			case "resolve":
				_, err = a.resolve(ctx, e.ID, who, res.Winner)
			case "keep-both":
				_, err = a.keepBoth(ctx, e.ID, who, res.Winner)
			}
			if err != nil {
				res.Failed++
				if len(res.Errors) < maxBulkErrors {
					res.Errors = append(res.Errors, err.Error())
				}
				continue
			}
			res.Done++
		}
		if len(page) < f.Limit {
			break
		}
	}
	a.log.InfoContext(ctx, "dlq admin bulk action", "action", action, "by", who, "winner", res.Winner,
		"matched", res.Matched, "done", res.Done, "failed", res.Failed)
	return res, nil
}

// bulkFilter reads a bulk action's filter from the query and, for the
// HTML form, the posted fields.
func bulkFilter(r *http.Request) (Filter, error) {
	if err := r.ParseForm(); err != nil {
		return Filter{}, badRequest("dlq: bad form: %v", err)
	}
	return parseFilter(r.Form, bulkPage)
}

func (a *admin) apiBulk(w http.ResponseWriter, r *http.Request) {
	f, err := bulkFilter(r)
	if err != nil {
		writeJSONError(w, statusOf(err), err.Error())
		return
	}
	res, err := a.bulk(r, f, isTrue(r.FormValue("dry_run")))
	if err != nil {
		writeJSONError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *admin) pageBulk(w http.ResponseWriter, r *http.Request) {
	f, err := bulkFilter(r)
	if err != nil {
		a.renderError(w, r, err)
		return
	}
	res, err := a.bulk(r, f, r.PostFormValue("dry_run") != "")
	v := url.Values{}
	for _, k := range filterParams {
		if s := r.Form.Get(k); s != "" {
			v.Set(k, s)
		}
	}
	v.Set("status", string(StatusPending))
	if err != nil {
		v.Set("flash", err.Error())
		v.Set("level", "error")
	} else {
		v.Set("flash", res.Message())
		if res.Failed > 0 {
			v.Set("level", "error")
		}
	}
	// Relative, so that it works under any mount prefix.
	w.Header().Set("Location", "./?"+v.Encode())
	w.WriteHeader(http.StatusSeeOther)
}

// filterParams are the query parameters of a filter, as list and bulk
// links keep them.
var filterParams = []string{"sync", "direction", "table", "reason", "status", "key", "field", "older_than"}

func isTrue(s string) bool {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	return err == nil && b
}
