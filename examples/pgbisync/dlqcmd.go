package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/duplexsync/duplex/dlq"
)

// dlqCommands are the subcommands of -dlq.
var dlqCommands = []string{"list", "show", "resolve", "retry", "dismiss", "keep-both"}

// isDLQCommand reports whether args ask for a -dlq subcommand.
func isDLQCommand(args []string) bool {
	for _, a := range args {
		if a == "-dlq" || a == "--dlq" || strings.HasPrefix(a, "-dlq=") || strings.HasPrefix(a, "--dlq=") {
			return true
		}
	}
	return false
}

// dlqConfig is the configuration of a -dlq subcommand.
type dlqConfig struct {
	command       string
	admin         string
	adminUser     string
	adminPassword string
	id            int64
	winner        string
	move          string
	dryRun        bool
	jsonOut       bool
	limit         int
	filter        url.Values
}

// dlqMain runs a -dlq subcommand against a running pgbisync's admin JSON
// API and returns the exit status: 0, 1 on an error, 2 on bad flags.
//
//	pgbisync -dlq list    [-admin ADDR] [filters] [-limit N] [-json]
//	pgbisync -dlq show    -id N [-json]
//	pgbisync -dlq resolve -winner a|b (-id N | filters [-dry-run])
//	pgbisync -dlq retry   (-id N | filters [-dry-run])
//	pgbisync -dlq dismiss (-id N | filters [-dry-run])
//	pgbisync -dlq keep-both -move a|b (-id N | filters [-dry-run])
//
// Filters: -table, -reason, -field, -older-than, -status (list only),
// -key, -direction. An action with filters acts on every pending entry
// they match (POST /dlq/bulk); -dry-run only counts them. keep-both gives
// the -move side's row of a key that holds a different row on each side a
// new key from that side's sequence, on both sides (where the key has no
// sequence, or the entry is a unique collision, it says why not and what
// to do); run it again after a failure to finish with the same key.
func dlqMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &dlqConfig{filter: url.Values{}}
	fs := flag.NewFlagSet("pgbisync -dlq", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.command, "dlq", "", "subcommand: "+strings.Join(dlqCommands, ", "))
	fs.StringVar(&c.admin, "admin", "127.0.0.1:8089", "address (or URL) of the running pgbisync's admin server")
	fs.StringVar(&c.adminUser, "admin-user", "", "user name of the admin server's basic auth")
	fs.StringVar(&c.adminPassword, "admin-password", "", "password of the admin server's basic auth (or env "+envAdminPasswd+")")
	fs.Int64Var(&c.id, "id", 0, "the entry to show or act on")
	fs.StringVar(&c.winner, "winner", "", "resolve: the side whose row wins, a or b")
	fs.StringVar(&c.move, "move", "", "keep-both: the side whose row gets a new key from its sequence, a or b")
	fs.BoolVar(&c.dryRun, "dry-run", false, "with filters: only count the pending entries an action would act on")
	fs.BoolVar(&c.jsonOut, "json", false, "print the API's JSON answer")
	fs.IntVar(&c.limit, "limit", 50, "list: most entries printed")
	for _, f := range []struct{ flag, param, usage string }{
		{"table", "table", "filter: table, schema.name"},
		{"reason", "reason", "filter: reason (conflict, permanent_error, retries_exhausted, truncate, invalid)"},
		{"field", "field", "filter: a held field"},
		{"older-than", "older_than", "filter: first seen longer ago than this (10m, 2h)"},
		{"status", "status", "list filter: status (pending, retried, dismissed, resolved)"},
		{"key", "key", "filter: key, as id=42"},
		{"direction", "direction", "filter: direction, a_to_b or b_to_a"},
	} {
		fs.Func(f.flag, f.usage, func(s string) error { c.filter.Set(f.param, s); return nil })
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if c.adminPassword == "" {
		c.adminPassword = os.Getenv(envAdminPasswd)
	}
	err := c.check(fs)
	if err == nil {
		err = c.run(ctx, stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "pgbisync -dlq:", err)
		return 1
	}
	return 0
}

func (c *dlqConfig) check(fs *flag.FlagSet) error {
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments %q (every option is a flag)", fs.Args())
	case !slices.Contains(dlqCommands, c.command):
		return fmt.Errorf("-dlq %q: want one of %s", c.command, strings.Join(dlqCommands, ", "))
	case c.command == "show" && c.id <= 0:
		return errors.New("-dlq show needs -id")
	case c.command == "resolve" && c.winner == "":
		return errors.New("-dlq resolve needs -winner a or b")
	case c.command == "keep-both" && c.move == "":
		return errors.New("-dlq keep-both needs -move a or b: the side whose row gets a new key")
	case c.command != "list" && c.command != "show" && c.id <= 0 && len(c.filter) == 0:
		return fmt.Errorf("-dlq %s needs -id, or filters (-table, -reason, -field, -older-than, -key, -direction) to act on every pending entry they match", c.command)
	case c.command != "list" && c.id > 0 && (len(c.filter) > 0 || c.dryRun):
		return fmt.Errorf("-dlq %s: -id acts on one entry; filters and -dry-run go without it", c.command)
	}
	return nil
}

// base returns the admin server's URL.
func (c *dlqConfig) base() string {
	if strings.Contains(c.admin, "://") {
		return strings.TrimSuffix(c.admin, "/")
	}
	return "http://" + c.admin
}

// call sends one request to the JSON API and decodes its answer into out
// (and returns the raw body).
func (c *dlqConfig) call(ctx context.Context, method, path string, q url.Values, out any) ([]byte, error) {
	u := c.base() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, 35*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if c.adminUser != "" {
		req.SetBasicAuth(c.adminUser, c.adminPassword)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s %s: %s (%d)", method, path, e.Error, resp.StatusCode)
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return nil, fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
	}
	return body, nil
}

// cliEntry is what the subcommands read of an entry's JSON.
type cliEntry struct {
	dlq.Entry
	Table    string        `json:"table"`
	Key      string        `json:"key"`
	ThreeWay *dlq.ThreeWay `json:"three_way"`
}

func (c *dlqConfig) run(ctx context.Context, stdout io.Writer) error {
	var (
		body []byte
		err  error
	)
	switch {
	case c.command == "list":
		q := c.filter
		q.Set("limit", strconv.Itoa(c.limit))
		var rep struct {
			Entries []cliEntry `json:"entries"`
			Total   int        `json:"total"`
		}
		if body, err = c.call(ctx, http.MethodGet, "/dlq", q, &rep); err == nil && !c.jsonOut {
			printList(stdout, rep.Entries, rep.Total)
			return nil
		}
	case c.command == "show":
		var e cliEntry
		if body, err = c.call(ctx, http.MethodGet, "/dlq/"+strconv.FormatInt(c.id, 10), nil, &e); err == nil && !c.jsonOut {
			printEntry(stdout, &e)
			return nil
		}
	case c.id > 0:
		q := c.sideParams(url.Values{})
		var rep struct {
			Entry   cliEntry `json:"entry"`
			Message string   `json:"message"`
		}
		if body, err = c.call(ctx, http.MethodPost, "/dlq/"+strconv.FormatInt(c.id, 10)+"/"+c.command, q, &rep); err == nil && !c.jsonOut {
			fmt.Fprintln(stdout, rep.Message)
			return nil
		}
	default:
		q := c.sideParams(c.filter)
		q.Set("action", c.command)
		if c.dryRun {
			q.Set("dry_run", "1")
		}
		var rep dlq.BulkResult
		if body, err = c.call(ctx, http.MethodPost, "/dlq/bulk", q, &rep); err == nil && !c.jsonOut {
			fmt.Fprintln(stdout, rep.Message())
			for _, e := range rep.Errors {
				fmt.Fprintln(stdout, "  failed:", e)
			}
			if rep.Failed > 0 {
				return fmt.Errorf("%d of %d entries failed", rep.Failed, rep.Matched)
			}
			return nil
		}
	}
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if json.Indent(&out, body, "", "  ") != nil {
		out.Reset()
		out.Write(body)
	}
	out.WriteByte('\n')
	_, err = stdout.Write(out.Bytes())
	return err
}

// sideParams adds -winner and -move to q.
func (c *dlqConfig) sideParams(q url.Values) url.Values {
	if c.winner != "" {
		q.Set("winner", c.winner)
	}
	if c.move != "" {
		q.Set("move", c.move)
	}
	return q
}

// printList prints entries one a line.
func printList(w io.Writer, entries []cliEntry, total int) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tCOUNT\tTABLE\tKEY\tREASON\tFIELDS\tFIRST SEEN\tLAST SEEN")
	for _, e := range entries {
		fields := ""
		if e.Conflict != nil {
			fields = strings.Join(e.Conflict.Fields, ",")
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Status, e.Count, e.Table, e.Key, e.Reason, fields,
			e.FirstSeen.UTC().Format(time.RFC3339), e.LastSeen.UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d of %d entries\n", len(entries), total)
}

// printEntry prints one entry with its three-way view.
func printEntry(w io.Writer, e *cliEntry) {
	fmt.Fprintf(w, "entry %d: %s %s, %s, %s\n", e.ID, e.Table, e.Key, e.Reason, e.Status)
	fmt.Fprintf(w, "direction %s, change %s, seen %d times, first %s, last %s\n", e.Direction, e.Change.ID, e.Count,
		e.FirstSeen.UTC().Format(time.RFC3339), e.LastSeen.UTC().Format(time.RFC3339))
	if e.Error != "" {
		fmt.Fprintf(w, "why: %s\n", e.Error)
	}
	if e.Conflict != nil && e.Conflict.Unique != nil {
		u := e.Conflict.Unique
		fmt.Fprintf(w, "unique constraint %s (%s): %s's row %s collides with %s's row %s\n", u.Constraint, u.ValuesText(),
			e.Direction.From, e.Key, e.Direction.To, u.HolderKey)
	}
	if tw := e.ThreeWay; tw != nil {
		if tw.HeldBy != "" {
			fmt.Fprintf(w, "held by: %s\n", tw.HeldBy)
		}
		t := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(t, "\tFIELD\tBASE\t%s\t%s\n", strings.ToUpper(tw.Sides[0]), strings.ToUpper(tw.Sides[1]))
		for _, f := range tw.Fields {
			mark := ""
			switch {
			case f.Held:
				mark = "!"
			case f.Differs:
				mark = "*"
			}
			show := func(v any, absent bool) string {
				if absent {
					return "(absent)"
				}
				b, _ := json.Marshal(v)
				return string(b)
			}
			fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\n", mark, f.Name, show(f.Base, f.BaseAbsent), show(f.Values[0], f.Absent[0]), show(f.Values[1], f.Absent[1]))
		}
		_ = t.Flush()
		fmt.Fprintln(w, "! held (contested), * differs")
	}
	if len(e.History) > 0 {
		fmt.Fprintf(w, "%d superseded versions kept (of %d puts)\n", len(e.History), e.Count)
	}
}
