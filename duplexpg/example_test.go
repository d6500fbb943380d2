package duplexpg_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/duplexpg"
	"github.com/duplexsync/duplex/internal/testenv"
)

// A two-way sync between two PostgreSQL databases: an edit on either side
// reaches the other. (The databases are fresh ones the example creates.)
func ExampleNewSync() {
	ctx := context.Background()
	name, crmURL, billingURL, cleanup, err := scratchPair(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()
	if err := twoWay(ctx, name, crmURL, billingURL); err != nil {
		fmt.Println(err)
	}
	// Output:
	// billing: Ada Lovelace
	// crm: pro
}

// twoWay syncs customers between the two databases until an edit on each
// side has reached the other.
func twoWay(ctx context.Context, name, crmURL, billingURL string) (err error) {
	crm, err := duplexpg.Open(ctx, duplexpg.EndpointConfig{Sync: name, System: "crm", ConnString: crmURL})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, crm.Close()) }()
	billing, err := duplexpg.Open(ctx, duplexpg.EndpointConfig{Sync: name, System: "billing", ConnString: billingURL})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, billing.Close()) }()
	sync, err := duplexpg.NewSync(ctx, crm, billing, duplexpg.Config{
		Tables: []duplex.Table{{Schema: "public", Name: "customers"}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sync.Close()) }()

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sync.Run(runCtx) }()
	defer func() { stop(); err = errors.Join(err, <-done) }()
	select {
	case <-sync.Ready():
	case err := <-done:
		done <- nil // Run is over; its error is returned here
		return err
	}
	if _, err := crm.Pool().Exec(ctx, `UPDATE customers SET name = 'Ada Lovelace', updated_at = clock_timestamp() WHERE id = 1`); err != nil {
		return err
	}
	if _, err := billing.Pool().Exec(ctx, `UPDATE customers SET plan = 'pro', updated_at = clock_timestamp() WHERE id = 1`); err != nil {
		return err
	}
	for _, read := range []struct{ system, query, want string }{
		{"billing", `SELECT name FROM customers WHERE id = 1`, "Ada Lovelace"},
		{"crm", `SELECT plan FROM customers WHERE id = 1`, "pro"},
	} {
		e := map[string]*duplexpg.Endpoint{"crm": crm, "billing": billing}[read.system]
		got, err := await(ctx, e, read.query, read.want)
		if err != nil {
			return err
		}
		fmt.Printf("%s: %s\n", read.system, got)
	}
	return nil
}

// onboarding is the README's example of watching the onboarding.
func onboarding(ctx context.Context, crm, billing *duplexpg.Endpoint, customers duplex.Table) (err error) {
	// README: onboarding
	sync, err := duplexpg.NewSync(ctx, crm, billing, duplexpg.Config{
		Tables: []duplex.Table{customers},
		OnboardingProgress: func(p duplex.OnboardingProgress) { // also duplex_onboarding_* metrics
			if p.Done {
				log.Printf("onboarded %s: copied %d, agreed %d, decided %d, held %d",
					p.Table, p.Copied, p.Agreed, p.Decided, p.Held)
			}
		},
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sync.Close()) }()
	return sync.Run(ctx) // onboards first (on the first start), then streams
	// README: end
}

var _ = onboarding

// await polls query on e until it returns want, for up to a minute.
func await(ctx context.Context, e *duplexpg.Endpoint, query, want string) (string, error) {
	var got string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := e.Pool().QueryRow(ctx, query).Scan(&got); err != nil {
			return "", err
		}
		if got == want {
			return got, nil
		}
	}
	return got, fmt.Errorf("%s on %s: got %q after a minute, want %q", query, e.SystemName(), got, want)
}

// scratchPair creates the example's two databases, each with a customers
// table holding one row, and a sync name of its own; cleanup drops them
// with the sync's slots and replication origins.
func scratchPair(ctx context.Context) (name, crmURL, billingURL string, cleanup func(), err error) {
	name = fmt.Sprintf("example_%d", time.Now().UnixNano())
	var drops []func() error
	cleanup = func() {
		for _, drop := range drops {
			if err := drop(); err != nil {
				fmt.Println(err)
			}
		}
	}
	urls := make([]string, 2)
	for i, prefix := range []string{"example_crm", "example_billing"} {
		url, drop, err := testenv.Scratch(ctx, prefix, "duplex:"+name+":")
		if err != nil {
			cleanup()
			return "", "", "", nil, err
		}
		drops = append(drops, drop)
		urls[i] = url
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			cleanup()
			return "", "", "", nil, err
		}
		_, err = conn.Exec(ctx, `CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, plan text NOT NULL,
			updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
			INSERT INTO customers (id, name, plan, updated_at) VALUES (1, 'Ada', 'free', '2026-01-01')`)
		if err = errors.Join(err, conn.Close(ctx)); err != nil {
			cleanup()
			return "", "", "", nil, err
		}
	}
	return name, urls[0], urls[1], cleanup, nil
}
