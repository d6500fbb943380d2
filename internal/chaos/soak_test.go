package chaos_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSoak runs pgbisync for DUPLEX_SOAK_DURATION (10m) at
// DUPLEX_SOAK_RATE (1,000) writes/s per side, SIGKILLing and restarting it
// every DUPLEX_SOAK_KILL_EVERY (2m), sampling its memory and lag every 10 s,
// and requires convergence at the end. make soak runs it; it is skipped
// otherwise.
func TestSoak(t *testing.T) {
	if os.Getenv("DUPLEX_SOAK") != "1" {
		t.Skip("set DUPLEX_SOAK=1 (make soak)")
	}
	dur := envDuration(t, "DUPLEX_SOAK_DURATION", 10*time.Minute)
	killEvery := envDuration(t, "DUPLEX_SOAK_KILL_EVERY", 2*time.Minute)
	rate := 1000
	if s := os.Getenv("DUPLEX_SOAK_RATE"); s != "" {
		var err error
		rate, err = strconv.Atoi(s)
		require.NoError(t, err)
	}
	e := newEnv(t, 5000)
	p := e.start()
	w := e.writeN(rate, 4, [2]time.Duration{})
	start := time.Now()
	lastKill := start
	kills := 0
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	var samples []string
	var maxRSS, maxLag float64
	for time.Since(start) < dur {
		<-tick.C
		if time.Since(lastKill) >= killEvery {
			p.kill()
			p = e.start()
			kills++
			lastKill = time.Now()
		}
		rss := rssMB(p.cmd.Process.Pid)
		lag := max(metricValue(t, e.admin, `duplex_sync_lag_seconds{direction="a_to_b"}`), metricValue(t, e.admin, `duplex_sync_lag_seconds{direction="b_to_a"}`))
		maxRSS, maxLag = max(maxRSS, rss), max(maxLag, lag)
		s := fmt.Sprintf("t=%3.0fs rss=%.0fMB lag=%.3fs applied=%.0f", time.Since(start).Seconds(), rss, lag, metricSum(t, e.admin, "duplex_changes_applied_total"))
		samples = append(samples, s)
		t.Log(s)
	}
	writes := w.halt()
	v := e.converge(p)
	t.Logf("SOAK %s at %d writes/s per side, %d kills: %s; %s; peak RSS %.0f MB, max lag %.2fs\n%s",
		dur, rate, kills, writes, v, maxRSS, maxLag, strings.Join(samples, "\n"))
	p.stop(t)
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	require.NoError(t, err, name)
	return d
}

// rssMB reads a process's resident set size.
func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// metricValue reads one sample (name with its labels, as exposed).
func metricValue(t *testing.T, admin, sample string) float64 {
	for line := range strings.SplitSeq(httpGet(t, "http://"+admin+"/metrics"), "\n") {
		if strings.HasPrefix(line, sample+" ") {
			x, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return x
		}
	}
	return 0
}
