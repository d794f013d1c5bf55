package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachewire/cachewire/client"
)

// read: L1 hits through a node over gRPC, against go-redis GET of the same values from the same
// Redis, rueidis DoCache hits of them (client-side caching; skipped when the Redis cannot track,
// as miniredis cannot) and a bare grpc-go unary echo (the transport floor), at concurrency 1 and
// 16; and BatchGet of 16 keys against MGET.
func (r *runner) read(ctx context.Context) error {
	c, err := r.cluster(ctx, 1, 3)
	if err != nil {
		return err
	}
	defer c.Close()
	keys := r.n(10_000, 200)
	value := make([]byte, 100)
	cache, err := client.NewCache(c.NodeAddrs[0], client.WithTimeout(10*time.Second))
	if err != nil {
		return err
	}
	defer cache.Close()
	// The anchor speaks TLS like the tier but logs in as the default user: MGET is no command of
	// the tier, so the tier's ACL user may not run it.
	rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr, PoolSize: 64, TLSConfig: r.cfg.RedisTLS})
	defer rdb.Close()
	anchorKey := func(i int) string { return r.prefix + ":anchor:" + strconv.Itoa(i) }
	anchorKeys := make([]string, keys)
	for i := range keys {
		if _, err := cache.Set(ctx, "k:"+strconv.Itoa(i), value, 1); err != nil {
			return err
		}
		anchorKeys[i] = anchorKey(i)
		if err := rdb.Set(ctx, anchorKeys[i], value, time.Hour).Err(); err != nil {
			return err
		}
	}
	// The floor is plaintext like the node, which the bench runs without TLS.
	echo, err := startEcho(value)
	if err != nil {
		return err
	}
	defer echo.Close()
	rueidisOK := true
	cacheKeys := make([]string, keys)
	for i := range cacheKeys {
		cacheKeys[i] = "k:" + strconv.Itoa(i)
	}
	near, err := r.nearClient(ctx, c.NodeAddrs[0], cacheKeys)
	if err != nil {
		return err
	}
	defer near.Close()
	d := r.cfg.Duration
	for _, conc := range []int{1, 16} {
		n, lat, err := drive(ctx, conc, d, func(rng *rand.Rand) error {
			it, err := cache.Get(ctx, "k:"+strconv.Itoa(rng.IntN(keys)))
			if err == nil && it.Tier != client.TierL1 {
				err = fmt.Errorf("read served from %s, not L1", it.Tier)
			}
			return err
		})
		if err != nil {
			return err
		}
		an, alat, err := drive(ctx, conc, d, func(rng *rand.Rand) error {
			return rdb.Get(ctx, anchorKey(rng.IntN(keys))).Err()
		})
		if err != nil {
			return err
		}
		s, as := lat.Summarize(), alat.Summarize()
		tput, atput := float64(n)/d.Seconds(), float64(an)/d.Seconds()
		caseName := fmt.Sprintf("Get, concurrency %d", conc)
		r.progress("  %s: cachewire %.0f ops/s %v | redis GET %.0f ops/s %v", caseName, tput, s, atput, as)
		r.rep.addDist("cached read", caseName, "cachewire Get (L1)", false, lat)
		r.rep.addDist("cached read", caseName, "go-redis GET", true, alat)
		r.rep.add(Row{Scenario: "cached read", Case: caseName, Metric: "throughput", Unit: "ops/s", Cachewire: tput,
			Anchor: "go-redis GET", AnchorVal: atput, Goal: "≥ 1.0× Redis", Met: met(tput >= atput)})
		for _, p := range []struct {
			name   string
			v, a   time.Duration
			isGoal bool
		}{{"p50", s.P50, as.P50, false}, {"p99", s.P99, as.P99, true}, {"p999", s.P999, as.P999, false}} {
			row := Row{Scenario: "cached read", Case: caseName, Metric: p.name + " latency", Unit: "ns",
				Cachewire: float64(p.v), Anchor: "go-redis GET", AnchorVal: float64(p.a)}
			if p.isGoal {
				row.Goal, row.Met = "≤ Redis p99", met(p.v <= p.a)
			}
			r.rep.add(row)
		}
		var rd *measured
		if rueidisOK {
			a, err := rueidisHits(ctx, c.RedisAddr, r.cfg.RedisTLS, anchorKeys, conc, d)
			switch {
			case errors.Is(err, errNoClientCache):
				r.progress("  rueidis DoCache: skipped: %v", err)
				rueidisOK = false
			case err != nil:
				return err
			default:
				r.progress("  %s: rueidis DoCache hit %.0f ops/s %v", caseName, a.ops, a.lat)
				r.addRueidisRows(caseName, tput, s, a)
				rd = &a
			}
		}
		nh, err := nearHits(ctx, near, cacheKeys, conc, d)
		if err != nil {
			return err
		}
		r.progress("  %s: near-cache hit %.0f ops/s %v", caseName, nh.ops, nh.lat)
		r.addNearRows(conc, nh, atput, as, rd, measured{ops: tput, lat: s})
		e, err := echo.calls(ctx, anchorKeys, conc, d)
		if err != nil {
			return err
		}
		r.progress("  %s: grpc-go unary echo %.0f ops/s %v", caseName, e.ops, e.lat)
		r.addEchoRows(caseName, conc, tput, s, e)
	}
	// Allocations per near-cache hit, beside rueidis's per DoCache hit when it ran.
	nearAllocs := allocsPerOp(100_000, func(i int) { _, _ = near.Get(ctx, cacheKeys[i%keys]) })
	row := Row{Scenario: "cached read", Case: "near-cache hit", Metric: "allocations per hit", Unit: "allocs",
		Cachewire: nearAllocs, Goal: "0 (whole process counted)", Met: met(nearAllocs < 0.01)}
	if rueidisOK {
		if rc, err := rueidisClient(c.RedisAddr, r.cfg.RedisTLS); err == nil {
			ttl := d + time.Minute
			for _, k := range anchorKeys {
				rc.DoCache(ctx, rc.B().Get().Key(k).Cache(), ttl)
			}
			row.Anchor, row.AnchorVal = "rueidis DoCache hit", allocsPerOp(100_000, func(i int) {
				rc.DoCache(ctx, rc.B().Get().Key(anchorKeys[i%keys]).Cache(), ttl)
			})
			rc.Close()
		}
	}
	r.progress("  near-cache hit: %.3f allocations per hit (%s %.3f)", nearAllocs, row.Anchor, row.AnchorVal)
	r.rep.add(row)
	// BatchGet of 16 keys against MGET of 16.
	batch := func(rng *rand.Rand, f func(int) string) []string {
		ks := make([]string, 16)
		for i := range ks {
			ks[i] = f(rng.IntN(keys))
		}
		return ks
	}
	n, lat, err := drive(ctx, 16, d, func(rng *rand.Rand) error {
		_, err := cache.BatchGet(ctx, batch(rng, func(i int) string { return "k:" + strconv.Itoa(i) }))
		return err
	})
	if err != nil {
		return err
	}
	an, alat, err := drive(ctx, 16, d, func(rng *rand.Rand) error {
		return rdb.MGet(ctx, batch(rng, anchorKey)...).Err()
	})
	if err != nil {
		return err
	}
	s, as := lat.Summarize(), alat.Summarize()
	r.progress("  BatchGet 16: cachewire %.0f batches/s %v | redis MGET %.0f/s %v", float64(n)/d.Seconds(), s, float64(an)/d.Seconds(), as)
	r.rep.add(Row{Scenario: "cached read", Case: "BatchGet 16 keys, concurrency 16", Metric: "throughput", Unit: "keys/s",
		Cachewire: 16 * float64(n) / d.Seconds(), Anchor: "go-redis MGET 16", AnchorVal: 16 * float64(an) / d.Seconds()})
	r.rep.add(Row{Scenario: "cached read", Case: "BatchGet 16 keys, concurrency 16", Metric: "p99 latency", Unit: "ns",
		Cachewire: float64(s.P99), Anchor: "go-redis MGET 16", AnchorVal: float64(as.P99)})
	return nil
}
