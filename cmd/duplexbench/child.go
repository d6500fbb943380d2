package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/dedup/dedupredis"
	"github.com/duplexsync/duplex/dlq"
)

// syncAppName is the application_name of the sync process's connections,
// by which the parent finds their backends.
const syncAppName = "duplex_bench_sync"

// childConfig is what the parent tells the sync process (-role=sync),
// as JSON in the DUPLEX_BENCH_CHILD environment variable.
type childConfig struct {
	Sync       string `json:"sync"`
	AURL       string `json:"a_url"`
	BURL       string `json:"b_url"`
	TwoWay     bool   `json:"two_way"`
	Redis      string `json:"redis,omitempty"`
	CPUProfile string `json:"cpu_profile,omitempty"`
	Verbose    bool   `json:"verbose,omitempty"`
	// LateralLedger replaces the Applier's ledger query by lateralLedger's
	// (diagnostic).
	LateralLedger bool `json:"lateral_ledger,omitempty"`
	// Hold makes the sync wait, after its slots exist, for a line on
	// stdin before it starts streaming: a backlog builds up meanwhile.
	Hold bool `json:"hold,omitempty"`
}

// childResult is the sync process's last line on stdout.
type childResult struct {
	DeadLetters int `json:"dead_letters"`
}

// runChild is the sync process: it sets up the sources, prints READY once
// the slots exist, runs the Pipeline (or the two-way Sync) until SIGTERM,
// then drops its origins and slots and prints a childResult.
func runChild() (err error) {
	var cfg childConfig
	if err := json.Unmarshal([]byte(os.Getenv("DUPLEX_BENCH_CHILD")), &cfg); err != nil {
		return fmt.Errorf("sync role: DUPLEX_BENCH_CHILD: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if cfg.Verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	var rdb *redis.Client
	if cfg.Redis != "" {
		opts, err := redis.ParseURL(cfg.Redis)
		if err != nil {
			return fmt.Errorf("sync role: redis URL %q: %w", cfg.Redis, err)
		}
		rdb = redis.NewClient(opts)
		defer rdb.Close()
	}
	type side struct {
		name string
		url  string
		mark string // the marker table written on this side
		pool *pgxpool.Pool
		src  *pglogical.Source
		app  *applypg.Applier
	}
	sides := []*side{{name: "a", url: cfg.AURL, mark: "marks_ab"}, {name: "b", url: cfg.BURL, mark: "marks_ba"}}
	var redisPrefixes []string
	endpoint := func(s *side, capture bool) (duplex.Endpoint, error) {
		var err error
		if s.pool, err = pgxpool.New(ctx, s.url); err != nil {
			return duplex.Endpoint{}, fmt.Errorf("sync role: connect to %s: %w", s.name, err)
		}
		e := duplex.Endpoint{Name: s.name}
		if capture {
			s.src, err = pglogical.New(ctx, pglogical.Config{
				ConnString: s.url, Sync: cfg.Sync, System: s.name,
				Tables:             []duplex.Table{{Schema: "public", Name: "items"}, {Schema: "public", Name: "big"}, {Schema: "public", Name: s.mark}},
				SetReplicaIdentity: true, Logger: logger,
			})
			if err != nil {
				return e, err
			}
			if err := s.src.Setup(ctx, false); err != nil {
				return e, err
			}
			e.Source = s.src
		}
		if s.app, err = applypg.New(ctx, s.pool, applypg.Config{Sync: cfg.Sync, Target: s.name, Logger: logger}); err != nil {
			return e, err
		}
		e.Applier = s.app
		if cfg.LateralLedger {
			e.Applier = newLateralLedger(s.app, s.pool, cfg.Sync, s.name)
		}
		if rdb != nil {
			prefix := "duplex_bench:" + cfg.Sync + ":" + s.name + ":"
			redisPrefixes = append(redisPrefixes, prefix)
			if e.Deduper, err = dedupredis.New(rdb, dedupredis.Config{Prefix: prefix, TTL: time.Hour}); err != nil {
				return e, err
			}
		}
		return e, nil
	}
	defer func() {
		cleanup := context.Background()
		for _, s := range sides {
			if s.src != nil {
				s.src.Close()
			}
			if s.app != nil {
				if err := s.app.DropOrigins(cleanup); err != nil {
					fmt.Fprintln(os.Stderr, "bench sync: drop origins:", err)
				}
			}
			if s.pool != nil {
				s.pool.Close()
			}
		}
		for _, p := range redisPrefixes {
			if err := deleteKeys(cleanup, rdb, p); err != nil {
				fmt.Fprintln(os.Stderr, "bench sync: delete redis keys:", err)
			}
		}
	}()
	a, err := endpoint(sides[0], true)
	if err != nil {
		return err
	}
	b, err := endpoint(sides[1], cfg.TwoWay)
	if err != nil {
		return err
	}
	dead := dlq.NewMemory(dlq.MemoryConfig{})
	var run func(context.Context) error
	if cfg.TwoWay {
		s, err := duplex.NewSync(&duplex.SyncConfig{Name: cfg.Sync, A: a, B: b, DeadLetters: dead, Logger: logger})
		if err != nil {
			return err
		}
		run = s.Run
	} else {
		p, err := duplex.NewPipeline(&duplex.Config{
			Name: cfg.Sync, Direction: duplex.Direction{From: "a", To: "b"},
			Source: a.Source, Target: b.Applier, Deduper: b.Deduper, DeadLetters: dead, Logger: logger,
		})
		if err != nil {
			return err
		}
		run = p.Run
	}
	if cfg.CPUProfile != "" {
		stop, perr := startCPUProfile(cfg.CPUProfile)
		if perr != nil {
			return fmt.Errorf("sync role: %w", perr)
		}
		defer func() { err = errors.Join(err, stop()) }()
	}
	fmt.Println("READY")
	if cfg.Hold {
		release := make(chan struct{})
		go func() {
			_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
			close(release)
		}()
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("sync role: %w", err)
	}
	entries, _, err := dead.List(context.Background(), dlq.Filter{Limit: 1 << 20})
	if err != nil {
		return err
	}
	for i, e := range entries {
		if i == 3 {
			break
		}
		fmt.Fprintf(os.Stderr, "bench sync: dead letter %s %s %s: %s: %s\n", e.Direction, e.Change.Table, e.Change.Key, e.Reason, e.Error)
	}
	out, _ := json.Marshal(childResult{DeadLetters: len(entries)})
	fmt.Println("RESULT " + string(out))
	return nil
}

// deleteKeys removes the Redis keys starting with prefix.
func deleteKeys(ctx context.Context, rdb *redis.Client, prefix string) error {
	iter := rdb.Scan(ctx, 0, prefix+"*", 4096).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 4096 {
			if err := rdb.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(batch) > 0 {
		return rdb.Unlink(ctx, batch...).Err()
	}
	return nil
}

// childArgs are the arguments that make this binary the sync process (a
// test binary replaces them).
var childArgs = []string{"-role=sync"}

// syncProc is a running sync process seen from the parent: the
// benchmark's own (-role=sync) or pgbisync.
type syncProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *bytes.Buffer
	lines  chan string
	done   chan error
	mu     sync.Mutex
	result string
	// exited and exitErr: terminate has run, and what it returned
	// (guarded by stopMu).
	stopMu  sync.Mutex
	exited  bool
	exitErr error
}

// startSync re-executes the benchmark binary as the sync process and
// waits until it is streaming.
func startSync(ctx context.Context, cfg childConfig) (*syncProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	enc, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, childArgs...)
	cmd.Env = append(os.Environ(), "DUPLEX_BENCH_CHILD="+string(enc))
	return startProc(ctx, cmd, "READY", cfg.Verbose)
}

// startProc starts cmd as a sync process and waits until it prints the
// line ready on stdout (up to 2 minutes). Its stderr is kept for error
// messages (and shown with verbose); a line "RESULT ..." on its stdout is
// kept for stop.
func startProc(ctx context.Context, cmd *exec.Cmd, ready string, verbose bool) (*syncProc, error) {
	// The sync dies with the benchmark, whatever kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	p := &syncProc{cmd: cmd, stderr: &bytes.Buffer{}, lines: make(chan string, 16), done: make(chan error, 1)}
	cmd.Stderr = &lockedWriter{w: p.stderr, mu: &p.mu}
	if verbose {
		cmd.Stderr = io.MultiWriter(os.Stderr, cmd.Stderr)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sync process: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if r, ok := strings.CutPrefix(line, "RESULT "); ok {
				p.mu.Lock()
				p.result = r
				p.mu.Unlock()
				continue
			}
			select {
			case p.lines <- line:
			default:
			}
		}
		p.done <- cmd.Wait()
	}()
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	for {
		select {
		case line := <-p.lines:
			if line == ready {
				return p, nil
			}
		case err := <-p.done:
			p.done <- err
			return nil, fmt.Errorf("sync process exited before it was ready: %v: %s", err, p.stderrText())
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), p.terminate())
		case <-timeout.C:
			return nil, errors.Join(fmt.Errorf("sync process not ready after 2m: %s", p.stderrText()), p.terminate())
		}
	}
}

// stderrText returns the end of what the process wrote on stderr.
func (p *syncProc) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stderr.String()
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

// release lets a sync started with Hold stream.
func (p *syncProc) release() error {
	if _, err := io.WriteString(p.stdin, "GO\n"); err != nil {
		return fmt.Errorf("release the sync process: %w", err)
	}
	return nil
}

// pid is the sync process's id.
func (p *syncProc) pid() int { return p.cmd.Process.Pid }

// terminate asks the sync process to stop (SIGTERM), kills it after 60 s,
// and returns an error unless it exited with status 0. It is safe to call
// more than once.
func (p *syncProc) terminate() error {
	// Not p.mu: the process's output goroutines take that one until it
	// exits.
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.exited {
		return p.exitErr
	}
	// An error here means the process is gone already: its exit status
	// tells.
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-p.done:
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill() // the exit status below says what happened
		err = fmt.Errorf("did not stop within 60s; killed (%v)", <-p.done)
	}
	p.exited = true
	if err != nil {
		p.exitErr = fmt.Errorf("sync process: %w: %s", err, p.stderrText())
	}
	return p.exitErr
}

// stop stops the benchmark's own sync process (terminate) and returns the
// result it printed.
func (p *syncProc) stop() (childResult, error) {
	var r childResult
	if err := p.terminate(); err != nil {
		return r, err
	}
	p.mu.Lock()
	res := p.result
	p.mu.Unlock()
	if res == "" {
		return r, fmt.Errorf("sync process printed no result: %s", p.stderrText())
	}
	return r, json.Unmarshal([]byte(res), &r)
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// startCPUProfile starts writing this process's CPU profile to path and
// returns what stops it and closes the file.
func startCPUProfile(path string) (func() error, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(fmt.Errorf("cpu profile: %w", err), f.Close())
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}
