package dlq_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
)

// The admin handler serves the dead letters of a store as HTML pages and
// a JSON API; here a conflict is listed and dismissed through the API.
func ExampleNewAdmin() {
	ctx := context.Background()
	store := dlq.NewMemory(dlq.MemoryConfig{})
	customers := duplex.Table{Schema: "public", Name: "customers"}
	// What a sync puts when a conflict is left to a person.
	err := store.Put(ctx, &duplex.DeadLetter{
		Sync:      "crm-billing",
		Direction: duplex.Direction{From: "crm", To: "billing"},
		Change: duplex.Change{
			ID: "crm/1", Origin: "crm", Table: customers, Op: duplex.OpUpdate,
			Key:   duplex.Key{{Name: "id", Value: int64(7)}},
			After: duplex.Values{"id": int64(7), "email": "ada@crm.example"},
		},
		Reason: duplex.ReasonConflict,
		Error:  "manual review: update_update conflict on public.customers id=7, field(s) email",
		At:     time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC),
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	admin, err := dlq.NewAdmin(dlq.AdminConfig{
		Store: store,
		// Mount it behind your own authentication, or use dlq.BasicAuth.
		Auth:   dlq.NoAuth,
		Sides:  [2]string{"crm", "billing"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/ops/dlq/", http.StripPrefix("/ops/dlq", admin))

	call := func(method, path string, out any) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		if err := json.NewDecoder(rec.Body).Decode(out); err != nil {
			fmt.Println(rec.Code, err)
		}
	}
	var list struct {
		Entries []dlq.Entry `json:"entries"`
		Total   int         `json:"total"`
	}
	call(http.MethodGet, "/ops/dlq/dlq?status=pending", &list)
	fmt.Println("pending:", list.Total)
	e := list.Entries[0]
	fmt.Printf("%s %s %s: %s\n", e.Direction, e.Change.Table, e.Key(), e.Reason)

	var dismissed struct {
		Entry dlq.Entry `json:"entry"`
	}
	call(http.MethodPost, fmt.Sprintf("/ops/dlq/dlq/%d/dismiss", e.ID), &dismissed)
	fmt.Println("status:", dismissed.Entry.Status)
	// Output:
	// pending: 1
	// crm_to_billing public.customers id=7: conflict
	// status: dismissed
}
