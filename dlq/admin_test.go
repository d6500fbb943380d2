package dlq_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/dlq/dlqpg"
	"github.com/duplexsync/duplex/internal/testenv"
)

// sink is a queue as the admin handler and the Pipeline see it.
type sink interface {
	duplex.DeadLetterSink
	dlq.Store
}

// fakeSync stands in for a running duplex.Sync: it records the actions and
// answers what the test set. The stores are real.
type fakeSync struct {
	sink sink // where a retry that fails again is put, as the Pipeline does

	mu          sync.Mutex
	retries     []int64
	resolves    []string // "<id>:<winner>"
	retryRes    duplex.ActionResult
	retryErr    error
	resolveRes  duplex.ActionResult
	resolveErr  error
	deadLetter  bool          // Retry puts the change again and answers dead_lettered
	retryGate   chan struct{} // when set, Retry waits for it
	retryCalled chan struct{} // when set, Retry signals it
}

func newFakeSync(s sink) *fakeSync {
	return &fakeSync{
		sink:       s,
		retryRes:   duplex.ActionResult{Outcome: "applied"},
		resolveRes: duplex.ActionResult{Outcome: "applied", Detail: "1 row copied"},
	}
}

func (f *fakeSync) Retry(ctx context.Context, e *dlq.Entry) (duplex.ActionResult, error) {
	f.mu.Lock()
	f.retries = append(f.retries, e.ID)
	res, err, again, gate, called := f.retryRes, f.retryErr, f.deadLetter, f.retryGate, f.retryCalled
	f.mu.Unlock()
	if called != nil {
		called <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	if again {
		dl := e.DeadLetter
		dl.Error = "failed again"
		dl.Attempts++
		dl.At = time.Time{}
		if err := f.sink.Put(ctx, &dl); err != nil {
			return duplex.ActionResult{}, err
		}
		return duplex.ActionResult{Outcome: "dead_lettered", Detail: "failed again"}, nil
	}
	return res, err
}

func (f *fakeSync) Resolve(_ context.Context, e *dlq.Entry, winner string) (duplex.ActionResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolves = append(f.resolves, fmt.Sprintf("%d:%s", e.ID, winner))
	return f.resolveRes, f.resolveErr
}

func (f *fakeSync) calls() (retries []int64, resolves []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.retries...), append([]string(nil), f.resolves...)
}

var (
	tCustomers = duplex.Table{Schema: "public", Name: "customers"}
	tOrders    = duplex.Table{Schema: "sales", Name: "orders"}
	t0         = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
)

// deadLetter returns a dead letter for key id=n of table, travelling dir.
func deadLetter(n int, dir duplex.Direction, table duplex.Table, reason duplex.Reason) *duplex.DeadLetter {
	return &duplex.DeadLetter{
		Sync:      "s",
		Direction: dir,
		Change: duplex.Change{
			ID:     fmt.Sprintf("c%d-%s-%s", n, dir, table),
			Source: dir.From,
			Table:  table,
			Key:    duplex.Key{{Name: "id", Value: int64(n)}},
			Op:     duplex.OpUpdate,
			Before: duplex.Values{"id": int64(n), "email": "old@example.com"},
			After:  duplex.Values{"id": int64(n), "email": fmt.Sprintf("n%d@example.com", n)},
		},
		Reason:   reason,
		Error:    fmt.Sprintf("error for row %d", n),
		Attempts: 1,
		At:       t0.Add(time.Duration(n) * time.Second),
	}
}

var (
	ab = duplex.Direction{From: "a", To: "b"}
	ba = ab.Reverse()
)

// put stores l and returns its entry's ID.
func put(t *testing.T, s sink, l *duplex.DeadLetter) int64 {
	t.Helper()
	require.NoError(t, s.Put(t.Context(), l))
	es, _, err := s.List(t.Context(), dlq.Filter{Limit: 1})
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.Equal(t, l.Change.ID, es[0].Change.ID)
	return es[0].ID
}

func getEntry(t *testing.T, s sink, id int64) dlq.Entry {
	t.Helper()
	e, err := s.Get(t.Context(), id)
	require.NoError(t, err)
	return e
}

func newAdmin(t *testing.T, cfg dlq.AdminConfig) http.Handler {
	t.Helper()
	if cfg.Auth == nil {
		cfg.Auth = dlq.NoAuth
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := dlq.NewAdmin(cfg)
	require.NoError(t, err)
	return h
}

// request serves one request on h. body, when not nil, is sent as a form.
func request(t *testing.T, h http.Handler, method, target string, body url.Values, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(body.Encode())
	}
	req := httptest.NewRequestWithContext(t.Context(), method, target, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	require.Equal(t, "application/json; charset=utf-8", rec.Header().Get("Content-Type"), rec.Body.String())
	var v T
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v), rec.Body.String())
	return v
}

type listReply struct {
	Entries []dlq.Entry `json:"entries"`
	Total   int         `json:"total"`
}

type actionReply struct {
	Entry   dlq.Entry            `json:"entry"`
	Result  *duplex.ActionResult `json:"result"`
	Message string               `json:"message"`
}

type errorReply struct {
	Error string `json:"error"`
}

// requireError checks an error answer: its status and a part of its message.
func requireError(t *testing.T, rec *httptest.ResponseRecorder, status int, contains string) {
	t.Helper()
	require.Equal(t, status, rec.Code, rec.Body.String())
	e := decode[errorReply](t, rec)
	require.Contains(t, e.Error, contains)
}

func ids(es []dlq.Entry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// storeKinds are the stores every admin test runs against.
func storeKinds(t *testing.T) []struct {
	name string
	new  func(t *testing.T) sink
} {
	db := testenv.Postgres(t)
	return []struct {
		name string
		new  func(t *testing.T) sink
	}{
		{"Memory", func(t *testing.T) sink { return dlq.NewMemory(dlq.MemoryConfig{}) }},
		{"dlqpg", func(t *testing.T) sink {
			s, err := dlqpg.New(t.Context(), db.Pool, dlqpg.Config{Schema: testenv.UniqueName(t, "dlq")})
			require.NoError(t, err)
			return s
		}},
	}
}

func TestAdmin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		run  func(t *testing.T, s sink)
	}{
		{"ListFiltersAndPaging", testListFiltersAndPaging},
		{"ListBadParameters", testListBadParameters},
		{"Get", testGet},
		{"RetryApplied", testRetryApplied},
		{"RetryDeadLetteredAgain", testRetryDeadLetteredAgain},
		{"RetryFails", testRetryFails},
		{"RetryConcurrentClicks", testRetryConcurrentClicks},
		{"RetryInRowOrder", testRetryInRowOrder},
		{"Dismiss", testDismiss},
		{"Resolve", testResolve},
		{"ResolveSideNames", testResolveSideNames},
		{"ResolveNewerData", testResolveNewerData},
		{"NoActions", testNoActions},
		{"BasicAuth", testBasicAuth},
		{"CrossOrigin", testCrossOrigin},
		{"HTMLEscapesValues", testHTMLEscapes},
		{"HTMLListPagingAndDepth", testHTMLListPaging},
		{"HTMLDetailConflict", testHTMLDetailConflict},
		{"HTMLActionsRedirect", testHTMLActionsRedirect},
		{"HTMLNotFound", testHTMLNotFound},
		{"Bulk", testBulk},
		{"BulkHTML", testBulkHTML},
		{"ListFieldAndAge", testListFieldAndAge},
		{"MountedAtRoot", func(t *testing.T, s sink) { testMount(t, s, "") }},
		{"MountedUnderPrefix", func(t *testing.T, s sink) { testMount(t, s, "/ops/dlq-admin") }},
	}
	for _, kind := range storeKinds(t) {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					tt.run(t, kind.new(t))
				})
			}
		})
	}
}

func testListFiltersAndPaging(t *testing.T, s sink) {
	e1 := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonConflict))
	e2 := put(t, s, deadLetter(2, ab, tOrders, duplex.ReasonPermanentError))
	e3 := put(t, s, deadLetter(3, ba, tCustomers, duplex.ReasonPermanentError))
	e4 := put(t, s, deadLetter(4, ba, tOrders, duplex.ReasonRetriesExhausted))
	e5 := put(t, s, deadLetter(5, ab, tCustomers, duplex.ReasonPermanentError))
	_, err := s.SetStatus(t.Context(), e5, nil, dlq.StatusDismissed, "x", "dismissed")
	require.NoError(t, err)
	h := newAdmin(t, dlq.AdminConfig{Store: s})

	list := func(query string) listReply {
		t.Helper()
		rec := request(t, h, "GET", "/dlq"+query, nil)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		return decode[listReply](t, rec)
	}
	all := list("")
	require.Equal(t, 5, all.Total)
	require.Equal(t, []int64{e5, e4, e3, e2, e1}, ids(all.Entries), "newest first")
	require.Equal(t, "public.customers", all.Entries[0].Change.Table.String())
	require.Equal(t, dlq.StatusDismissed, all.Entries[0].Status)

	for query, want := range map[string][]int64{
		"?direction=a_to_b":                        {e5, e2, e1},
		"?direction=b_to_a&table=sales.orders":     {e4},
		"?table=public.customers":                  {e5, e3, e1},
		"?reason=permanent_error":                  {e5, e3, e2},
		"?reason=permanent_error&status=pending":   {e3, e2},
		"?status=dismissed":                        {e5},
		"?key=id%3D3":                              {e3},
		"?sync=s&direction=a_to_b&reason=conflict": {e1},
		"?sync=other":                              {},
		"?status=resolved":                         {},
	} {
		got := list(query)
		require.Equal(t, want, ids(got.Entries), query)
		require.Equal(t, len(want), got.Total, query)
	}

	page := list("?limit=2&offset=2")
	require.Equal(t, []int64{e3, e2}, ids(page.Entries))
	require.Equal(t, 5, page.Total, "total ignores paging")
	page = list("?limit=2&after=" + strconv.FormatInt(e3, 10))
	require.Equal(t, []int64{e2, e1}, ids(page.Entries), "keyset: after the last ID of a page")
	require.Empty(t, list("?offset=10").Entries)
}

func testListBadParameters(t *testing.T, s sink) {
	h := newAdmin(t, dlq.AdminConfig{Store: s})
	for query, param := range map[string]string{
		"?limit=x":      "limit",
		"?limit=0":      "limit",
		"?limit=100000": "limit",
		"?offset=-1":    "offset",
		"?offset=1.5":   "offset",
		"?after=abc":    "after",
		"?status=stuck": "status",
	} {
		rec := request(t, h, "GET", "/dlq"+query, nil)
		requireError(t, rec, http.StatusBadRequest, "parameter "+param)
	}
}

func testGet(t *testing.T, s sink) {
	dl := deadLetter(7, ab, tCustomers, duplex.ReasonConflict)
	dl.Conflict = &duplex.ConflictInfo{
		Kind: duplex.UpdateUpdate, Fields: []string{"email"},
		Source: duplex.Values{"id": int64(7), "email": "a@example.com"},
		Target: duplex.Values{"id": int64(7), "email": "b@example.com"},
	}
	id := put(t, s, dl)
	h := newAdmin(t, dlq.AdminConfig{Store: s})

	rec := request(t, h, "GET", "/dlq/"+strconv.FormatInt(id, 10), nil)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	// The public contract: the Entry's JSON field names.
	var raw map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &raw))
	for _, f := range []string{"id", "sync", "direction", "change", "reason", "error", "attempts", "conflict", "first_seen", "last_seen", "count", "status", "updated_at",
		"table", "key", "three_way"} {
		require.Contains(t, raw, f)
	}
	require.Equal(t, "public.customers", raw["table"])
	require.Equal(t, "id=7", raw["key"])
	require.Contains(t, raw["change"], "table", "the nested change keeps its table")
	tw := raw["three_way"].(map[string]any)
	require.Equal(t, []any{"a", "b"}, tw["sides"])
	fields := tw["fields"].([]any)
	require.Len(t, fields, 2)
	email := fields[1].(map[string]any)
	require.Equal(t, "email", email["name"])
	require.Equal(t, []any{"a@example.com", "b@example.com"}, email["values"])
	require.Equal(t, true, email["differs"])
	require.Equal(t, true, email["held"])
	e := decode[dlq.Entry](t, rec)
	require.Equal(t, id, e.ID)
	require.Equal(t, ab, e.Direction)
	require.Equal(t, "id=7", e.Key())
	require.Equal(t, dlq.StatusPending, e.Status)
	require.Equal(t, []string{"email"}, e.Conflict.Fields)

	requireError(t, request(t, h, "GET", "/dlq/9999", nil), http.StatusNotFound, "dlq: entry 9999 not found")
	requireError(t, request(t, h, "GET", "/dlq/abc", nil), http.StatusBadRequest, `entry id "abc"`)
	requireError(t, request(t, h, "GET", "/dlq/0", nil), http.StatusBadRequest, "entry id")
	requireError(t, request(t, h, "POST", "/dlq/9999/dismiss", nil), http.StatusNotFound, "dlq: entry 9999 not found")
	requireError(t, request(t, h, "POST", "/dlq/1/explode", nil), http.StatusNotFound, `unknown action "explode"`)
	rec = request(t, h, "DELETE", "/dlq/1", nil)
	require.Equal(t, http.StatusNotFound, rec.Code, "nothing is ever deleted")
}

func post(t *testing.T, h http.Handler, target string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	return request(t, h, "POST", target, nil, header...)
}

func testRetryApplied(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonPermanentError))
	fs := newFakeSync(s)
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: fs})
	target := fmt.Sprintf("/dlq/%d/retry", id)

	rec := post(t, h, target)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	rep := decode[actionReply](t, rec)
	require.NotNil(t, rep.Result)
	require.Equal(t, duplex.OutcomeApplied, rep.Result.Outcome)
	require.Equal(t, dlq.StatusResolved, rep.Entry.Status)
	require.Equal(t, "retry: applied", rep.Entry.Resolution)
	require.Equal(t, "admin", rep.Entry.ResolvedBy)
	require.Equal(t, rep.Entry.Status, getEntry(t, s, id).Status, "stored")

	// Clicked again: the entry as it is, and no second retry.
	rec = post(t, h, target)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	rep = decode[actionReply](t, rec)
	require.Nil(t, rep.Result)
	require.Equal(t, dlq.StatusResolved, rep.Entry.Status)
	require.Contains(t, rep.Message, "already resolved")
	retries, _ := fs.calls()
	require.Equal(t, []int64{id}, retries)

	// Every outcome that means "through" resolves the entry.
	for _, outcome := range []duplex.Outcome{"merged", "kept_target", "already_applied", "unchanged"} {
		id := put(t, s, deadLetter(10+len(outcome), ab, tOrders, duplex.ReasonConflict))
		fs.mu.Lock()
		fs.retryRes = duplex.ActionResult{Outcome: outcome}
		fs.mu.Unlock()
		rep := decode[actionReply](t, post(t, h, fmt.Sprintf("/dlq/%d/retry", id)))
		require.Equal(t, dlq.StatusResolved, rep.Entry.Status, outcome)
		require.Equal(t, "retry: "+string(outcome), rep.Entry.Resolution)
	}

	// A dismissed entry is not retried.
	id = put(t, s, deadLetter(30, ba, tOrders, duplex.ReasonConflict))
	require.Equal(t, http.StatusOK, post(t, h, fmt.Sprintf("/dlq/%d/dismiss", id)).Code)
	requireError(t, post(t, h, fmt.Sprintf("/dlq/%d/retry", id)), http.StatusConflict, "is dismissed")
	retries, _ = fs.calls()
	require.NotContains(t, retries, id)
}

func testRetryDeadLetteredAgain(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonPermanentError))
	fs := newFakeSync(s)
	fs.deadLetter = true
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: fs})

	rec := post(t, h, fmt.Sprintf("/dlq/%d/retry", id))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	rep := decode[actionReply](t, rec)
	require.Equal(t, duplex.OutcomeDeadLettered, rep.Result.Outcome)
	require.Equal(t, dlq.StatusPending, rep.Entry.Status, "the sync's Put reopened it")
	require.Equal(t, 2, rep.Entry.Count)
	require.Equal(t, "failed again", rep.Entry.Error)
	require.Contains(t, rep.Message, "pending again")

	// Pending again, so it can be retried again.
	fs.mu.Lock()
	fs.deadLetter = false
	fs.mu.Unlock()
	rep = decode[actionReply](t, post(t, h, fmt.Sprintf("/dlq/%d/retry", id)))
	require.Equal(t, dlq.StatusResolved, rep.Entry.Status)
	retries, _ := fs.calls()
	require.Equal(t, []int64{id, id}, retries)
}

func testRetryFails(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonPermanentError))
	fs := newFakeSync(s)
	fs.retryErr = errors.New("connection refused")
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: fs})

	rec := post(t, h, fmt.Sprintf("/dlq/%d/retry", id))
	requireError(t, rec, http.StatusBadGateway, "connection refused")
	e := decode[errorReply](t, rec)
	require.Contains(t, e.Error, fmt.Sprintf("entry %d", id))
	require.Contains(t, e.Error, "public.customers")
	got := getEntry(t, s, id)
	require.Equal(t, dlq.StatusPending, got.Status, "back to pending")
	require.Equal(t, "retry failed: connection refused", got.Resolution)

	fs.mu.Lock()
	fs.retryErr = fmt.Errorf("sync stopped: %w", duplex.ErrNotRunning)
	fs.mu.Unlock()
	requireError(t, post(t, h, fmt.Sprintf("/dlq/%d/retry", id)), http.StatusConflict, "sync stopped")
	require.Equal(t, dlq.StatusPending, getEntry(t, s, id).Status)
}

func testRetryConcurrentClicks(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonPermanentError))
	fs := newFakeSync(s)
	fs.retryGate = make(chan struct{})
	fs.retryCalled = make(chan struct{}, 16)
	// Every click reads the entry as pending, as if all of them read it
	// before the first one claimed it: only the claim's compare-and-set
	// tells them apart.
	h := newAdmin(t, dlq.AdminConfig{Store: stalePending{s}, Actions: fs})

	const clicks = 8
	codes := make(chan int, clicks)
	var wg sync.WaitGroup
	for range clicks {
		wg.Go(func() { codes <- post(t, h, fmt.Sprintf("/dlq/%d/retry", id)).Code })
	}
	// One click gets through to Retry and waits there; the others find the
	// entry taken and answer at once.
	<-fs.retryCalled
	deadline := time.After(30 * time.Second)
	for range clicks - 1 {
		select {
		case code := <-codes:
			require.Equal(t, http.StatusOK, code)
		case <-deadline:
			close(fs.retryGate)
			wg.Wait()
			retries, _ := fs.calls()
			t.Fatalf("the other clicks did not answer while the first one was retrying: Retry called %d times", len(retries))
		}
	}
	close(fs.retryGate)
	wg.Wait()
	require.Equal(t, http.StatusOK, <-codes)
	retries, _ := fs.calls()
	require.Equal(t, []int64{id}, retries, "one retry for many clicks")
	require.Equal(t, dlq.StatusResolved, getEntry(t, s, id).Status)
}

// stalePending is a store whose Get always reports an entry as pending.
type stalePending struct{ sink }

func (s stalePending) Get(ctx context.Context, id int64) (dlq.Entry, error) {
	e, err := s.sink.Get(ctx, id)
	e.Status = dlq.StatusPending
	return e, err
}

func testDismiss(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonPermanentError))
	h := newAdmin(t, dlq.AdminConfig{Store: s, Who: func(*http.Request) string { return "oncall" }})
	target := fmt.Sprintf("/dlq/%d/dismiss", id)

	rec := post(t, h, target)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	rep := decode[actionReply](t, rec)
	require.Nil(t, rep.Result)
	require.Equal(t, dlq.StatusDismissed, rep.Entry.Status)
	require.Equal(t, "oncall", rep.Entry.ResolvedBy)
	require.Equal(t, "dismissed", rep.Entry.Resolution)
	first := getEntry(t, s, id)

	rec = post(t, h, target)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	rep = decode[actionReply](t, rec)
	require.Contains(t, rep.Message, "already dismissed")
	require.True(t, first.UpdatedAt.Equal(getEntry(t, s, id).UpdatedAt), "unchanged")

	// Still there: nothing is deleted.
	list := decode[listReply](t, request(t, h, "GET", "/dlq", nil))
	require.Equal(t, 1, list.Total)

	// Retried entries can be dismissed; resolved ones cannot.
	retried := put(t, s, deadLetter(2, ab, tCustomers, duplex.ReasonPermanentError))
	_, err := s.SetStatus(t.Context(), retried, nil, dlq.StatusRetried, "x", "retry")
	require.NoError(t, err)
	require.Equal(t, dlq.StatusDismissed, decode[actionReply](t, post(t, h, fmt.Sprintf("/dlq/%d/dismiss", retried))).Entry.Status)

	resolved := put(t, s, deadLetter(3, ab, tCustomers, duplex.ReasonPermanentError))
	_, err = s.SetStatus(t.Context(), resolved, nil, dlq.StatusResolved, "x", "winner=a")
	require.NoError(t, err)
	requireError(t, post(t, h, fmt.Sprintf("/dlq/%d/dismiss", resolved)), http.StatusConflict, "is resolved")
	require.Equal(t, dlq.StatusResolved, getEntry(t, s, resolved).Status)
}

func testResolve(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonConflict))
	fs := newFakeSync(s)
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: fs})
	target := fmt.Sprintf("/dlq/%d/resolve", id)

	requireError(t, post(t, h, target), http.StatusBadRequest, "winner")
	requireError(t, post(t, h, target+"?winner=c"), http.StatusBadRequest, `winner: unknown side "c"`)
	_, resolves := fs.calls()
	require.Empty(t, resolves, "nothing called on a bad request")
	require.Equal(t, dlq.StatusPending, getEntry(t, s, id).Status)

	rec := post(t, h, target+"?winner=a")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	rep := decode[actionReply](t, rec)
	require.Equal(t, duplex.OutcomeApplied, rep.Result.Outcome)
	require.Equal(t, dlq.StatusResolved, rep.Entry.Status)
	require.Equal(t, "winner=a", rep.Entry.Resolution)

	// Clicked again (even for the other side): unchanged, no second call.
	rec = post(t, h, target+"?winner=b")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	rep = decode[actionReply](t, rec)
	require.Nil(t, rep.Result)
	require.Equal(t, "winner=a", rep.Entry.Resolution)
	_, resolves = fs.calls()
	require.Equal(t, []string{fmt.Sprintf("%d:a", id)}, resolves)

	// The winner as a form field.
	id2 := put(t, s, deadLetter(2, ba, tCustomers, duplex.ReasonConflict))
	rec = request(t, h, "POST", fmt.Sprintf("/dlq/%d/resolve", id2), url.Values{"winner": {"b"}})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, "winner=b", decode[actionReply](t, rec).Entry.Resolution)

	// Only pending entries are resolved.
	id3 := put(t, s, deadLetter(3, ba, tCustomers, duplex.ReasonConflict))
	require.Equal(t, http.StatusOK, post(t, h, fmt.Sprintf("/dlq/%d/dismiss", id3)).Code)
	requireError(t, post(t, h, fmt.Sprintf("/dlq/%d/resolve?winner=a", id3)), http.StatusConflict, "is dismissed")
	_, resolves = fs.calls()
	require.Len(t, resolves, 2)
}

func testResolveSideNames(t *testing.T, s sink) {
	crmToBilling := duplex.Direction{From: "crm", To: "billing"}
	id := put(t, s, deadLetter(1, crmToBilling, tCustomers, duplex.ReasonConflict))
	id2 := put(t, s, deadLetter(2, crmToBilling, tCustomers, duplex.ReasonConflict))
	fs := newFakeSync(s)
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: fs, Sides: [2]string{"crm", "billing"}})

	rep := decode[actionReply](t, post(t, h, fmt.Sprintf("/dlq/%d/resolve?winner=billing", id)))
	require.Equal(t, "winner=billing", rep.Entry.Resolution)
	rep = decode[actionReply](t, post(t, h, fmt.Sprintf("/dlq/%d/resolve?winner=a", id2)))
	require.Equal(t, "winner=crm", rep.Entry.Resolution, `"a" is the first side`)
	_, resolves := fs.calls()
	require.Equal(t, []string{fmt.Sprintf("%d:billing", id), fmt.Sprintf("%d:crm", id2)}, resolves)
	requireError(t, post(t, h, fmt.Sprintf("/dlq/%d/resolve?winner=erp", id2)), http.StatusBadRequest, `"crm" or "billing"`)

	_, err := dlq.NewAdmin(dlq.AdminConfig{Store: s, Auth: dlq.NoAuth, Sides: [2]string{"crm", "crm"}})
	require.ErrorContains(t, err, "Sides")
}

func testResolveNewerData(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonConflict))
	fs := newFakeSync(s)
	fs.resolveErr = fmt.Errorf("b public.customers id=1 changed after the entry was recorded: %w", duplex.ErrNewerData)
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: fs})

	requireError(t, post(t, h, fmt.Sprintf("/dlq/%d/resolve?winner=a", id)), http.StatusConflict, "changed after the entry was recorded")
	e := getEntry(t, s, id)
	require.Equal(t, dlq.StatusPending, e.Status, "left pending")
	require.Empty(t, e.Resolution)

	fs.mu.Lock()
	fs.resolveErr = errors.New("permission denied for table customers")
	fs.mu.Unlock()
	requireError(t, post(t, h, fmt.Sprintf("/dlq/%d/resolve?winner=a", id)), http.StatusBadGateway, "permission denied")
	require.Equal(t, dlq.StatusPending, getEntry(t, s, id).Status)
}

func testNoActions(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonConflict))
	h := newAdmin(t, dlq.AdminConfig{Store: s})
	requireError(t, post(t, h, fmt.Sprintf("/dlq/%d/retry", id)), http.StatusNotImplemented, "AdminConfig.Actions")
	requireError(t, post(t, h, fmt.Sprintf("/dlq/%d/resolve?winner=a", id)), http.StatusNotImplemented, "AdminConfig.Actions")
	require.Equal(t, dlq.StatusPending, getEntry(t, s, id).Status)
	require.Equal(t, http.StatusOK, post(t, h, fmt.Sprintf("/dlq/%d/dismiss", id)).Code, "dismiss needs no Actions")

	body := request(t, h, "GET", fmt.Sprintf("/entries/%d", id), nil).Body.String()
	require.Regexp(t, `id="retry" disabled`, body)
}

func testBasicAuth(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonConflict))
	h := newAdmin(t, dlq.AdminConfig{Store: s, Auth: dlq.BasicAuth("ops", "s3cret")})

	for _, target := range []string{"/dlq", "/", fmt.Sprintf("/entries/%d", id)} {
		rec := request(t, h, "GET", target, nil)
		require.Equal(t, http.StatusUnauthorized, rec.Code, target)
		require.Contains(t, rec.Header().Get("WWW-Authenticate"), "Basic")
	}
	auth := func(u, p string) string {
		req := httptest.NewRequest("GET", "/", nil)
		req.SetBasicAuth(u, p)
		return req.Header.Get("Authorization")
	}
	require.Equal(t, http.StatusUnauthorized, request(t, h, "GET", "/dlq", nil, "Authorization", auth("ops", "wrong")).Code)
	require.Equal(t, http.StatusUnauthorized, request(t, h, "GET", "/dlq", nil, "Authorization", auth("root", "s3cret")).Code)
	require.Equal(t, http.StatusUnauthorized, post(t, h, fmt.Sprintf("/dlq/%d/dismiss", id)).Code)
	require.Equal(t, dlq.StatusPending, getEntry(t, s, id).Status)

	require.Equal(t, http.StatusOK, request(t, h, "GET", "/dlq", nil, "Authorization", auth("ops", "s3cret")).Code)
	rec := post(t, h, fmt.Sprintf("/dlq/%d/dismiss", id), "Authorization", auth("ops", "s3cret"))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, "ops", decode[actionReply](t, rec).Entry.ResolvedBy, "who: the basic-auth user")

	// Empty credentials configured: nobody gets in.
	closed := newAdmin(t, dlq.AdminConfig{Store: s, Auth: dlq.BasicAuth("", "")})
	require.Equal(t, http.StatusUnauthorized, request(t, closed, "GET", "/dlq", nil, "Authorization", auth("", "")).Code)
}

func TestNewAdminConfig(t *testing.T) {
	t.Parallel()
	s := dlq.NewMemory(dlq.MemoryConfig{})
	_, err := dlq.NewAdmin(dlq.AdminConfig{Store: s})
	require.Error(t, err)
	require.Contains(t, err.Error(), "AdminConfig.Auth")
	require.Contains(t, err.Error(), "dlq.NoAuth")
	var ce *duplex.ConfigError
	require.ErrorAs(t, err, &ce)

	_, err = dlq.NewAdmin(dlq.AdminConfig{Auth: dlq.NoAuth})
	require.ErrorContains(t, err, "AdminConfig.Store")

	_, err = dlq.NewAdmin(dlq.AdminConfig{Store: s, Auth: dlq.NoAuth, TrustedOrigins: []string{"not a url"}})
	require.ErrorContains(t, err, "TrustedOrigins")

	h, err := dlq.NewAdmin(dlq.AdminConfig{Store: s, Auth: dlq.NoAuth})
	require.NoError(t, err)
	require.NotNil(t, h)
}

func testCrossOrigin(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonConflict))
	fs := newFakeSync(s)
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: fs})

	for _, target := range []string{fmt.Sprintf("/dlq/%d/dismiss", id), fmt.Sprintf("/entries/%d/dismiss", id), fmt.Sprintf("/dlq/%d/resolve?winner=a", id)} {
		rec := post(t, h, target, "Sec-Fetch-Site", "cross-site")
		require.Equal(t, http.StatusForbidden, rec.Code, target)
		require.Contains(t, rec.Body.String(), "cross-origin")
		rec = post(t, h, target, "Host", "dlq.example.com", "Origin", "https://evil.example.net")
		require.Equal(t, http.StatusForbidden, rec.Code, target)
	}
	require.Equal(t, dlq.StatusPending, getEntry(t, s, id).Status)
	_, resolves := fs.calls()
	require.Empty(t, resolves)

	// Reading cross-origin is allowed (the browser keeps the answer from
	// the other site); same-origin posts work.
	require.Equal(t, http.StatusOK, request(t, h, "GET", "/dlq", nil, "Sec-Fetch-Site", "cross-site").Code)
	rec := post(t, h, fmt.Sprintf("/dlq/%d/dismiss", id), "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	id2 := put(t, s, deadLetter(2, ab, tCustomers, duplex.ReasonConflict))
	rec = post(t, h, fmt.Sprintf("/dlq/%d/dismiss", id2), "Host", "dlq.example.com", "Origin", "https://dlq.example.com")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())

	// A trusted origin (a proxy in front) is let through.
	trusting := newAdmin(t, dlq.AdminConfig{Store: s, TrustedOrigins: []string{"https://ops.example.com"}})
	id3 := put(t, s, deadLetter(3, ab, tCustomers, duplex.ReasonConflict))
	rec = post(t, trusting, fmt.Sprintf("/dlq/%d/dismiss", id3), "Host", "internal:8080", "Origin", "https://ops.example.com")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
}

func testHTMLEscapes(t *testing.T, s sink) {
	const evil = `<script>alert(1)</script>`
	dl := deadLetter(1, ab, tCustomers, duplex.ReasonConflict)
	dl.Change.After["note"] = evil
	dl.Change.Key = duplex.Key{{Name: "id", Value: evil}}
	dl.Error = "constraint " + evil + " violated"
	dl.Conflict = &duplex.ConflictInfo{
		Kind: duplex.UpdateUpdate, Fields: []string{"note"},
		Source: duplex.Values{"note": evil}, Target: duplex.Values{"note": "<b>bold</b>"},
	}
	id := put(t, s, dl)
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: newFakeSync(s)})

	for _, target := range []string{"/", fmt.Sprintf("/entries/%d", id), fmt.Sprintf("/entries/%d?flash=%s", id, url.QueryEscape(evil))} {
		rec := request(t, h, "GET", target, nil)
		require.Equal(t, http.StatusOK, rec.Code, target)
		require.Equal(t, "text/html; charset=utf-8", rec.Header().Get("Content-Type"))
		body := rec.Body.String()
		require.Contains(t, body, "&lt;script&gt;alert(1)&lt;/script&gt;", target)
		require.NotContains(t, body, "<script>alert", target)
		require.NotContains(t, body, "<b>bold", target)
		require.NotContains(t, body, "<script", target, "no script at all")
	}

	// Headers.
	rec := request(t, h, "GET", "/", nil)
	csp := rec.Header().Get("Content-Security-Policy")
	require.Contains(t, csp, "default-src 'none'")
	require.Contains(t, csp, "form-action 'self'")
	require.Contains(t, csp, "frame-ancestors 'none'")
	require.Equal(t, "nosniff", rec.Header().Get("X-Content-Type-Options"))
	require.Equal(t, "DENY", rec.Header().Get("X-Frame-Options"))
	m := regexp.MustCompile(`style-src 'nonce-([^']+)'`).FindStringSubmatch(csp)
	require.NotNil(t, m, csp)
	require.Contains(t, rec.Body.String(), `<style nonce="`+m[1]+`">`, "the page's style carries the nonce")
	require.NotEqual(t, csp, request(t, h, "GET", "/", nil).Header().Get("Content-Security-Policy"), "a fresh nonce per response")
	rec = request(t, h, "GET", "/dlq", nil)
	require.Equal(t, "nosniff", rec.Header().Get("X-Content-Type-Options"), "JSON too")
}

// hrefs returns the links and form actions of an HTML page.
func hrefs(body string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?:href|action)="([^"]*)"`).FindAllStringSubmatch(body, -1) {
		out = append(out, strings.ReplaceAll(m[1], "&amp;", "&"))
	}
	return out
}

// findLink returns the link of body whose text is text.
func findLink(t *testing.T, body, text string) string {
	t.Helper()
	m := regexp.MustCompile(`<a href="([^"]*)"[^>]*>` + regexp.QuoteMeta(text) + `</a>`).FindStringSubmatch(body)
	require.NotNil(t, m, "no link %q in\n%s", text, body)
	return strings.ReplaceAll(m[1], "&amp;", "&")
}

func resolveRef(t *testing.T, base, ref string) string {
	t.Helper()
	b, err := url.Parse(base)
	require.NoError(t, err)
	r, err := url.Parse(ref)
	require.NoError(t, err)
	return b.ResolveReference(r).RequestURI()
}

func entryRows(body string) int { return strings.Count(body, `<tr id="entry-`) }

func testHTMLListPaging(t *testing.T, s sink) {
	for i := range 60 {
		dir := ab
		if i%3 == 0 {
			dir = ba
		}
		put(t, s, deadLetter(i+1, dir, tCustomers, duplex.ReasonPermanentError))
	}
	put(t, s, deadLetter(100, ab, tOrders, duplex.ReasonConflict))
	h := newAdmin(t, dlq.AdminConfig{Store: s})

	rec := request(t, h, "GET", "/", nil)
	require.Equal(t, http.StatusOK, rec.Code)
	body := rec.Body.String()
	require.Contains(t, body, `<span class="big" id="pending">61</span>`)
	require.Contains(t, body, "<td>sales.orders</td><td>conflict</td>", "depth by table and reason")
	require.Equal(t, 50, entryRows(body))
	require.Contains(t, body, "1–50 of 61")
	require.NotContains(t, body, `rel="prev"`)
	next := findLink(t, body, "Next →")

	body = request(t, h, "GET", resolveRef(t, "/", next), nil).Body.String()
	require.Equal(t, 11, entryRows(body))
	require.Contains(t, body, "51–61 of 61")
	require.NotContains(t, body, `rel="next"`)
	prev := findLink(t, body, "← Prev")
	require.Equal(t, 50, entryRows(request(t, h, "GET", resolveRef(t, "/", prev), nil).Body.String()))

	// Filters narrow the list and survive paging; the depth links filter.
	body = request(t, h, "GET", "/?direction=b_to_a&status=pending&limit=5", nil).Body.String()
	require.Equal(t, 5, entryRows(body))
	require.Contains(t, body, "1–5 of 20")
	require.Contains(t, body, `<option value="b_to_a" selected>`)
	require.Contains(t, body, `<option value="pending" selected>`)
	next = findLink(t, body, "Next →")
	require.Contains(t, next, "direction=b_to_a")
	require.Contains(t, next, "offset=5")
	body = request(t, h, "GET", resolveRef(t, "/", next), nil).Body.String()
	require.Contains(t, body, "6–10 of 20")

	depthLink := findLink(t, request(t, h, "GET", "/", nil).Body.String(), "1")
	body = request(t, h, "GET", resolveRef(t, "/", depthLink), nil).Body.String()
	require.Equal(t, 1, entryRows(body), depthLink)
	require.Contains(t, body, "sales.orders")

	rec = request(t, h, "GET", "/?limit=zero", nil)
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Contains(t, rec.Body.String(), "parameter limit")
}

func testHTMLDetailConflict(t *testing.T, s sink) {
	dl := deadLetter(42, ab, tCustomers, duplex.ReasonConflict)
	dl.Conflict = &duplex.ConflictInfo{
		Kind: duplex.UpdateUpdate, Fields: []string{"email"}, DecidedBy: "lww",
		Source: duplex.Values{"id": int64(42), "email": "a@example.com", "name": "Ann", "vip": nil},
		Target: duplex.Values{"id": int64(42), "email": "b@example.com", "name": "Ann"},
		Base:   duplex.Values{"id": int64(42), "email": "old@example.com", "name": "Ann"},
	}
	id := put(t, s, dl)
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: newFakeSync(s), Sides: [2]string{"a", "b"}})

	rec := request(t, h, "GET", fmt.Sprintf("/entries/%d", id), nil)
	require.Equal(t, http.StatusOK, rec.Code)
	body := rec.Body.String()
	require.Regexp(t, `<tr class="conflict">\s*<td class="field mono">email</td>\s*<td class="mono">old@example.com</td>\s*<td class="mono changed">a@example.com</td>\s*<td class="mono changed">b@example.com</td>`, body)
	require.Regexp(t, `<tr class="">\s*<td class="field mono">name</td>`, body, "an agreed field is not highlighted")
	require.Regexp(t, `<tbody>\s*<tr class="">\s*<td class="field mono">id <span class="muted">\(key\)</span></td>`, body, "the key comes first")
	require.Regexp(t, `<tr class="differs">\s*<td class="field mono">vip</td>\s*<td class="mono absent">absent</td>\s*<td class="mono changed">NULL</td>\s*<td class="mono absent">absent</td>`, body)
	require.Regexp(t, `id="held-by">lww<`, body, "why it was held")
	require.Contains(t, body, "error for row 42", "the rule")
	require.Contains(t, body, "update_update, decided by lww")
	// The payload, indented.
	require.Contains(t, body, "\n  &#34;table&#34;: {\n    &#34;schema&#34;: &#34;public&#34;,")
	require.Contains(t, body, "error for row 42")
	require.Contains(t, body, `id="resolve-a"`)
	require.Contains(t, body, "Resolve: keep a")
	require.Contains(t, body, "Resolve: keep b")
	require.NotRegexp(t, `id="retry"[^>]*disabled`, body)
}

func testHTMLActionsRedirect(t *testing.T, s sink) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonConflict))
	fs := newFakeSync(s)
	fs.resolveErr = fmt.Errorf("row changed: %w", duplex.ErrNewerData)
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: fs, Sides: [2]string{"crm", "billing"}})
	page := fmt.Sprintf("/entries/%d", id)

	// A failure: back to the page, with the error.
	rec := request(t, h, "POST", page+"/resolve", url.Values{"winner": {"a"}}, "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusSeeOther, rec.Code, rec.Body.String())
	loc := resolveRef(t, page+"/resolve", rec.Header().Get("Location"))
	require.True(t, strings.HasPrefix(loc, page+"?"), loc)
	body := request(t, h, "GET", loc, nil).Body.String()
	require.Regexp(t, `<p class="flash error"[^>]*>[^<]*row changed`, body)
	require.Equal(t, dlq.StatusPending, getEntry(t, s, id).Status)

	// Success.
	fs.mu.Lock()
	fs.resolveErr = nil
	fs.mu.Unlock()
	rec = request(t, h, "POST", page+"/resolve", url.Values{"winner": {"b"}})
	require.Equal(t, http.StatusSeeOther, rec.Code)
	body = request(t, h, "GET", resolveRef(t, page+"/resolve", rec.Header().Get("Location")), nil).Body.String()
	require.Regexp(t, `<p class="flash"[^>]*>resolved entry \d+ for billing: applied`, body)
	require.Contains(t, body, `<dd id="resolution">winner=billing</dd>`)
	require.Regexp(t, `id="resolve-a"[^>]*disabled`, body, "nothing left to resolve")

	// A bad request still lands on the page with the reason.
	rec = request(t, h, "POST", page+"/resolve", url.Values{})
	require.Equal(t, http.StatusSeeOther, rec.Code)
	require.Contains(t, rec.Header().Get("Location"), "level=error")
	require.Contains(t, rec.Header().Get("Location"), "winner")
	// Unknown entry: a 404 page.
	require.Equal(t, http.StatusNotFound, request(t, h, "POST", "/entries/9999/dismiss", url.Values{}).Code)
}

func testHTMLNotFound(t *testing.T, s sink) {
	h := newAdmin(t, dlq.AdminConfig{Store: s})
	rec := request(t, h, "GET", "/entries/9999", nil)
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.Contains(t, rec.Body.String(), "dlq: entry 9999 not found")
	require.Contains(t, rec.Body.String(), `<a href="../">Back to the list</a>`)
	require.Equal(t, http.StatusBadRequest, request(t, h, "GET", "/entries/x", nil).Code)
	require.Equal(t, http.StatusNotFound, request(t, h, "GET", "/nope", nil).Code)
}

// testMount walks the UI the way a browser would, following the page's own
// links and redirects, with the handler mounted at prefix.
func testMount(t *testing.T, s sink, prefix string) {
	id := put(t, s, deadLetter(1, ab, tCustomers, duplex.ReasonConflict))
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: newFakeSync(s)})
	srv := h
	if prefix != "" {
		mux := http.NewServeMux()
		mux.Handle(prefix+"/", http.StripPrefix(prefix, h))
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "outside the admin", http.StatusTeapot) })
		srv = mux
		// Without the trailing slash: redirected to the list.
		rec := request(t, srv, "GET", prefix, nil)
		require.Contains(t, []int{http.StatusMovedPermanently, http.StatusTemporaryRedirect}, rec.Code)
		require.Equal(t, prefix+"/", rec.Header().Get("Location"))
	}
	get := func(target string) string {
		t.Helper()
		rec := request(t, srv, "GET", target, nil)
		require.Equal(t, http.StatusOK, rec.Code, "GET %s: %s", target, rec.Body.String())
		return rec.Body.String()
	}
	list := prefix + "/"
	body := get(list)
	for _, ref := range hrefs(body) {
		require.True(t, strings.HasPrefix(resolveRef(t, list, ref), prefix+"/"), "link %q leaves the mount", ref)
	}
	m := regexp.MustCompile(`<tr id="entry-` + strconv.FormatInt(id, 10) + `">\s*<td class="num"><a href="([^"]*)">`).FindStringSubmatch(body)
	require.NotNil(t, m, body)
	detail := resolveRef(t, list, m[1])
	require.Equal(t, fmt.Sprintf("%s/entries/%d", prefix, id), detail)

	body = get(detail)
	require.Contains(t, body, fmt.Sprintf("Entry %d", id))
	require.Equal(t, list, resolveRef(t, detail, findLink(t, body, "← All entries")))
	m = regexp.MustCompile(`<form method="post" action="([^"]*)"><button type="submit" id="dismiss"`).FindStringSubmatch(body)
	require.NotNil(t, m)
	action := resolveRef(t, detail, m[1])
	require.Equal(t, detail+"/dismiss", action)

	rec := request(t, srv, "POST", action, url.Values{}, "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusSeeOther, rec.Code, rec.Body.String())
	back := resolveRef(t, action, rec.Header().Get("Location"))
	require.True(t, strings.HasPrefix(back, detail+"?"), back)
	body = get(back)
	require.Contains(t, body, fmt.Sprintf("dismissed entry %d", id))
	require.Contains(t, body, `<span class="badge st-dismissed" id="status">dismissed</span>`)

	// The JSON API under the same mount.
	require.Equal(t, 1, decode[listReply](t, request(t, srv, "GET", prefix+"/dlq", nil)).Total)
	require.Equal(t, dlq.StatusDismissed, decode[dlq.Entry](t, request(t, srv, "GET", fmt.Sprintf("%s/dlq/%d", prefix, id), nil)).Status)
}

// Two pending changes to one row: the newer cannot be retried before the
// older, so older data is never applied after newer.
func testRetryInRowOrder(t *testing.T, s sink) {
	older := deadLetter(7, ab, tCustomers, duplex.ReasonPermanentError)
	newer := deadLetter(7, ab, tCustomers, duplex.ReasonPermanentError)
	newer.Change.ID += "-later"
	newer.At = older.At.Add(time.Minute)
	oldID, newID := put(t, s, older), put(t, s, newer)
	other := put(t, s, deadLetter(7, ba, tCustomers, duplex.ReasonPermanentError)) // the other direction: independent
	fs := newFakeSync(s)
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: fs})

	rec := post(t, h, fmt.Sprintf("/dlq/%d/retry", newID))
	require.Equal(t, http.StatusConflict, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), fmt.Sprintf("entry %d is an older pending change to the same row", oldID))
	require.Equal(t, dlq.StatusPending, getEntry(t, s, newID).Status)
	retries, _ := fs.calls()
	require.Empty(t, retries)

	for _, id := range []int64{other, oldID, newID} {
		rec = post(t, h, fmt.Sprintf("/dlq/%d/retry", id))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	}
	retries, _ = fs.calls()
	require.Equal(t, []int64{other, oldID, newID}, retries)
}

// heldLetter returns the dead letter of row id=n held by a two-way merge
// on field, found in direction dir by change cid.
func heldLetter(n int, cid string, dir duplex.Direction, table duplex.Table, field string) *duplex.DeadLetter {
	dl := deadLetter(n, dir, table, duplex.ReasonConflict)
	dl.Change.ID = cid
	dl.Conflict = &duplex.ConflictInfo{
		Kind: duplex.UpdateUpdate, Fields: []string{field}, DecidedBy: "manual_review", Merge: true,
		Base:   duplex.Values{"id": int64(n), field: "base"},
		Source: duplex.Values{"id": int64(n), field: "from " + dir.From + " " + cid},
		Target: duplex.Values{"id": int64(n), field: "from " + dir.To},
	}
	return dl
}

// testBulk: POST /dlq/bulk counts with dry_run, then acts on exactly the
// pending entries its filter matches.
func testBulk(t *testing.T, s sink) {
	for n := 1; n <= 4; n++ {
		put(t, s, heldLetter(n, fmt.Sprintf("h%d", n), ab, tCustomers, "email"))
	}
	put(t, s, heldLetter(5, "h5", ab, tCustomers, "name"))
	put(t, s, heldLetter(6, "h6", ab, tOrders, "email"))
	put(t, s, deadLetter(7, ab, tCustomers, duplex.ReasonPermanentError))
	// Later changes of row 1 refresh its entry.
	require.NoError(t, s.Put(t.Context(), heldLetter(1, "h1b", ba, tCustomers, "email")))
	fs := newFakeSync(s)
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: fs})

	rec := request(t, h, "POST", "/dlq/bulk?action=resolve&winner=a&table=public.customers&field=email&reason=conflict&dry_run=1", nil)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	dry := decode[dlq.BulkResult](t, rec)
	require.True(t, dry.DryRun)
	require.Equal(t, 4, dry.Matched)
	require.Zero(t, dry.Done)
	_, resolves := fs.calls()
	require.Empty(t, resolves, "a dry run acts on nothing")

	rec = request(t, h, "POST", "/dlq/bulk?action=resolve&winner=a&table=public.customers&field=email&reason=conflict", nil)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	res := decode[dlq.BulkResult](t, rec)
	require.Equal(t, 4, res.Matched)
	require.Equal(t, 4, res.Done)
	require.Zero(t, res.Failed)
	_, resolves = fs.calls()
	require.Len(t, resolves, 4)
	es, total, err := s.List(t.Context(), dlq.Filter{Status: dlq.StatusPending})
	require.NoError(t, err)
	require.Equal(t, 3, total, "the name entry, the orders entry and the permanent error stay")
	for _, e := range es {
		require.NotEqual(t, "h1b", e.Change.ID)
	}

	// Failures are counted and reported; age filters too.
	fs.mu.Lock()
	fs.resolveErr = fmt.Errorf("row changed: %w", duplex.ErrNewerData)
	fs.mu.Unlock()
	rec = request(t, h, "POST", "/dlq/bulk?action=resolve&winner=b&reason=conflict&older_than=1h", nil)
	res = decode[dlq.BulkResult](t, rec)
	require.Equal(t, 2, res.Matched)
	require.Equal(t, 2, res.Failed)
	require.Contains(t, res.Errors[0], "row changed")

	rec = request(t, h, "POST", "/dlq/bulk?action=dismiss&reason=permanent_error", nil)
	res = decode[dlq.BulkResult](t, rec)
	require.Equal(t, 1, res.Done)
	requireError(t, request(t, h, "POST", "/dlq/bulk?action=explode", nil), http.StatusBadRequest, "unknown bulk action")
	requireError(t, request(t, h, "POST", "/dlq/bulk?action=resolve", nil), http.StatusBadRequest, "winner is required")
	requireError(t, request(t, h, "POST", "/dlq/bulk?action=dismiss&older_than=soon", nil), http.StatusBadRequest, "older_than")
}

// testBulkHTML: the list page's bulk form, dry run then apply, redirects
// back to the filtered list with the outcome.
func testBulkHTML(t *testing.T, s sink) {
	put(t, s, heldLetter(1, "h1", ab, tCustomers, "email"))
	put(t, s, heldLetter(2, "h2", ab, tCustomers, "email"))
	put(t, s, heldLetter(3, "h3", ab, tOrders, "email"))
	h := newAdmin(t, dlq.AdminConfig{Store: s, Actions: newFakeSync(s)})
	body := request(t, h, "GET", "/?table=public.customers", nil).Body.String()
	require.Contains(t, body, `<form class="bulk" id="bulk" method="post" action="./bulk">`)
	require.Contains(t, body, `<input type="hidden" name="table" value="public.customers">`)

	form := url.Values{"table": {"public.customers"}, "action": {"resolve"}, "winner": {"b"}, "dry_run": {"1"}}
	rec := request(t, h, "POST", "/bulk", form, "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusSeeOther, rec.Code, rec.Body.String())
	loc := resolveRef(t, "/bulk", rec.Header().Get("Location"))
	body = request(t, h, "GET", loc, nil).Body.String()
	require.Contains(t, body, "dry run: 2 pending entries match; resolve for b would act on them")
	require.Equal(t, 2, entryRows(body))

	delete(form, "dry_run")
	rec = request(t, h, "POST", "/bulk", form)
	loc = resolveRef(t, "/bulk", rec.Header().Get("Location"))
	body = request(t, h, "GET", loc, nil).Body.String()
	require.Contains(t, body, "bulk resolve for b: 2 of 2 pending entries done, 0 failed")
	_, total, err := s.List(t.Context(), dlq.Filter{Status: dlq.StatusPending})
	require.NoError(t, err)
	require.Equal(t, 1, total)

	// Cross-origin bulk POSTs are refused, like every other action.
	rec = request(t, h, "POST", "/bulk", form, "Sec-Fetch-Site", "cross-site")
	require.Equal(t, http.StatusForbidden, rec.Code)
}

// testListFieldAndAge: GET /dlq filters by held field and by age.
func testListFieldAndAge(t *testing.T, s sink) {
	put(t, s, heldLetter(1, "h1", ab, tCustomers, "email"))
	put(t, s, heldLetter(2, "h2", ab, tCustomers, "name"))
	h := newAdmin(t, dlq.AdminConfig{Store: s})
	rep := decode[listReply](t, request(t, h, "GET", "/dlq?field=name", nil))
	require.Equal(t, 1, rep.Total)
	require.Equal(t, "h2", rep.Entries[0].Change.ID)
	rep = decode[listReply](t, request(t, h, "GET", "/dlq?older_than=1h", nil))
	require.Equal(t, 2, rep.Total, "t0 is long ago")
	rep = decode[listReply](t, request(t, h, "GET", "/dlq?older_than=87600h", nil))
	require.Zero(t, rep.Total)
}
