package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

// Errors the read path returns; service.go maps them to gRPC codes.
var (
	errNotReady          = errors.New("node is starting: not yet positioned at the log end of every partition")
	errInvalidArgument   = errors.New("invalid argument")
	errOriginUnavailable = errors.New("origin unavailable")
	errOriginBehind      = errors.New("origin is behind the requested min_version")
	errChanging          = errors.New("key keeps changing")
)

// loaded is the answer to one read.
type loaded struct {
	value     []byte
	version   uint64
	found     bool
	tier      pb.Tier
	stale     bool
	freshAsOf time.Time
	// miss: cache-aside and not cached (not a statement about the key).
	miss bool
	// tok was taken before the answer was read: Admits(tok) says whether it may still be served.
	tok lru.FillToken
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

// maxReadAttempts bounds how often one request loads again because the key changed under it.
const maxReadAttempts = 4

// get is the read path: L1, then (inside a shared load per key) L1 again, L2 and the origin.
//
// Each request judges a shared load's answer by its own needs. A load may have begun before the
// request arrived, so its answer may predate a write the request must see: an answer below
// min_version (found or not) sends the request to a load that began after it arrived, and only
// an answer from such a load that is still below min_version means the origin is behind. An
// answer older than a version L1 learned while the load ran (or read before L1 was flushed or
// forgot a young version) is never served either: the request loads again, so that a node never
// goes back behind a version it served or applied.
func (n *Node) get(ctx context.Context, key string, minVersion uint64) (loaded, error) {
	if !n.ready.Load() {
		return loaded{}, errNotReady
	}
	asOf := n.freshAt(key)
	fresh := !asOf.IsZero() && time.Since(asOf) <= n.cfg.MaxStaleness
	if fresh {
		if r, ok := n.fromL1(key, minVersion, asOf); ok {
			return r, nil
		}
	} else if n.cfg.Loader == nil {
		// Cache-aside and the node cannot vouch for its tiers: say so rather than hide it.
		return n.stale(ctx, key, minVersion, asOf), nil
	}

	want := loadSpec{floor: minVersion, tiers: fresh}
	arrived := n.flight.now()
	after := uint64(0) // first, any load that serves this request, even one begun before it came
	var r loaded
	var err error
	for attempt := 1; ; attempt++ {
		var seq uint64
		r, seq, err = n.flight.do(ctx, key, want, after, func(lctx context.Context, spec loadSpec) (loaded, error) {
			return n.load(lctx, key, spec, asOf)
		})
		if err != nil {
			break
		}
		if r.miss {
			return r, nil // cache-aside: not cached, whatever min_version asks
		}
		if r.version < minVersion {
			if seq > arrived {
				err = n.behind(key, r, minVersion)
				break
			}
			after = arrived // the load began before this request: ask for one that begins after
			continue
		}
		if n.l1.Admits(key, r.version, r.tok) {
			return r, nil
		}
		// The node learned a newer version of key (or forgot one) while the load ran.
		n.m.retries.Inc()
		if attempt == maxReadAttempts {
			return loaded{}, fmt.Errorf("%w: %q changed %d times while it was being read", errChanging, key, attempt)
		}
		after = n.flight.now()
	}
	if !fresh && errors.Is(err, errOriginUnavailable) {
		// Neither Kafka nor the origin can vouch: serve what is cached, marked stale.
		if c := n.stale(ctx, key, minVersion, asOf); c.found {
			return c, nil
		}
	}
	return loaded{}, err
}

// behind is the error for a request whose own load found the origin below its min_version.
func (n *Node) behind(key string, r loaded, minVersion uint64) error {
	if r.found {
		return fmt.Errorf("%w: origin has %q at version %d, request wants at least %d", errOriginBehind, key, r.version, minVersion)
	}
	return fmt.Errorf("%w: origin has no value for %q (deleted at version %d), request wants at least version %d", errOriginBehind, key, r.version, minVersion)
}

func (n *Node) fromL1(key string, minVersion uint64, asOf time.Time) (loaded, bool) {
	it, ok := n.l1.Get(key)
	if !ok || it.Version < minVersion {
		n.m.l1Miss.Inc()
		return loaded{}, false
	}
	n.m.l1Hit.Inc()
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
// It returns the newest answer it can find at or above spec.floor, and leaves judging it against
// each request's min_version to get.
func (n *Node) load(ctx context.Context, key string, spec loadSpec, asOf time.Time) (loaded, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.LoaderTimeout)
	defer cancel()
	tok := n.l1.BeginFill() // before any read below: a fill older than an event seen meanwhile is refused
	if spec.tiers {
		if r, ok := n.fromL1(key, spec.floor, asOf); ok { // another flight may have filled it
			r.tok = tok
			return r, nil
		}
		if r, ok := n.fromL2(ctx, key, spec.floor, asOf, tok); ok {
			r.tok = tok
			return r, nil
		}
	}
	if n.cfg.Loader == nil {
		return loaded{freshAsOf: asOf, miss: true, tok: tok}, nil // the application loads and calls Set
	}
	var l2tok redistier.FillToken
	if n.l2 != nil {
		l2tok = n.l2.BeginFill(ctx, key) // before the origin read: a fill begun in an older L2 epoch is refused
	}
	res, err := n.cfg.Loader.Load(ctx, key)
	n.loads.Add(1)
	if err != nil {
		n.m.loadError.Inc()
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
			return loaded{}, ctx.Err()
		}
		return loaded{}, fmt.Errorf("%w: %w", errOriginUnavailable, err)
	}
	now := time.Now()
	if !res.Found {
		n.m.loadNotFound.Inc()
		n.fillMissing(ctx, key, res.Version, tok, l2tok)
		return loaded{version: res.Version, tier: pb.Tier_TIER_ORIGIN, freshAsOf: now, tok: tok}, nil
	}
	n.m.loadFound.Inc()
	n.fill(ctx, key, res.Version, res.Value, tok, l2tok)
	return loaded{value: res.Value, version: res.Version, found: true, tier: pb.Tier_TIER_ORIGIN, freshAsOf: now, tok: tok}, nil
}

// fromL2 serves key from Redis when it holds a new enough version that L1 also accepts: an L2
// value older than a version L1 has already seen (Redis lagging behind the event stream) is not
// served.
func (n *Node) fromL2(ctx context.Context, key string, minVersion uint64, asOf time.Time, tok lru.FillToken) (loaded, bool) {
	if n.l2 == nil {
		return loaded{}, false
	}
	if !n.l2Trusted(key) {
		// Redis may be behind what this node already applied: do not serve from it.
		n.m.l2Behind.Inc()
		return loaded{}, false
	}
	e, found, err := n.l2.Get(ctx, key)
	if err != nil {
		n.log.Debug("L2 read failed; continuing without it", "key", key, "err", err)
		return loaded{}, false
	}
	if !found || e.Version < minVersion {
		n.m.l2Miss.Inc()
		return loaded{}, false
	}
	var ok bool
	if e.Missing {
		ok = n.l1.FillMissing(key, e.Version, tok)
	} else {
		ok = n.l1.Fill(key, e.Version, e.Value, tok)
	}
	if !ok {
		n.m.staleFillL1.Inc()
		n.m.l2Miss.Inc()
		return loaded{}, false
	}
	n.m.l2Hit.Inc()
	return loaded{value: e.Value, version: e.Version, found: !e.Missing, tier: pb.Tier_TIER_L2, freshAsOf: asOf}, true
}

// fill stores a value read from the origin in both tiers, each under its version rule.
func (n *Node) fill(ctx context.Context, key string, version uint64, value []byte, tok lru.FillToken, l2tok redistier.FillToken) bool {
	ok := n.l1.Fill(key, version, value, tok)
	if !ok {
		n.m.staleFillL1.Inc()
	}
	if n.l2 != nil {
		acc, err := n.l2.Fill(ctx, l2tok, key, version, value)
		if err == nil && !acc {
			n.m.staleFillL2.Inc()
			ok = false
		}
	}
	return ok
}

func (n *Node) fillMissing(ctx context.Context, key string, version uint64, tok lru.FillToken, l2tok redistier.FillToken) {
	if !n.l1.FillMissing(key, version, tok) {
		n.m.staleFillL1.Inc()
	}
	if n.l2 != nil {
		if acc, err := n.l2.FillMissing(ctx, l2tok, key, version); err == nil && !acc {
			n.m.staleFillL2.Inc()
		}
	}
}
