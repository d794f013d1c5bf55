package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/cachewire/cachewire/client"
)

// nearClient returns a client of the node at addr with a near cache, once it is in sync and
// answers every one of keys in process (each read once through the node to fill it).
func (r *runner) nearClient(ctx context.Context, addr string, keys []string) (*client.Cache, error) {
	nc, err := client.NewCache(addr, client.WithTimeout(10*time.Second),
		client.WithNearCache(client.NearCacheConfig{MaxEntries: 2 * len(keys), Logger: r.log}))
	if err != nil {
		return nil, err
	}
	if err := waitNear(ctx, []*client.Cache{nc}); err != nil {
		nc.Close()
		return nil, err
	}
	for _, k := range keys {
		if _, err := nc.Get(ctx, k); err != nil {
			nc.Close()
			return nil, err
		}
		if it, err := nc.Get(ctx, k); err != nil || it.Tier != client.TierNear {
			nc.Close()
			return nil, fmt.Errorf("near cache: %s not answered in process after its fill: %+v, %v", k, it, err)
		}
	}
	return nc, nil
}

// nearHits measures near-cache hits of random keys from conc workers for d; every read must be
// answered in process.
func nearHits(ctx context.Context, nc *client.Cache, keys []string, conc int, d time.Duration) (measured, error) {
	return measure(ctx, conc, d, func(rng *rand.Rand) error {
		it, err := nc.Get(ctx, keys[rng.IntN(len(keys))])
		if err == nil && it.Tier != client.TierNear {
			err = fmt.Errorf("near cache: %s answered by %s, not in process", it.Key, it.Tier)
		}
		return err
	})
}

// allocsPerOp counts heap allocations per call of op over n calls on one goroutine. The whole
// process counts, so the node's own background work (fetches, heartbeats) shows as a fraction;
// client's TestNearCacheHitAllocatesNothing checks the near-cache hit alone, exactly.
func allocsPerOp(n int, op func(i int)) float64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range n {
		op(i)
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n)
}

// addNearRows reports near-cache hits (near) for concurrency conc beside go-redis GET (redisOps),
// rueidis DoCache hits (rd, when measured) and the sidecar Get (sidecar).
func (r *runner) addNearRows(conc int, near measured, redisOps float64, redisLat Summary, rd *measured, sidecar measured) {
	caseName := fmt.Sprintf("near-cache hit, concurrency %d", conc)
	row := Row{Scenario: "cached read", Case: caseName, Metric: "throughput", Unit: "ops/s", Cachewire: near.ops,
		Anchor: "go-redis GET", AnchorVal: redisOps}
	if conc == 16 {
		row.Goal, row.Met = "≥ 100× Redis", met(near.ops >= 100*redisOps)
	}
	r.rep.add(row)
	r.rep.add(Row{Scenario: "cached read", Case: caseName, Metric: "p99 latency", Unit: "ns", Cachewire: float64(near.lat.P99),
		Anchor: "go-redis GET", AnchorVal: float64(redisLat.P99)})
	if rd != nil {
		r.rep.add(Row{Scenario: "cached read", Case: caseName, Metric: "throughput", Unit: "ops/s", Cachewire: near.ops,
			Anchor: "rueidis DoCache hit", AnchorVal: rd.ops, Goal: "≥ rueidis", Met: met(near.ops >= rd.ops)})
		r.rep.add(Row{Scenario: "cached read", Case: caseName, Metric: "p99 latency", Unit: "ns", Cachewire: float64(near.lat.P99),
			Anchor: "rueidis DoCache hit", AnchorVal: float64(rd.lat.P99)})
	}
	r.rep.add(Row{Scenario: "cached read", Case: caseName, Metric: "throughput", Unit: "ops/s", Cachewire: near.ops,
		Anchor: "sidecar gRPC Get", AnchorVal: sidecar.ops})
}
