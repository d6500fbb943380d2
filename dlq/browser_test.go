package dlq_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/dlq/dlqpg"
	"github.com/duplexsync/duplex/internal/testenv"
	"github.com/duplexsync/duplex/resolve"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// browser starts a headless Chromium for the test and returns its context.
// Without Chromium the test fails, pointing at scripts/chromium.sh, unless
// DUPLEX_SKIP_BROWSER=1.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("DUPLEX_SKIP_BROWSER") == "1" {
			t.Skipf("DUPLEX_SKIP_BROWSER=1 and no Chromium at %s", chromiumPath)
		}
		t.Fatalf("no Chromium at %s (%v): run scripts/chromium.sh to install it, or set DUPLEX_SKIP_BROWSER=1 to skip the browser tests", chromiumPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1360, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	// Start the browser now, so a failure to launch is reported as such.
	require.NoError(t, chromedp.Do(ctx), "start %s", chromiumPath)
	// Every browser step of the test is bounded.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// serveAdmin serves h under /ops/dlq-admin/ on a local HTTP server and
// returns the list page's URL.
func serveAdmin(t *testing.T, h http.Handler) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ops/dlq-admin/", http.StripPrefix("/ops/dlq-admin", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/ops/dlq-admin/"
}

// screenshot saves a PNG of the whole page to docs/<name> when
// DUPLEX_SCREENSHOTS=1.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("DUPLEX_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	path := filepath.Join("..", "docs", name)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("wrote %s", path)
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))), "wait for %s", sel)
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(t, err, "text of %s", sel)
	return strings.TrimSpace(s)
}

// click clicks sel and waits for the page it leads to, recognised by next.
// The page clicked on is marked first, so that a next it shows too (a
// flash message) is not taken for the new page's.
func click(t *testing.T, ctx context.Context, sel, next string) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))), "wait for %s", sel)
	_, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.dataset.left = "1"`))
	require.NoError(t, err, "mark the page")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(sel)),
		chromedp.WaitVisible(chromedp.CSS("html:not([data-left]) "+next)),
	), "click %s, then wait for %s", sel, next)
}

// TestBrowserResolve opens the list, clicks into an entry's detail page and
// resolves it for side A with the page's own form.
func TestBrowserResolve(t *testing.T) {
	t.Parallel()
	s := dlq.NewMemory(dlq.MemoryConfig{})
	// Some history, for the list (and its screenshot).
	for i, dl := range []*duplex.DeadLetter{
		deadLetter(3, ab, tOrders, duplex.ReasonPermanentError),
		deadLetter(8, ba, tCustomers, duplex.ReasonRetriesExhausted),
		deadLetter(9, ab, tOrders, duplex.ReasonPermanentError),
	} {
		dl.Error = []string{
			`ERROR: insert or update on table "orders" violates foreign key constraint "orders_customer_fk" (SQLSTATE 23503)`,
			"write public.customers id=8 to a: connection refused (5 attempts)",
			`ERROR: new row for relation "orders" violates check constraint "amount_positive" (SQLSTATE 23514)`,
		}[i]
		put(t, s, dl)
	}
	_, err := s.SetStatus(t.Context(), 1, nil, dlq.StatusDismissed, "ops", "dismissed")
	require.NoError(t, err)
	conflict := deadLetter(42, ab, tCustomers, duplex.ReasonConflict)
	conflict.Change.Before = duplex.Values{"id": int64(42), "name": "Ann Lee", "email": "ann@old.example", "plan": "pro"}
	conflict.Change.After = duplex.Values{"id": int64(42), "name": "Ann Lee", "email": "ann@crm.example", "plan": "pro"}
	conflict.Error = "manual review: update_update conflict on public.customers id=42, field(s) email"
	conflict.Conflict = &duplex.ConflictInfo{
		Kind: duplex.UpdateUpdate, Fields: []string{"email"}, DecidedBy: "manual_review",
		Source: conflict.Change.After.Clone(),
		Target: duplex.Values{"id": int64(42), "name": "Ann Lee", "email": "ann@billing.example", "plan": "pro"},
		Base:   conflict.Change.Before.Clone(),
		Merge:  true,
	}
	id := put(t, s, conflict)
	fs := newFakeSync(s)
	h, err := dlq.NewAdmin(dlq.AdminConfig{Store: s, Actions: fs, Auth: dlq.NoAuth, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	list := serveAdmin(t, h)
	ctx := browser(t)

	row := fmt.Sprintf("#entry-%d", id)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(list)))
	require.Contains(t, text(t, ctx, row), "id=42")
	require.Equal(t, "3", text(t, ctx, "#pending"))
	screenshot(t, ctx, "dlq-list.png")

	click(t, ctx, row+" a", "#status")
	require.Equal(t, "pending", text(t, ctx, "#status"))
	held := text(t, ctx, "#conflict tr.conflict")
	require.Contains(t, held, "ann@old.example", "the base")
	require.Contains(t, held, "ann@crm.example")
	require.Contains(t, held, "ann@billing.example")
	require.Equal(t, "manual_review", text(t, ctx, "#held-by"))
	screenshot(t, ctx, "dlq-detail.png")

	click(t, ctx, "#resolve-a", "#flash")
	require.Equal(t, fmt.Sprintf("resolved entry %d for a: applied (1 row copied)", id), text(t, ctx, "#flash"))
	require.Equal(t, "resolved", text(t, ctx, "#status"))
	require.Equal(t, "winner=a", text(t, ctx, "#resolution"))
	location, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(location, fmt.Sprintf("%sentries/%d?", list, id)), location)

	_, resolves := fs.calls()
	require.Equal(t, []string{fmt.Sprintf("%d:a", id)}, resolves)
	require.Equal(t, dlq.StatusResolved, getEntry(t, s, id).Status)
}

// TestBrowserRetryAndDismiss retries one entry and dismisses another from
// their pages, going back to the list in between.
func TestBrowserRetryAndDismiss(t *testing.T) {
	t.Parallel()
	s := dlq.NewMemory(dlq.MemoryConfig{})
	retried := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonPermanentError))
	dismissed := put(t, s, deadLetter(2, ba, tOrders, duplex.ReasonRetriesExhausted))
	fs := newFakeSync(s)
	h, err := dlq.NewAdmin(dlq.AdminConfig{Store: s, Actions: fs, Auth: dlq.NoAuth, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	list := serveAdmin(t, h)
	ctx := browser(t)

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(list)))
	click(t, ctx, fmt.Sprintf("#entry-%d a", retried), "#retry")
	click(t, ctx, "#retry", "#flash")
	require.Equal(t, fmt.Sprintf("retried entry %d: applied; resolved", retried), text(t, ctx, "#flash"))
	require.Equal(t, "resolved", text(t, ctx, "#status"))
	require.Equal(t, "retry: applied", text(t, ctx, "#resolution"))

	click(t, ctx, "main > p > a", "#entries")
	require.Contains(t, text(t, ctx, fmt.Sprintf("#entry-%d", retried)), "resolved")
	click(t, ctx, fmt.Sprintf("#entry-%d a", dismissed), "#dismiss")
	click(t, ctx, "#dismiss", "#flash")
	require.Equal(t, fmt.Sprintf("dismissed entry %d", dismissed), text(t, ctx, "#flash"))
	require.Equal(t, "dismissed", text(t, ctx, "#status"))

	// The list's status filter, through the form.
	click(t, ctx, "main > p > a", "#entries")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`select[name="status"]`), "dismissed"),
		chromedp.Click(chromedp.CSS(`form.filters button`)),
		chromedp.WaitReady(chromedp.CSS(`option[value="dismissed"][selected]`)),
	))
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#entries tbody tr").length`))
	require.NoError(t, err)
	require.Equal(t, 1, rows)
	require.Contains(t, text(t, ctx, "#entries tbody tr"), "dismissed")

	retries, _ := fs.calls()
	require.Equal(t, []int64{retried}, retries)
	require.Equal(t, dlq.StatusDismissed, getEntry(t, s, dismissed).Status)
}

// TestBrowserResolveEndToEnd resolves, from the browser, a real conflict
// between two PostgreSQL databases synced by duplex: both sides change the
// same field while the sync is not running, the sync holds the row in a
// dlqpg store (one entry, found by both directions), its page shows the
// three-way view (base, a, b, the held field marked), and a bulk resolve
// by filter from the list page (dry run first) makes b's row equal a's.
func TestBrowserResolveEndToEnd(t *testing.T) {
	t.Parallel()
	bctx := browser(t)
	ctx := t.Context()
	a, b := testenv.Postgres(t), testenv.Postgres(t)
	syncName := testenv.UniqueName(t, "dlqui")
	logger := slog.New(slog.DiscardHandler)
	readRow := func(db *testenv.DB) string {
		t.Helper()
		var row string
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT row(id, name, email)::text FROM customers WHERE id = 1`).Scan(&row))
		return row
	}
	for _, db := range []*testenv.DB{a, b} {
		testenv.RequireLogical(t, db)
		_, err := db.Pool.Exec(ctx, `CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
			INSERT INTO customers VALUES (1, 'Ann Lee', 'ann@old.example')`)
		require.NoError(t, err)
	}
	store, err := dlqpg.New(ctx, a.Pool, dlqpg.Config{Schema: testenv.UniqueName(t, "dlq")})
	require.NoError(t, err)
	endpoint := func(name string, db *testenv.DB) duplex.Endpoint {
		src, err := pglogical.New(ctx, pglogical.Config{
			ConnString: db.URL, Sync: syncName, System: name, Tables: []duplex.Table{tCustomers},
			SetReplicaIdentity: true, StatusInterval: 100 * time.Millisecond, Logger: logger,
		})
		require.NoError(t, err)
		t.Cleanup(src.Close)
		require.NoError(t, src.Setup(ctx, false)) // the slot: changes from here on are captured
		app, err := applypg.New(ctx, db.Pool, applypg.Config{Sync: syncName, Target: name, Logger: logger})
		require.NoError(t, err)
		t.Cleanup(func() { _ = app.DropOrigins(context.Background()) })
		return duplex.Endpoint{Name: name, Source: src, Applier: app}
	}
	epA, epB := endpoint("a", a), endpoint("b", b)
	// Both sides change email since they last agreed: a conflict each way.
	_, err = a.Pool.Exec(ctx, `UPDATE customers SET email = 'ann@crm.example' WHERE id = 1`)
	require.NoError(t, err)
	_, err = b.Pool.Exec(ctx, `UPDATE customers SET email = 'ann@billing.example' WHERE id = 1`)
	require.NoError(t, err)

	s, err := duplex.NewSync(&duplex.SyncConfig{
		Name: syncName, A: epA, B: epB,
		Resolver: duplex.Chain(resolve.DeadLetterAll()), DeadLetters: store, Logger: logger,
		Options: duplex.Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
	})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("sync did not stop within 30s")
		}
	})

	// Wait for both directions to have held the row: one entry, put twice.
	var entry dlq.Entry
	deadline := time.Now().Add(90 * time.Second)
	for {
		es, total, err := store.List(ctx, dlq.Filter{})
		require.NoError(t, err)
		require.LessOrEqual(t, total, 1, "one entry per held row")
		if len(es) == 1 && es[0].Count >= 2 {
			entry = es[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("conflict not held by both directions within 90s: %d entries", len(es))
		}
		select {
		case err := <-done:
			t.Fatalf("sync stopped: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	require.Equal(t, dlq.StatusPending, entry.Status)
	require.Equal(t, duplex.UpdateUpdate, entry.Conflict.Kind)
	require.Equal(t, []string{"email"}, entry.Conflict.Fields)
	require.Equal(t, "(1,\"Ann Lee\",ann@billing.example)", readRow(b), "the target row stays as it is")

	h, err := dlq.NewAdmin(dlq.AdminConfig{Store: store, Actions: dlq.SyncActions(s), Auth: dlq.NoAuth, Logger: logger})
	require.NoError(t, err)
	list := serveAdmin(t, h)
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(list)))
	click(t, bctx, fmt.Sprintf("#entry-%d a", entry.ID), "#conflict")
	// The three-way view: base, a, b; the held field marked, both sides'
	// values changed from the base.
	header := text(t, bctx, "#conflict thead")
	require.Contains(t, strings.ToLower(header), "base (agreed)")
	held := text(t, bctx, "#conflict tr.conflict")
	require.Contains(t, held, "email")
	require.Contains(t, held, "ann@old.example", "the agreed row")
	require.Contains(t, held, "ann@crm.example")
	require.Contains(t, held, "ann@billing.example")
	changed, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#conflict tr.conflict td.changed").length`))
	require.NoError(t, err)
	require.Equal(t, 2, changed, "both sides changed the held field")
	require.Equal(t, "dead_letter_all", text(t, bctx, "#held-by"))
	require.Contains(t, text(t, bctx, "#count"), "2")

	// Bulk resolve by filter from the list: the held field, side a wins.
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(list+"?field=email&table=public.customers")))
	require.NoError(t, chromedp.Do(bctx,
		chromedp.WaitVisible(chromedp.CSS("#bulk")),
		chromedp.SetValue(chromedp.CSS("#bulk-action"), "resolve"),
		chromedp.SetValue(chromedp.CSS("#bulk-winner"), "a"),
	))
	click(t, bctx, "#bulk-dry-run", "#flash")
	require.Equal(t, "dry run: 1 pending entries match; resolve for a would act on them", text(t, bctx, "#flash"))
	require.Equal(t, "(1,\"Ann Lee\",ann@billing.example)", readRow(b), "a dry run changes nothing")
	require.NoError(t, chromedp.Do(bctx,
		chromedp.SetValue(chromedp.CSS("#bulk-action"), "resolve"),
		chromedp.SetValue(chromedp.CSS("#bulk-winner"), "a"),
	))
	click(t, bctx, "#bulk-run", "#flash")
	require.Equal(t, "bulk resolve for a: 1 of 1 pending entries done, 0 failed", text(t, bctx, "#flash"))

	require.Equal(t, readRow(a), readRow(b), "b holds a's version")
	require.Equal(t, "(1,\"Ann Lee\",ann@crm.example)", readRow(b))
	got, err := store.Get(ctx, entry.ID)
	require.NoError(t, err)
	require.Equal(t, dlq.StatusResolved, got.Status)
	require.Equal(t, "winner=a", got.Resolution)
	depth, err := store.Depth(ctx)
	require.NoError(t, err)
	require.Empty(t, depth, "nothing pending")
}
