package dlq

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/duplexsync/duplex"
)

// AdminConfig configures the admin handler built by [NewAdmin].
type AdminConfig struct {
	// Store holds the entries. Required.
	Store Store
	// Actions retries and resolves entries on the running sync
	// ([SyncActions]). nil: retry and resolve answer 501 Not Implemented;
	// listing, viewing and dismissing still work.
	Actions Actions
	// Auth wraps the handler to authenticate requests. Required, so that
	// leaving the queue open is a decision: pass [BasicAuth], your own
	// middleware, or [NoAuth] when something in front already
	// authenticates (or nobody else can reach it).
	Auth func(http.Handler) http.Handler
	// Who names the operator acting in a request, as recorded in
	// Entry.ResolvedBy. nil: the basic-auth user name, or "admin".
	Who func(*http.Request) string
	// Sides are the names of endpoints A and B ("crm", "billing"), for the
	// labels of the resolve buttons, the direction filter and the winner
	// parameter. Zero: "a" and "b".
	Sides [2]string
	// Title heads the HTML pages. "": "duplex dead letters".
	Title string
	// TrustedOrigins are origins (such as "https://ops.example.com") whose
	// cross-origin POSTs are accepted, for a proxy that changes the Host
	// header. Every other cross-origin browser POST is refused with 403.
	TrustedOrigins []string
	// Logger receives a line per action. nil: slog.Default().
	Logger *slog.Logger
}

// NoAuth is an Auth for [AdminConfig] that lets every request through.
// It is insecure on purpose: anyone who can reach the handler can read the
// dead-lettered rows and retry, dismiss or resolve them. Use it only
// behind something that authenticates already, or in tests.
func NoAuth(h http.Handler) http.Handler { return h }

// BasicAuth returns an Auth for [AdminConfig] that requires HTTP basic
// authentication with user and pass, compared in constant time. Requests
// without them get 401 and a WWW-Authenticate challenge. An empty user or
// pass rejects every request. Basic authentication sends the password with
// every request: serve the handler over HTTPS.
func BasicAuth(user, pass string) func(http.Handler) http.Handler {
	wantUser := sha256.Sum256([]byte(user))
	wantPass := sha256.Sum256([]byte(pass))
	usable := user != "" && pass != ""
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			gotUser := sha256.Sum256([]byte(u))
			gotPass := sha256.Sum256([]byte(p))
			// Both compared every time, so timing tells nothing about which
			// one was wrong.
			match := subtle.ConstantTimeCompare(gotUser[:], wantUser[:]) &
				subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
			if !ok || !usable || match != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="duplex dead letters", charset="UTF-8"`)
				writeJSONError(w, http.StatusUnauthorized, "dlq: authentication required")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

//go:embed templates/*.html
var templateFS embed.FS

// listPageSize is the number of entries on one HTML list page.
const listPageSize = 50

// maxLimit caps the limit parameter of GET /dlq.
const maxLimit = 1000

// actionTimeout bounds an action once it has started: it does not follow
// the request's context, so a closed browser tab does not leave an entry
// half-way (retried, with nobody to record the outcome).
const actionTimeout = time.Minute

type admin struct {
	store   Store
	actions Actions
	who     func(*http.Request) string
	sides   [2]string
	title   string
	log     *slog.Logger

	list, detail, errPage *template.Template
}

// NewAdmin returns an http.Handler to inspect and act on the entries of a
// dead-letter queue: an HTML UI for people and a JSON API for tools.
//
// It can be mounted at the root or under any prefix with
// [http.StripPrefix] (mux.Handle("/ops/dlq/", http.StripPrefix("/ops/dlq",
// h))): every link it renders is relative.
//
// JSON API (errors are {"error": "..."} with a 4xx or 5xx status):
//
//	GET  /dlq?direction=&table=&reason=&status=&key=&field=&older_than=&sync=&limit=&offset=&after=
//	     -> {"entries": [Entry...], "total": N}, newest first
//	GET  /dlq/{id}                -> Entry
//	POST /dlq/bulk?action=retry|dismiss|resolve|keep-both&winner=&move=&dry_run=1&<filter>
//	     -> BulkResult: acts on every pending entry the filter matches
//	        (oldest first), or with dry_run only counts them
//	POST /dlq/{id}/retry          -> {"entry": Entry, "result": ActionResult}
//	POST /dlq/{id}/dismiss        -> {"entry": Entry}
//	POST /dlq/{id}/resolve?winner=a|b|<side name> (or a winner form field)
//	     -> {"entry": Entry, "result": ActionResult}
//	POST /dlq/{id}/keep-both?move=a|b|<side name> (or a move form field)
//	     -> {"entry": Entry, "result": ActionResult}
//
// An Entry in JSON has, besides its fields, "table" and "key" at the top
// level and, for a conflict, "three_way": the agreed row and both sides'
// rows field by field (see [Entry.ThreeWay]). field= matches a held field,
// older_than= (a Go duration, "10m") entries first seen longer ago.
//
// HTML: GET / lists entries with filters, paging, the pending depth and a
// bulk form (POST /bulk: the list's filter, an action, and a dry-run
// button that only counts); GET /entries/{id} shows one with its
// three-way view (base, A, B; differing and held fields marked), why it
// was held, its superseded versions, its payload and buttons that POST to
// /entries/{id}/retry|dismiss|resolve and redirect back with a message.
//
// Every action is idempotent: repeating one on an entry already in the
// status it leads to returns the entry unchanged (with a "message" and no
// "result"), without calling Actions again. Retry moves a pending entry to
// retried before calling Actions.Retry, then to resolved when the change
// went through, or back to pending when it failed (the error is answered
// with 502, or 409 when the sync is not running). Dismiss moves a pending
// or retried entry to dismissed. Resolve calls Actions.Resolve on a
// pending entry, then marks it resolved with "winner=<side>"; when the
// losing side's row changed since the entry was recorded it answers 409
// and leaves the entry pending. Keep-both (for a key holding a different
// row on each side, made by both sides' sequences) gives the move side's
// row a new key drawn from its sequence, on both sides: the key is
// recorded in the entry (status retried) before anything is written, the
// rows are written (KeyActions), and the entry is resolved; after a
// failure the entry is pending with the key kept, and keep-both again
// finishes with the same key. Where it does not apply (a unique collision,
// a key no sequence feeds) it answers 409 saying why and what to do. An
// action the entry's status does not allow answers 409. Nothing is ever
// deleted.
//
// Browser POSTs from other origins are refused (403, by
// [http.CrossOriginProtection]); responses carry a restrictive
// Content-Security-Policy and are not cached.
func NewAdmin(cfg AdminConfig) (http.Handler, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, &duplex.ConfigError{Field: "dlq: AdminConfig.Store", Reason: "is required"})
	}
	if cfg.Auth == nil {
		errs = append(errs, &duplex.ConfigError{Field: "dlq: AdminConfig.Auth",
			Reason: "is required: pass dlq.BasicAuth(user, pass), your own middleware, or dlq.NoAuth to leave the queue open on purpose"})
	}
	if cfg.Sides[0] == "" && cfg.Sides[1] == "" {
		cfg.Sides = [2]string{"a", "b"}
	}
	if cfg.Sides[0] == "" || cfg.Sides[1] == "" || cfg.Sides[0] == cfg.Sides[1] {
		errs = append(errs, &duplex.ConfigError{Field: "dlq: AdminConfig.Sides",
			Reason: fmt.Sprintf("needs two different names, got %q and %q", cfg.Sides[0], cfg.Sides[1])})
	}
	cop := http.NewCrossOriginProtection()
	for _, o := range cfg.TrustedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			errs = append(errs, &duplex.ConfigError{Field: "dlq: AdminConfig.TrustedOrigins", Reason: err.Error()})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.Who == nil {
		cfg.Who = defaultWho
	}
	if cfg.Title == "" {
		cfg.Title = "duplex dead letters"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &admin{
		store:   cfg.Store,
		actions: cfg.Actions,
		who:     cfg.Who,
		sides:   cfg.Sides,
		title:   cfg.Title,
		log:     cfg.Logger,
	}
	var err error
	if a.list, err = parsePage("list.html"); err != nil {
		return nil, err
	}
	if a.detail, err = parsePage("detail.html"); err != nil {
		return nil, err
	}
	if a.errPage, err = parsePage("error.html"); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /dlq", a.apiList)
	mux.HandleFunc("GET /dlq/{id}", a.apiGet)
	mux.HandleFunc("POST /dlq/bulk", a.apiBulk)
	mux.HandleFunc("POST /dlq/{id}/{action}", a.apiAction)
	mux.HandleFunc("GET /{$}", a.pageList)
	mux.HandleFunc("GET /entries/{id}", a.pageDetail)
	mux.HandleFunc("POST /entries/{id}/{action}", a.pageAction)
	mux.HandleFunc("POST /bulk", a.pageBulk)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, "dlq: no such page: "+r.Method+" "+r.URL.Path)
	})

	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusForbidden, "dlq: cross-origin request refused")
	}))
	return securityHeaders(cop.Handler(cfg.Auth(mux))), nil
}

func parsePage(name string) (*template.Template, error) {
	t, err := template.New(name).Funcs(templateFuncs).ParseFS(templateFS, "templates/layout.html", "templates/"+name)
	if err != nil {
		return nil, fmt.Errorf("dlq: parse template %s: %w", name, err)
	}
	return t, nil
}

func defaultWho(r *http.Request) string {
	if u, _, ok := r.BasicAuth(); ok && u != "" {
		return u
	}
	return "admin"
}

type nonceKey struct{}

// securityHeaders sets the headers every response carries and a fresh CSP
// nonce for the page's inline style.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b [16]byte
		_, _ = rand.Read(b[:])                              // never fails (crypto/rand)
		nonce := base64.RawURLEncoding.EncodeToString(b[:]) // nothing for the template to escape
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nonceKey{}, nonce)))
	})
}

// ---------------------------------------------------------------------------
// Errors

// httpError is an error with the status it is answered with.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func withStatus(status int, err error) error { return &httpError{status: status, err: err} }

func badRequest(format string, args ...any) error {
	return withStatus(http.StatusBadRequest, fmt.Errorf(format, args...))
}

// statusOf is the HTTP status err is answered with.
func statusOf(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrTransition), errors.Is(err, duplex.ErrNewerData), errors.Is(err, duplex.ErrNotRunning),
		errors.Is(err, duplex.ErrKeyBusy), errors.Is(err, duplex.ErrNotOffered), errors.Is(err, duplex.ErrKeyTaken),
		errors.Is(err, duplex.ErrOnboarding):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

var errNoActions = withStatus(http.StatusNotImplemented,
	errors.New("dlq: retry and resolve are not available: the admin handler has no Actions (set AdminConfig.Actions, such as dlq.SyncActions(sync))"))

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]string{"error": "dlq: encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// ---------------------------------------------------------------------------
// Requests

func parseID(r *http.Request) (int64, error) {
	s := r.PathValue("id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, badRequest("dlq: invalid entry id %q: want a positive integer", s)
	}
	return id, nil
}

// parseFilter reads the filter of GET /dlq and of the list page.
func parseFilter(q url.Values, defaultLimit int) (Filter, error) {
	f := Filter{
		Sync:      q.Get("sync"),
		Direction: q.Get("direction"),
		Table:     q.Get("table"),
		Reason:    duplex.Reason(q.Get("reason")),
		Key:       q.Get("key"),
		Field:     q.Get("field"),
		Limit:     defaultLimit,
	}
	if s := q.Get("older_than"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return Filter{}, badRequest("dlq: parameter older_than: %q is not a duration such as 90s, 10m or 2h", s)
		}
		f.Before = time.Now().Add(-d)
	}
	if s := q.Get("status"); s != "" {
		st, err := ParseStatus(s)
		if err != nil {
			return Filter{}, badRequest("dlq: parameter status: unknown status %q (want pending, retried, dismissed or resolved)", s)
		}
		f.Status = st
	}
	intParam := func(name string, lo, hi int64) (int64, error) {
		s := q.Get(name)
		if s == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < lo || n > hi {
			return 0, badRequest("dlq: parameter %s: %q is not an integer from %d to %d", name, s, lo, hi)
		}
		return n, nil
	}
	if q.Has("limit") {
		n, err := intParam("limit", 1, maxLimit)
		if err != nil {
			return Filter{}, err
		}
		f.Limit = int(n)
	}
	n, err := intParam("offset", 0, 1<<31-1)
	if err != nil {
		return Filter{}, err
	}
	f.Offset = int(n)
	if f.After, err = intParam("after", 0, 1<<63-1); err != nil {
		return Filter{}, err
	}
	return f, nil
}

// winnerSide maps the winner parameter ("a", "b" or a side's name) to the
// side's name.
func (a *admin) winnerSide(r *http.Request) (string, error) { return a.sideParam(r, "winner") }

// sideParam maps the parameter name ("a", "b" or a side's name, in the
// query or the form) to the side's name.
func (a *admin) sideParam(r *http.Request, name string) (string, error) {
	w := r.URL.Query().Get(name)
	if w == "" {
		w = r.PostFormValue(name)
	}
	switch w {
	case "":
		return "", badRequest("dlq: parameter %s is required: %q or %q", name, a.sides[0], a.sides[1])
	case "a", a.sides[0]:
		return a.sides[0], nil
	case "b", a.sides[1]:
		return a.sides[1], nil
	}
	return "", badRequest("dlq: parameter %s: unknown side %q (want %q or %q)", name, w, a.sides[0], a.sides[1])
}

// ---------------------------------------------------------------------------
// Actions

// actionReply is the answer to an action.
type actionReply struct {
	Entry Entry `json:"entry"`
	// Result is what Actions did; nil when it was not called (dismiss, or
	// an action repeated on an entry already done).
	Result *duplex.ActionResult `json:"result,omitempty"`
	// Message tells, in a sentence, what happened.
	Message string `json:"message,omitempty"`
}

// do runs action on entry id.
func (a *admin) do(r *http.Request, id int64, action string) (actionReply, error) {
	var winner string
	switch action {
	case "retry", "resolve", "keep-both":
		if a.actions == nil {
			return actionReply{}, errNoActions
		}
		param := map[string]string{"resolve": "winner", "keep-both": "move"}[action]
		if param != "" {
			var err error
			if winner, err = a.sideParam(r, param); err != nil {
				return actionReply{}, err
			}
		}
	case "dismiss":
	default:
		return actionReply{}, withStatus(http.StatusNotFound, fmt.Errorf("dlq: unknown action %q (want retry, dismiss, resolve or keep-both)", action))
	}
	who := a.who(r)
	// Once started, an action runs to its end even if the client goes away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), actionTimeout)
	defer cancel()
	var (
		rep actionReply
		err error
	)
	switch action {
	case "retry":
		rep, err = a.retry(ctx, id, who)
	case "dismiss":
		rep, err = a.dismiss(ctx, id, who)
	case "resolve":
		rep, err = a.resolve(ctx, id, who, winner)
	case "keep-both":
		rep, err = a.keepBoth(ctx, id, who, winner)
	}
	attrs := []any{"id", id, "action", action, "by", who}
	if winner != "" {
		attrs = append(attrs, "winner", winner)
	}
	switch {
	case err != nil:
		a.log.WarnContext(ctx, "dlq admin action failed", append(attrs, "err", err)...)
	case rep.Result != nil:
		a.log.InfoContext(ctx, "dlq admin action", append(attrs, "status", rep.Entry.Status, "outcome", rep.Result.Outcome)...)
	default:
		a.log.InfoContext(ctx, "dlq admin action", append(attrs, "status", rep.Entry.Status)...)
	}
	return rep, err
}

// retryOutcomes are the outcomes of Actions.Retry after which the change is
// applied (or needs nothing more), so the entry is resolved.
var retryOutcomes = map[duplex.Outcome]bool{
	duplex.OutcomeApplied: true, duplex.OutcomeMerged: true, duplex.OutcomeKeptTarget: true,
	duplex.OutcomeAlreadyApplied: true, duplex.OutcomeUnchanged: true,
}

func (a *admin) retry(ctx context.Context, id int64, who string) (actionReply, error) {
	e, err := a.store.Get(ctx, id)
	if err != nil {
		return actionReply{}, err
	}
	if e.Status == StatusRetried || e.Status == StatusResolved {
		return actionReply{Entry: e, Message: fmt.Sprintf("entry %d is already %s: not retried again", id, e.Status)}, nil
	}
	// Changes to one row replay in their order: an older pending entry of
	// the same row and direction goes first, so a retry never applies older
	// data after newer.
	if e.Status == StatusPending {
		same, err := a.store.PendingForKey(ctx, e.Direction, e.Change.Table, e.Key())
		if err != nil {
			return actionReply{}, err
		}
		if len(same) > 0 && same[0].ID != e.ID {
			return actionReply{}, withStatus(http.StatusConflict, fmt.Errorf(
				"dlq: entry %d is an older pending change to the same row (%s %s %s): retry, resolve or dismiss it first",
				same[0].ID, e.Direction, e.Change.Table, e.Change.Key))
		}
	}
	// Claim the entry: the compare-and-set from pending records a token of
	// this request, so of two clicks racing only the one that finds its own
	// token calls Retry.
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	claim := "retry started (request " + hex.EncodeToString(tok[:]) + ")"
	e, err = a.store.SetStatus(ctx, id, []Status{StatusPending}, StatusRetried, who, claim)
	if err != nil {
		return actionReply{}, err
	}
	if e.Resolution != claim {
		return actionReply{Entry: e, Message: fmt.Sprintf("entry %d is already %s: not retried again", id, e.Status)}, nil
	}
	res, err := a.actions.Retry(ctx, &e)
	if err != nil {
		// Back to pending, unless the sync put it there already.
		if _, serr := a.store.SetStatus(ctx, id, []Status{StatusRetried}, StatusPending, who, "retry failed: "+err.Error()); serr != nil {
			a.log.ErrorContext(ctx, "dlq admin: cannot reopen entry after failed retry", "id", id, "err", serr)
		}
		status := http.StatusBadGateway
		if errors.Is(err, duplex.ErrNotRunning) || errors.Is(err, duplex.ErrNewerData) || errors.Is(err, duplex.ErrKeyBusy) {
			status = http.StatusConflict
		}
		return actionReply{}, withStatus(status, fmt.Errorf("dlq: retry of entry %d (%s %s %s) failed: %w",
			id, e.Direction, e.Change.Table, e.Change.Key, err))
	}
	rep := actionReply{Result: &res}
	if retryOutcomes[res.Outcome] {
		e, err = a.store.SetStatus(ctx, id, []Status{StatusRetried}, StatusResolved, who, "retry: "+string(res.Outcome))
		rep.Message = fmt.Sprintf("retried entry %d: %s; resolved", id, res.Outcome)
	} else {
		// dead_lettered (or an outcome this version does not know): the
		// change is not through. The sync's Put made the entry pending
		// again; make sure of it if the Put went elsewhere.
		e, err = a.store.SetStatus(ctx, id, []Status{StatusRetried}, StatusPending, who, "retry: "+string(res.Outcome))
		rep.Message = fmt.Sprintf("retried entry %d: %s; pending again", id, res.Outcome)
	}
	if errors.Is(err, ErrTransition) {
		// Someone (the sync's Put, another operator) moved it meanwhile:
		// the retry happened, show the entry as it is now.
		e, err = a.store.Get(ctx, id)
	}
	if err != nil {
		return actionReply{}, fmt.Errorf("dlq: entry %d retried (%s) but not updated: %w", id, res.Outcome, err)
	}
	if rep.Message != "" && res.Detail != "" {
		rep.Message += " (" + res.Detail + ")"
	}
	if e.Status == StatusResolved && e.Conflict != nil && e.Conflict.Unique != nil {
		rep.Message += a.settleHeldRows(ctx, &e, who)
	}
	rep.Entry = e
	return rep, nil
}

func (a *admin) dismiss(ctx context.Context, id int64, who string) (actionReply, error) {
	e, err := a.store.Get(ctx, id)
	if err != nil {
		return actionReply{}, err
	}
	if e.Status == StatusDismissed {
		return actionReply{Entry: e, Message: fmt.Sprintf("entry %d is already dismissed", id)}, nil
	}
	e, err = a.store.SetStatus(ctx, id, []Status{StatusPending, StatusRetried}, StatusDismissed, who, "dismissed")
	if err != nil {
		return actionReply{}, err
	}
	return actionReply{Entry: e, Message: fmt.Sprintf("dismissed entry %d", id)}, nil
}

func (a *admin) resolve(ctx context.Context, id int64, who, winner string) (actionReply, error) {
	e, err := a.store.Get(ctx, id)
	if err != nil {
		return actionReply{}, err
	}
	switch e.Status {
	case StatusResolved:
		return actionReply{Entry: e, Message: fmt.Sprintf("entry %d is already resolved", id)}, nil
	case StatusPending:
	default:
		return actionReply{}, &TransitionError{ID: id, Status: e.Status, From: []Status{StatusPending}, To: StatusResolved}
	}
	res, err := a.actions.Resolve(ctx, &e, winner)
	if err != nil {
		// A second click racing the first finds the loser's row already
		// changed: if the first one finished, that is not an error.
		if now, gerr := a.store.Get(ctx, id); gerr == nil && now.Status == StatusResolved {
			return actionReply{Entry: now, Message: fmt.Sprintf("entry %d is already resolved", id)}, nil
		}
		return actionReply{}, withStatus(actionStatus(err), fmt.Errorf("dlq: resolve of entry %d (%s %s %s) for %s failed: %w",
			id, e.Direction, e.Change.Table, e.Change.Key, winner, err))
	}
	// The data is copied: record it even if the entry moved meanwhile.
	e, err = a.store.SetStatus(ctx, id, []Status{StatusPending, StatusRetried, StatusDismissed}, StatusResolved, who, "winner="+winner)
	if err != nil {
		return actionReply{}, fmt.Errorf("dlq: entry %d resolved for %s (%s) but not updated: %w", id, winner, res.Outcome, err)
	}
	msg := fmt.Sprintf("resolved entry %d for %s: %s", id, winner, res.Outcome)
	if res.Detail != "" {
		msg += " (" + res.Detail + ")"
	}
	return actionReply{Entry: e, Result: &res, Message: msg}, nil
}

// ---------------------------------------------------------------------------
// JSON API

func (a *admin) apiList(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r.URL.Query(), DefaultLimit)
	if err != nil {
		writeJSONError(w, statusOf(err), err.Error())
		return
	}
	entries, total, err := a.store.List(r.Context(), f)
	if err != nil {
		writeJSONError(w, statusOf(err), "dlq: list entries: "+err.Error())
		return
	}
	if entries == nil {
		entries = []Entry{}
	}
	writeJSON(w, http.StatusOK, struct {
		Entries []Entry `json:"entries"`
		Total   int     `json:"total"`
	}{entries, total})
}

func (a *admin) apiGet(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(r)
	if err != nil {
		writeJSONError(w, statusOf(err), err.Error())
		return
	}
	e, err := a.store.Get(r.Context(), id)
	if err != nil {
		writeJSONError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (a *admin) apiAction(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(r)
	if err != nil {
		writeJSONError(w, statusOf(err), err.Error())
		return
	}
	rep, err := a.do(r, id, r.PathValue("action"))
	if err != nil {
		writeJSONError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// ---------------------------------------------------------------------------
// HTML

// page is what every HTML page gets.
type page struct {
	Title string
	Nonce string
	Sides [2]string
	Flash string
	Error bool // Flash reports a failure
	// Home is the list page relative to this one ("./", "../"), so links
	// work under any mount prefix.
	Home string
}

type listPage struct {
	page
	Filter     Filter
	OlderThan  string
	Entries    []Entry
	Total      int
	From, To   int // 1-based positions of the first and last entry shown
	Prev, Next string
	Depth      []DepthRow
	Pending    int
	Directions []string
	Reasons    []string
	Statuses   []Status
}

type detailPage struct {
	page
	Entry      Entry
	Payload    string
	ThreeWay   *threeWayView
	CanRetry   bool
	CanDismiss bool
	CanSolve   bool
	HasAction  bool
	// CanKeepBoth: the Actions draw keys, the entry is pending or has a
	// keep-both to finish, and holds two rows under one key (or a unique
	// collision, for which the action says what to do instead).
	CanKeepBoth bool
}

// threeWayView is an entry's three-way view as the detail page shows it.
type threeWayView struct {
	*ThreeWay
	Rows []threeWayRow
}

// threeWayRow is one field of the three-way view, its values formatted.
type threeWayRow struct {
	FieldView
	BaseText string
	Text     [2]string
}

func newThreeWayView(tw *ThreeWay) *threeWayView {
	v := &threeWayView{ThreeWay: tw}
	for _, f := range tw.Fields {
		v.Rows = append(v.Rows, threeWayRow{FieldView: f, BaseText: formatValue(f.Base),
			Text: [2]string{formatValue(f.Values[0]), formatValue(f.Values[1])}})
	}
	return v
}

func (a *admin) newPage(r *http.Request) page {
	nonce, _ := r.Context().Value(nonceKey{}).(string)
	p := page{Title: a.title, Nonce: nonce, Sides: a.sides, Home: "./"}
	if n := strings.Count(r.URL.Path, "/") - 1; n > 0 {
		p.Home = strings.Repeat("../", n)
	}
	q := r.URL.Query()
	if msg := q.Get("flash"); msg != "" {
		p.Flash = truncate(msg, 500)
		p.Error = q.Get("level") == "error"
	}
	return p
}

func (a *admin) render(w http.ResponseWriter, status int, t *template.Template, data any) {
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		a.log.Error("dlq admin: render page", "page", t.Name(), "err", err)
		http.Error(w, "dlq: render page "+t.Name()+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (a *admin) renderError(w http.ResponseWriter, r *http.Request, err error) {
	p := a.newPage(r)
	p.Flash, p.Error = err.Error(), true
	a.render(w, statusOf(err), a.errPage, p)
}

var knownReasons = []string{
	string(duplex.ReasonConflict), string(duplex.ReasonPermanentError), string(duplex.ReasonRetriesExhausted),
	string(duplex.ReasonTruncate), string(duplex.ReasonInvalid),
}

func (a *admin) pageList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := parseFilter(q, listPageSize)
	if err != nil {
		a.renderError(w, r, err)
		return
	}
	entries, total, err := a.store.List(r.Context(), f)
	if err != nil {
		a.renderError(w, r, fmt.Errorf("dlq: list entries: %w", err))
		return
	}
	depth, err := a.store.Depth(r.Context())
	if err != nil {
		a.renderError(w, r, fmt.Errorf("dlq: depth: %w", err))
		return
	}
	p := listPage{
		page:      a.newPage(r),
		Filter:    f,
		Entries:   entries,
		Total:     total,
		Depth:     depth,
		OlderThan: q.Get("older_than"),
		Statuses:  []Status{StatusPending, StatusRetried, StatusDismissed, StatusResolved},
	}
	dirs := []string{
		duplex.Direction{From: a.sides[0], To: a.sides[1]}.String(),
		duplex.Direction{From: a.sides[1], To: a.sides[0]}.String(),
	}
	reasons := append([]string(nil), knownReasons...)
	for _, d := range depth {
		p.Pending += d.Count
		dirs = appendNew(dirs, d.Direction)
		reasons = appendNew(reasons, d.Reason)
	}
	p.Directions = appendNew(dirs, f.Direction)
	p.Reasons = appendNew(reasons, string(f.Reason))
	if len(entries) > 0 {
		p.From = f.Offset + 1
		p.To = f.Offset + len(entries)
	}
	// Offset paging (with After kept as given): Prev and Next keep the
	// filter and move by one page.
	pageQuery := func(offset int) string {
		v := url.Values{}
		for _, k := range append(filterParams, "limit", "after") {
			if s := q.Get(k); s != "" {
				v.Set(k, s)
			}
		}
		if offset > 0 {
			v.Set("offset", strconv.Itoa(offset))
		}
		return "?" + v.Encode()
	}
	if f.Offset > 0 {
		p.Prev = pageQuery(max(f.Offset-f.Limit, 0))
	}
	if f.Offset+len(entries) < total && len(entries) > 0 {
		p.Next = pageQuery(f.Offset + f.Limit)
	}
	a.render(w, http.StatusOK, a.list, p)
}

func appendNew(list []string, s string) []string {
	if s == "" {
		return list
	}
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func (a *admin) pageDetail(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(r)
	if err != nil {
		a.renderError(w, r, err)
		return
	}
	e, err := a.store.Get(r.Context(), id)
	if err != nil {
		a.renderError(w, r, err)
		return
	}
	p := detailPage{
		page:       a.newPage(r),
		Entry:      e,
		Payload:    prettyJSON(e.Change),
		HasAction:  a.actions != nil,
		CanRetry:   a.actions != nil && e.Status == StatusPending,
		CanDismiss: e.Status == StatusPending || e.Status == StatusRetried,
		CanSolve:   a.actions != nil && e.Status == StatusPending,
	}
	if _, ok := a.actions.(KeyActions); ok && e.Conflict != nil && (e.Conflict.Kind == duplex.InsertInsert || e.Conflict.Kind == duplex.UniqueCollision) {
		p.CanKeepBoth = e.Status == StatusPending || e.Status == StatusRetried && strings.HasPrefix(e.Resolution, keepBothPrefix)
	}
	if tw := e.ThreeWay(a.sides); tw != nil {
		p.ThreeWay = newThreeWayView(tw)
	}
	a.render(w, http.StatusOK, a.detail, p)
}

func (a *admin) pageAction(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(r)
	if err != nil {
		a.renderError(w, r, err)
		return
	}
	action := r.PathValue("action")
	rep, err := a.do(r, id, action)
	if statusOf(err) == http.StatusNotFound {
		a.renderError(w, r, err)
		return
	}
	v := url.Values{}
	if err != nil {
		v.Set("flash", err.Error())
		v.Set("level", "error")
	} else {
		v.Set("flash", rep.Message)
	}
	// A relative Location, so that it works under any mount prefix (the
	// request's path here is /entries/{id}/{action}).
	w.Header().Set("Location", "../"+strconv.FormatInt(id, 10)+"?"+v.Encode())
	w.WriteHeader(http.StatusSeeOther)
}

// prettyJSON renders v as indented JSON, without escaping HTML (the page
// template does that).
func prettyJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return "(cannot encode payload as JSON: " + err.Error() + ")\n" + fmt.Sprintf("%#v", v)
	}
	return buf.String()
}

// formatValue renders a field value for the conflict table.
func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return x
	case []byte:
		return `\x` + hex.EncodeToString(x)
	case json.RawMessage:
		return string(x)
	case duplex.JSONB:
		return string(x)
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case fmt.Stringer:
		return x.String()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

var templateFuncs = template.FuncMap{
	"short": func(s string) string { return truncate(strings.Join(strings.Fields(s), " "), 90) },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"arrow": func(d duplex.Direction) string { return d.From + " → " + d.To },
}
