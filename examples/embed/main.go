// Command embed keeps the customers table of two PostgreSQL databases in
// agreement both ways, embedding duplex with package duplexpg:
//
//	go run ./examples/embed -name crm_billing -crm postgres://127.0.0.1/crm -billing postgres://127.0.0.1/billing
//
// It prints "embed: ready" once both directions stream and runs until
// SIGINT or SIGTERM. The README's "Embedding" section shows this file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/duplexpg"
	"github.com/duplexsync/duplex/resolve"
)

func main() {
	name := flag.String("name", "crm_billing", "sync name: it names the slots, origins, state and lock")
	crmURL := flag.String("crm", "", "connection string of the CRM database")
	billingURL := flag.String("billing", "", "connection string of the billing database")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *name, *crmURL, *billingURL); err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, name, crmURL, billingURL string) (err error) {
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
	owners, err := resolve.ParseAuthority("customers.email=crm,customers.plan=billing")
	if err != nil {
		return err
	}
	sync, err := duplexpg.NewSync(ctx, crm, billing, duplexpg.Config{
		Tables:     []duplex.Table{{Schema: "public", Name: "customers"}},
		Authority:  owners, // then last-write-wins on updated_at; the rest goes to the DLQ
		Registerer: prometheus.DefaultRegisterer,
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sync.Close()) }()
	go func() {
		select {
		case <-sync.Ready():
			fmt.Println("embed: ready")
		case <-ctx.Done():
		}
	}()
	return sync.Run(ctx) // nil once ctx ends; nothing is left half-done
}
