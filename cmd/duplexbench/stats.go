package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// clockTicks is the kernel's USER_HZ: /proc/<pid>/stat counts CPU time in
// these. It is 100 on every Linux the benchmark targets.
const clockTicks = 100

// summary is the median and spread of one metric over the runs.
type summary struct {
	Median, Min, Max float64
	N                int
}

// summarize returns the median, minimum and maximum of vs (the mean of the
// two middle values when len(vs) is even).
func summarize(vs []float64) summary {
	if len(vs) == 0 {
		return summary{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{Median: m, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// parseStatCPU returns utime+stime, in clock ticks, from the contents of
// /proc/<pid>/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatCPU(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc stat %q: no command name", stat)
	}
	// After ")": field 3 (state) is rest[0]; utime is field 14, stime 15.
	rest := strings.Fields(stat[i+1:])
	if len(rest) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command name, want at least 13", len(rest))
	}
	utime, err := strconv.ParseInt(rest[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat field utime %q: %w", rest[11], err)
	}
	stime, err := strconv.ParseInt(rest[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat field stime %q: %w", rest[12], err)
	}
	return utime + stime, nil
}

// procCPU returns the CPU time (user+system, clock ticks) process pid has
// used so far, or an error when it is gone.
func procCPU(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatusKB returns the value in kB of field (such as "VmHWM") from the
// contents of /proc/<pid>/status.
func parseStatusKB(status, field string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		v, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		v = strings.TrimSuffix(strings.TrimSpace(v), " kB")
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc status field %s %q: %w", field, v, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("proc status: no field %s", field)
}

// procPeakRSS returns process pid's peak resident set size (VmHWM) in kB.
func procPeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusKB(string(b), "VmHWM")
}

// cpuSnapshot holds CPU ticks per process at one moment.
type cpuSnapshot map[int]int64

// snapshotCPU reads the CPU time of pids; processes already gone are left
// out.
func snapshotCPU(pids []int) cpuSnapshot {
	s := cpuSnapshot{}
	for _, p := range pids {
		if t, err := procCPU(p); err == nil {
			s[p] = t
		}
	}
	return s
}

// cpuSeconds returns the CPU seconds the processes of end used since start;
// a process absent from start started in between and counts in full.
func cpuSeconds(start, end cpuSnapshot) float64 {
	var ticks int64
	for p, t := range end {
		ticks += t - start[p]
	}
	return float64(ticks) / clockTicks
}
