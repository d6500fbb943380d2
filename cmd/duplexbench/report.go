package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// results is what a benchmark invocation measured.
type results struct {
	started time.Time
	took    time.Duration
	command string
	o       options
	z       sizes
	ws      []*workloadResult
}

// workloadResult holds the values of each metric per variant over the
// runs, and the errors of failed runs.
type workloadResult struct {
	w      workload
	values map[string]map[string][]float64 // variant -> metric -> runs
	errors map[string][]string             // variant -> errors
}

// cell formats the median and spread of a metric of a variant.
func (wr *workloadResult) cell(variant, key string) (string, summary) {
	vs := wr.values[variant][key]
	if len(vs) == 0 {
		return "–", summary{}
	}
	s := summarize(vs)
	mark := ""
	if slices.ContainsFunc(wr.values[variant]["incomplete"], func(x float64) bool { return x != 0 }) {
		mark = " †"
	}
	if s.N == 1 {
		return num(s.Median) + mark, s
	}
	return fmt.Sprintf("%s [%s–%s]%s", num(s.Median), num(s.Min), num(s.Max), mark), s
}

// markdown renders the results as a BENCHMARKS.md section.
func (r *results) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Run of %s UTC\n\n", r.started.Format("2006-01-02 15:04"))
	fmt.Fprintf(&b, "- Machine: %s\n", machine())
	fmt.Fprintf(&b, "- PostgreSQL: %s\n", pgVersion(r.o.pg))
	fmt.Fprintf(&b, "- Command: `%s` (took %s)\n", r.command, r.took.Round(time.Second))
	if r.o.lateral {
		b.WriteString("- **Diagnostic: every duplex sync ran with -lateral-ledger** (the benchmark's rewrite of the ledger query, cmd/duplexbench/ledgerfix.go), not the library as shipped.\n")
	}
	fmt.Fprintf(&b, "- Runs per system: %d, alternated; cells are median [min–max] over the runs.\n", r.o.runs)
	oneWay, twoWay := r.byMode()
	if len(oneWay) > 0 {
		fmt.Fprintf(&b, "- Sizes: %d seeded rows, %d updates in %d-row transactions, %d single-row transactions from %d clients, %d-row transaction, %d rows onboarded, steady phases of %s.\n",
			r.z.seed, r.z.updates, r.z.txRows, r.z.small, r.z.clients, r.z.big, r.z.onboard, r.z.steady)
	}
	if len(twoWay) > 0 {
		fmt.Fprintf(&b, "- Two-way sizes: %d seeded customers; %d updates in %d-row transactions and %d one-row transactions from %d clients written while the sync is stopped; %d rows/s offered per side for %s; contention on %d keys at %d rows/s per side; %d-row insert transaction. pgbisync ran with its default flags (-a, -b, -name, -tables, -log-level warn).\n",
			r.z.seed, r.z.updates, r.z.txRows, r.z.biSmall, r.z.biClients, r.z.biRate, r.z.biSteady, r.z.contKeys, r.z.contRate, r.z.big)
	}
	b.WriteString("\n")
	if len(oneWay) > 0 {
		r.oneWayTable(&b, oneWay)
	}
	if len(twoWay) > 0 {
		if len(oneWay) > 0 {
			b.WriteString("\n")
		}
		twoWayTable(&b, twoWay)
	}
	r.tail(&b)
	return b.String()
}

// byMode splits the workload results into those of the one-way and the
// two-way mode.
func (r *results) byMode() (oneWay, twoWay []*workloadResult) {
	for _, wr := range r.ws {
		if wr.w.mode == modeTwoWay {
			twoWay = append(twoWay, wr)
		} else {
			oneWay = append(oneWay, wr)
		}
	}
	return oneWay, twoWay
}

// oneWayTable writes the one-way table: each metric of A and B, B/A.
func (r *results) oneWayTable(b *strings.Builder, ws []*workloadResult) {
	b.WriteString("| workload | metric | A | A value | B | B value | ratio B/A | target |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, wr := range ws {
		base := wr.w.variants[0]
		cand := wr.w.variants[len(wr.w.variants)-1]
		for _, m := range wr.w.metrics {
			if len(wr.w.variants) == 1 {
				c, _ := wr.cell(cand, m.key)
				fmt.Fprintf(b, "| %s | %s | – | – | %s | %s | – | %s |\n", wr.w.name, m.label, cand, c, m.target)
				continue
			}
			bc, bs := wr.cell(base, m.key)
			cc, cs := wr.cell(cand, m.key)
			ratio := "–"
			if bs.N > 0 && cs.N > 0 && bs.Median != 0 {
				ratio = fmt.Sprintf("%.2f", cs.Median/bs.Median)
			}
			if m.key == "rss_mb" {
				bc, ratio = "n/a", "–"
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", wr.w.name, m.label, base, bc, cand, cc, ratio, m.target)
		}
	}
}

// twoWayTable writes the two-way table: native and pgbisync side by side,
// a ratio oriented so that above 1 means pgbisync does better
// (pgbisync/native for rates, native/pgbisync for lags and times), and the
// issue's goal with whether the medians meet it.
func twoWayTable(b *strings.Builder, ws []*workloadResult) {
	b.WriteString("Two-way: pgbisync (defaults) against native logical replication. Ratio: above 1 means pgbisync does better; rates are pgbisync/native, lags and times native/pgbisync.\n\n")
	b.WriteString("| workload | metric | native | pgbisync | ratio | goal | met |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, wr := range ws {
		for _, m := range wr.w.metrics {
			nc, ns := wr.cell(native, m.key)
			pc, ps := wr.cell(pgbisyncV, m.key)
			if !slices.Contains(wr.w.variants, native) || m.key == "rss_mb" {
				nc = "n/a"
			}
			ratio, r := "–", math.NaN()
			if ns.N > 0 && ps.N > 0 && ns.Median != 0 && ps.Median != 0 && m.key != "rss_mb" {
				if m.higher {
					r = ps.Median / ns.Median
					ratio = ratioText(r) + " pgbisync/native"
				} else {
					r = ns.Median / ps.Median
					ratio = ratioText(r) + " native/pgbisync"
				}
			}
			met := ""
			if m.met != nil && ps.N > 0 {
				met = "no"
				if m.met(ps.Median, r) {
					met = "yes"
				}
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", wr.w.name, m.label, nc, pc, ratio, m.target, met)
		}
	}
}

// ratioText formats a ratio: two decimals, or two significant digits
// below 0.1 (so that 0.004 does not print as 0.00).
func ratioText(r float64) string {
	if r < 0.1 {
		return strconv.FormatFloat(r, 'g', 2, 64)
	}
	return strconv.FormatFloat(r, 'f', 2, 64)
}

// tail writes the notes, the CPU table and the failed runs.
func (r *results) tail(b *strings.Builder) {
	if r.anyIncomplete() {
		b.WriteString("\n† at least one run had not caught up within the timeout (-timeout): rates count what had arrived by then (the full run would be slower still), lags count markers not yet arrived with their lag so far (lower bounds).\n")
	}
	b.WriteString("\nCPU seconds used during the measured phase (medians): the sync process (duplex's, or pgbisync), the walsenders of the slots, and the apply side (native: the subscription's apply worker; duplex and pgbisync: the sync's client backends).\n\n")
	b.WriteString("| workload | system | sync process | walsender(s) | apply backend(s) | total |\n|---|---|---|---|---|---|\n")
	for _, wr := range r.ws {
		for _, v := range wr.w.variants {
			if len(wr.values[v]) == 0 {
				continue
			}
			var total float64
			cells := make([]string, 3)
			for i, k := range []string{"cpu_sync_s", "cpu_walsender_s", "cpu_apply_s"} {
				c, s := wr.cell(v, k)
				if s.N == 0 {
					c = "–"
				}
				cells[i] = c
				total += s.Median
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", wr.w.name, v, cells[0], cells[1], cells[2], num(total))
		}
	}
	var failed []string
	for _, wr := range r.ws {
		for v, errs := range wr.errors {
			for _, e := range errs {
				failed = append(failed, fmt.Sprintf("- %s / %s: %s", wr.w.name, v, e))
			}
		}
	}
	if len(failed) > 0 {
		b.WriteString("\nFailed runs (left out of the medians):\n\n")
		b.WriteString(strings.Join(failed, "\n"))
		b.WriteString("\n")
	}
}

// machine describes the host: CPU model, cores, memory, kernel load.
func machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		_ = f.Close()
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kb, err := parseStatusKB(string(b), "MemTotal"); err == nil {
			mem = fmt.Sprintf(", %.0f GB RAM", float64(kb)/(1<<20))
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			load = fmt.Sprintf(", load average at the end %s %s %s", f[0], f[1], f[2])
		}
	}
	return fmt.Sprintf("%s, %d cores%s, %s/%s, %s%s", model, runtime.NumCPU(), mem, runtime.GOOS, runtime.GOARCH, runtime.Version(), load)
}

// pgVersion returns the server's version string.
func pgVersion(url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := newCluster(ctx, url)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer c.admin.Close()
	var v string
	if err := c.admin.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	var sc, sb string
	_ = c.admin.QueryRow(ctx, "SELECT current_setting('synchronous_commit'), current_setting('shared_buffers')").Scan(&sc, &sb)
	return fmt.Sprintf("%s (synchronous_commit=%s, shared_buffers=%s)", v, sc, sb)
}

// anyIncomplete reports whether some run did not catch up in time.
func (r *results) anyIncomplete() bool {
	for _, wr := range r.ws {
		for _, m := range wr.values {
			if slices.ContainsFunc(m["incomplete"], func(x float64) bool { return x != 0 }) {
				return true
			}
		}
	}
	return false
}
