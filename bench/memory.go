package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/cachewire/cachewire/lru"
)

// memory: heap bytes per L1 entry of a 100-byte value (and the overhead beyond key and value),
// against a Go map[string][]byte of the same data; and the process RSS.
func (r *runner) memory(context.Context) error {
	for _, n := range []int{r.n(100_000, 10_000), r.n(1_000_000, 20_000)} {
		keyLen := len(fmt.Sprintf("key:%08d", 0))
		per, rss := measureHeap(n, func() any {
			c, _ := lru.New(lru.Config{MaxEntries: n, MaxBytes: int64(n) * 1024, MaxTombstones: 1})
			tok := c.BeginFill()
			for i := range n {
				c.Fill(fmt.Sprintf("key:%08d", i), 1, make([]byte, 100), tok)
			}
			return c
		})
		anchor, _ := measureHeap(n, func() any {
			m := make(map[string][]byte)
			for i := range n {
				m[fmt.Sprintf("key:%08d", i)] = make([]byte, 100)
			}
			return m
		})
		payload := float64(keyLen + 100)
		caseName := fmt.Sprintf("%d entries of 100 B", n)
		r.progress("  %s: %.0f B/entry (overhead %.0f B), map %.0f B/entry, RSS %.0f MiB", caseName, per, per-payload, anchor, rss/(1<<20))
		r.rep.add(Row{Scenario: "memory", Case: caseName, Metric: "heap per entry", Unit: "B", Cachewire: per,
			Anchor: "Go map[string][]byte", AnchorVal: anchor})
		r.rep.add(Row{Scenario: "memory", Case: caseName, Metric: "overhead per entry beyond key+value", Unit: "B",
			Cachewire: per - payload, Anchor: "Go map[string][]byte", AnchorVal: anchor - payload, Goal: "≤ 130 B", Met: met(per-payload <= 130)})
		r.rep.add(Row{Scenario: "memory", Case: caseName, Metric: "process RSS after fill", Unit: "B", Cachewire: rss})
	}
	return nil
}

// measureHeap returns heap bytes per entry retained by what build returns, and the RSS then.
func measureHeap(n int, build func() any) (perEntry, rss float64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	rss = readRSS()
	runtime.KeepAlive(v)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n), rss
}

func readRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb * 1024
			}
		}
	}
	return 0
}
