package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/node"
)

// isolation: client B reads L1 hits at concurrency 1 alone, then while client A floods the same
// node at concurrency 16; once with per-client limits (A held to a rate and to requests in
// flight) and once without. B's p99 alone is the anchor of B's p99 under the flood.
func (r *runner) isolation(ctx context.Context) error {
	const tokenA, tokenB = "bench-token-of-client-a", "bench-token-of-client-b"
	keys := r.n(1_000, 100)
	value := make([]byte, 100)
	d := r.cfg.Duration
	for _, limited := range []bool{true, false} {
		c, err := r.clusterWith(ctx, 1, 3, func(_ int, nc *node.Config) {
			nc.Clients = &node.ClientsConfig{Tokens: map[string]string{tokenA: "a", tokenB: "b"}}
			if limited {
				nc.Clients.Rate, nc.Clients.Burst, nc.Clients.MaxInFlight = 100_000, 1_000, 2
			}
		})
		if err != nil {
			return err
		}
		a, err := client.NewCache(c.NodeAddrs[0], client.WithTimeout(10*time.Second), client.WithBearerToken(tokenA), client.WithRetries(0, time.Millisecond))
		if err != nil {
			c.Close()
			return err
		}
		b, err := client.NewCache(c.NodeAddrs[0], client.WithTimeout(10*time.Second), client.WithBearerToken(tokenB))
		if err != nil {
			a.Close()
			c.Close()
			return err
		}
		for i := range keys {
			if _, err := b.Set(ctx, "k:"+strconv.Itoa(i), value, 1); err != nil {
				a.Close()
				b.Close()
				c.Close()
				return err
			}
		}
		readB := func(rng *rand.Rand) error {
			_, err := b.Get(ctx, "k:"+strconv.Itoa(rng.IntN(keys)))
			return err
		}
		_, alone, err := drive(ctx, 1, d, readB)
		var under Latencies
		var flood, refused int
		if err == nil {
			fctx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			var mu sync.Mutex
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, _, _ := drive(fctx, 16, d+time.Second, func(rng *rand.Rand) error {
					_, err := a.Get(fctx, "k:"+strconv.Itoa(rng.IntN(keys)))
					if errors.Is(err, client.ErrResourceExhausted) {
						mu.Lock()
						refused++
						mu.Unlock()
						return nil
					}
					return err
				})
				flood = n
			}()
			_, under, err = drive(ctx, 1, d, readB)
			stop()
			wg.Wait()
		}
		a.Close()
		b.Close()
		c.Close()
		if err != nil {
			return err
		}
		sa, su := alone.Summarize(), under.Summarize()
		caseName := "B at concurrency 1 while A floods at 16, each client limited to 100000/s and 2 in flight"
		if !limited {
			caseName = "B at concurrency 1 while A floods at 16, no per-client limits"
		}
		r.progress("  %s: B alone %v | B under the flood %v | A sent %d, %d refused", caseName, sa, su, flood, refused)
		row := Row{Scenario: "client isolation", Case: caseName, Metric: "B's p99 latency", Unit: "ns",
			Cachewire: float64(su.P99), Anchor: "B's p99 alone", AnchorVal: float64(sa.P99)}
		if limited {
			row.Goal, row.Met = "≤ 2× alone", met(su.P99 <= 2*sa.P99)
		}
		r.rep.add(row)
		r.rep.add(Row{Scenario: "client isolation", Case: caseName, Metric: "A's requests refused", Unit: "%",
			Cachewire: 100 * float64(refused) / float64(max(flood, 1)), Anchor: fmt.Sprintf("of %d sent", flood)})
	}
	return nil
}
