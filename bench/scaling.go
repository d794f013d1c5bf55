package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cachewire/cachewire/lru"
)

// scaling: L1 hit latency (in process) as the key count grows, against a Go map behind a
// RWMutex. Propagation against node count and apply rate against partitions are in their own
// scenarios.
func (r *runner) scaling(context.Context) error {
	sizes := []int{1_000, 10_000, 100_000, 1_000_000}
	if r.cfg.Smoke {
		sizes = []int{1_000, 10_000}
	}
	value := make([]byte, 100)
	for _, n := range sizes {
		c, _ := lru.New(lru.Config{MaxEntries: n, MaxBytes: int64(n) * 1024})
		m := make(map[string][]byte, n)
		var mu sync.RWMutex
		keys := make([]string, n)
		tok := c.BeginFill()
		for i := range n {
			keys[i] = fmt.Sprintf("key:%08d", i)
			c.Fill(keys[i], 1, value, tok)
			m[keys[i]] = value
		}
		ops := r.n(2_000_000, 100_000)
		rng := rand.New(rand.NewPCG(1, 2))
		idx := make([]int, 4096)
		for i := range idx {
			idx[i] = rng.IntN(n)
		}
		start := time.Now()
		for i := range ops {
			if _, ok := c.Get(keys[idx[i&4095]]); !ok {
				return errors.New("L1 miss in the scaling scenario")
			}
		}
		l1 := float64(time.Since(start).Nanoseconds()) / float64(ops)
		start = time.Now()
		for i := range ops {
			mu.RLock()
			_ = m[keys[idx[i&4095]]]
			mu.RUnlock()
		}
		anchor := float64(time.Since(start).Nanoseconds()) / float64(ops)
		r.progress("  %d keys: L1 Get %.0f ns, map+RWMutex %.0f ns", n, l1, anchor)
		r.rep.add(Row{Scenario: "scaling", Case: fmt.Sprintf("%d keys", n), Metric: "L1 Get hit (in process), mean", Unit: "ns",
			Cachewire: l1, Anchor: "Go map + RWMutex", AnchorVal: anchor})
	}
	return nil
}
