package node

import (
	"context"
	"errors"
	"fmt"
	"github.com/cachewire/cachewire/lru"
	"time"

	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// Errors the read path returns; service.go maps them to gRPC codes.
var (
	errNotReady          = errors.New("node is starting: not yet positioned at the log end of every partition")
	errInvalidArgument   = errors.New("invalid argument")
	errOriginUnavailable = errors.New("origin unavailable")
	errOriginBehind      = errors.New("origin is behind the requested min_version")
)

// loaded is the answer to one read.
type loaded struct {
	value     []byte
	version   uint64
	found     bool
	tier      pb.Tier
	stale     bool
	freshAsOf time.Time
}

// freshAsOf returns when the node was last caught up with the log end of every partition that
// can hold key (one per topic), or the zero time if it never was.
func (n *Node) freshAsOf(key string) time.Time {
	var oldest time.Time
	for i, topic := range n.cfg.Topics {
		parts := n.sub.NumPartitions(topic)
		if parts == 0 {
			return time.Time{}
		}
		st, ok := n.sub.Partition(topic, invalidation.PartitionFor(key, parts))
		if !ok || st.CaughtUpAt.IsZero() {
			return time.Time{}
		}
		if i == 0 || st.CaughtUpAt.Before(oldest) {
			oldest = st.CaughtUpAt
		}
	}
	return oldest
}

// get is the read path: L1, then (inside one shared flight per key) L1 again, L2 and the origin.
func (n *Node) get(ctx context.Context, key string, minVersion uint64) (loaded, error) {
	if !n.ready.Load() {
		return loaded{}, errNotReady
	}
	asOf := n.freshAsOf(key)
	fresh := !asOf.IsZero() && time.Since(asOf) <= n.cfg.MaxStaleness
	if fresh {
		if r, ok := n.fromL1(key, minVersion, asOf); ok {
			return r, nil
		}
	} else if n.cfg.Loader == nil {
		// Cache-aside and the node cannot vouch for its tiers: say so rather than hide it.
		return n.stale(ctx, key, minVersion, asOf), nil
	}

	r, _, err := n.flight.do(ctx, key, func(lctx context.Context) (loaded, error) {
		return n.load(lctx, key, minVersion, fresh, asOf)
	})
	if err == nil && r.found && r.version < minVersion {
		// The shared load served a caller that asked for less: load again for this one.
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		r, err = n.load(lctx, key, minVersion, fresh, asOf)
	}
	if err != nil && !fresh && errors.Is(err, errOriginUnavailable) {
		// Neither Kafka nor the origin can vouch: serve what is cached, marked stale.
		if c := n.stale(ctx, key, minVersion, asOf); c.found {
			return c, nil
		}
	}
	return r, err
}

func (n *Node) fromL1(key string, minVersion uint64, asOf time.Time) (loaded, bool) {
	it, ok := n.l1.Get(key)
	if !ok || it.Version < minVersion {
		n.m.tierReads.WithLabelValues("l1", "miss").Inc()
		return loaded{}, false
	}
	n.m.tierReads.WithLabelValues("l1", "hit").Inc()
	return loaded{value: it.Value, version: it.Version, found: !it.Missing, tier: pb.Tier_TIER_L1, freshAsOf: asOf}, true
}

// stale answers from whatever tier holds key, marked stale: the newer of L1 and L2, so that
// stale answers at least never go back behind what this node has served; found=false when
// neither holds it.
func (n *Node) stale(ctx context.Context, key string, minVersion uint64, asOf time.Time) loaded {
	n.staleReads.Add(1)
	n.m.staleReads.Inc()
	best := loaded{stale: true, freshAsOf: asOf}
	if it, ok := n.l1.Get(key); ok && it.Version >= minVersion {
		best = loaded{value: it.Value, version: it.Version, found: !it.Missing, tier: pb.Tier_TIER_L1, stale: true, freshAsOf: asOf}
	}
	if n.l2 != nil {
		tok := n.l1.BeginFill()
		if e, found, err := n.l2.Get(ctx, key); err == nil && found && e.Version >= minVersion && (best.tier == pb.Tier_TIER_UNSPECIFIED || e.Version > best.version) {
			best = loaded{value: e.Value, version: e.Version, found: !e.Missing, tier: pb.Tier_TIER_L2, stale: true, freshAsOf: asOf}
			// Keep L1 at least as new as what was served (the version rule still applies).
			if e.Missing {
				n.l1.FillMissing(key, e.Version, tok)
			} else {
				n.l1.Fill(key, e.Version, e.Value, tok)
			}
		}
	}
	return best
}

// load runs inside the flight for key, on a context that ends when every waiting request gave up.
func (n *Node) load(ctx context.Context, key string, minVersion uint64, fresh bool, asOf time.Time) (loaded, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.LoaderTimeout)
	defer cancel()
	tok := n.l1.BeginFill() // before any read below: a fill older than an event seen meanwhile is refused
	if fresh {
		if r, ok := n.fromL1(key, minVersion, asOf); ok { // another flight may have filled it
			return r, nil
		}
		if r, ok := n.fromL2(ctx, key, minVersion, asOf, tok); ok {
			return r, nil
		}
	}
	if n.cfg.Loader == nil {
		return loaded{freshAsOf: asOf}, nil // cache-aside miss: the application loads and calls Set
	}
	res, err := n.cfg.Loader.Load(ctx, key)
	n.loads.Add(1)
	if err != nil {
		n.m.loads.WithLabelValues("error").Inc()
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
			return loaded{}, ctx.Err()
		}
		return loaded{}, fmt.Errorf("%w: %w", errOriginUnavailable, err)
	}
	now := time.Now()
	if !res.Found {
		n.m.loads.WithLabelValues("not_found").Inc()
		n.fillMissing(ctx, key, res.Version, tok)
		return loaded{version: res.Version, tier: pb.Tier_TIER_ORIGIN, freshAsOf: now}, nil
	}
	n.m.loads.WithLabelValues("found").Inc()
	if res.Version < minVersion {
		return loaded{}, fmt.Errorf("%w: origin has version %d, request wants at least %d", errOriginBehind, res.Version, minVersion)
	}
	n.fill(ctx, key, res.Version, res.Value, tok)
	return loaded{value: res.Value, version: res.Version, found: true, tier: pb.Tier_TIER_ORIGIN, freshAsOf: now}, nil
}

// fromL2 serves key from Redis when it holds a new enough version that L1 also accepts: an L2
// value older than a version L1 has already seen (Redis lagging behind the event stream) is not
// served.
func (n *Node) fromL2(ctx context.Context, key string, minVersion uint64, asOf time.Time, tok lru.FillToken) (loaded, bool) {
	if n.l2 == nil {
		return loaded{}, false
	}
	if !n.l2Fresh(key) {
		// Redis may be behind what this node already applied: do not serve from it.
		n.m.tierReads.WithLabelValues("l2", "behind").Inc()
		return loaded{}, false
	}
	e, found, err := n.l2.Get(ctx, key)
	if err != nil {
		n.log.Debug("L2 read failed; continuing without it", "key", key, "err", err)
		return loaded{}, false
	}
	if !found || e.Version < minVersion {
		n.m.tierReads.WithLabelValues("l2", "miss").Inc()
		return loaded{}, false
	}
	var ok bool
	if e.Missing {
		ok = n.l1.FillMissing(key, e.Version, tok)
	} else {
		ok = n.l1.Fill(key, e.Version, e.Value, tok)
	}
	if !ok {
		n.m.staleFills.WithLabelValues("l1").Inc()
		n.m.tierReads.WithLabelValues("l2", "miss").Inc()
		return loaded{}, false
	}
	n.m.tierReads.WithLabelValues("l2", "hit").Inc()
	return loaded{value: e.Value, version: e.Version, found: !e.Missing, tier: pb.Tier_TIER_L2, freshAsOf: asOf}, true
}

// fill stores a value read from the origin in both tiers, each under its version rule.
func (n *Node) fill(ctx context.Context, key string, version uint64, value []byte, tok lru.FillToken) bool {
	ok := n.l1.Fill(key, version, value, tok)
	if !ok {
		n.m.staleFills.WithLabelValues("l1").Inc()
	}
	if n.l2 != nil {
		acc, err := n.l2.Fill(ctx, key, version, value)
		if err == nil && !acc {
			n.m.staleFills.WithLabelValues("l2").Inc()
			ok = false
		}
	}
	return ok
}

func (n *Node) fillMissing(ctx context.Context, key string, version uint64, tok lru.FillToken) {
	if !n.l1.FillMissing(key, version, tok) {
		n.m.staleFills.WithLabelValues("l1").Inc()
	}
	if n.l2 != nil {
		if acc, err := n.l2.FillMissing(ctx, key, version); err == nil && !acc {
			n.m.staleFills.WithLabelValues("l2").Inc()
		}
	}
}
