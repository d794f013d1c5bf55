package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
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
	// inL2: Redis holds this version or a newer one (origin answers whose fill was stored, or
	// refused because Redis had newer).
	inL2 bool
	// versionless: an origin answer without a version, at the version L1 knew when the load
	// began; lease is L1's lease on it (servable while L1 still holds it), and leaseLost says
	// L1 changed meanwhile, so it was not filled and may not be served.
	versionless, leaseLost bool
	lease                  lru.Lease
	// leasedL2: read from Redis, where a versionless answer was stored under a lease; fromL2
	// filled it into L1 as such.
	leasedL2 bool
	// leasedL1: an L1 hit on a versionless answer held under a lease.
	leasedL1 bool
}

// freshAsOf returns when the node was last caught up with the log end of every partition that
// can hold key (per topic, its partition under each partition count seen, see
// Subscriber.KeyPartitions; every partition of a Debezium topic, whose records are placed by
// Debezium's own key, not the cache key), and never later than the topic's last metadata
// lookup (a partition added since is not read yet), or the zero time if it never was.
func (n *Node) freshAsOf(key string) time.Time {
	var oldest time.Time
	first := true
	older := func(t time.Time) {
		if first || t.Before(oldest) {
			oldest, first = t, false
		}
	}
	var buf [4]int
	for _, topic := range n.cfg.Topics {
		parts := n.sub.NumPartitions(topic)
		meta := n.sub.MetadataAt(topic)
		if parts == 0 || meta.IsZero() {
			return time.Time{}
		}
		older(meta)
		ps := n.sub.KeyPartitions(topic, key, buf[:0])
		if n.cfg.TopicFormats[topic].Format == invalidation.FormatDebezium {
			ps = ps[:0]
			for p := range parts {
				ps = append(ps, p)
			}
		}
		for _, p := range ps {
			st, ok := n.sub.Partition(topic, p)
			if !ok || st.CaughtUpAt.IsZero() {
				return time.Time{}
			}
			older(st.CaughtUpAt)
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
	load := func(lctx context.Context, spec loadSpec) (loaded, error) { return n.load(lctx, key, spec, asOf) }
	if n.tracer != nil {
		load = n.tracedLoad(ctx, key, asOf)
	}
	for attempt := 1; ; attempt++ {
		var seq uint64
		r, seq, err = n.flight.do(ctx, key, want, after, load)
		if err != nil {
			break
		}
		if r.miss {
			return r, nil // cache-aside: not cached, whatever min_version asks
		}
		if r.versionless && !r.leaseLost && minVersion > 0 {
			err = fmt.Errorf("%w: the request for %q wants min_version %d; reads with min_version of this key need an origin that returns versions "+
				"(a %s header, a version column, OriginService's version field)", errVersionless, key, minVersion, VersionHeader)
			break
		}
		if r.versionless && r.leaseLost {
			// L1 changed while the answer was read: it may be older than what L1 learned.
		} else if r.version < minVersion {
			if seq > arrived {
				err = n.behind(key, r, minVersion)
				break
			}
			after = arrived // the load began before this request: ask for one that begins after
			continue
		}
		if !r.leaseLost && n.keep(key, r) {
			return r, nil
		}
		// The node learned a newer version of key (or forgot one) while the load ran.
		n.m.retries.Inc()
		if attempt == maxReadAttempts {
			if st := n.l1.State(key); st.Known && st.Version > r.version && !r.versionless {
				// Either the key changed under every attempt, or the origin is behind a version
				// this node has seen (an INVALIDATE at a version the origin has not reached, an
				// origin replica that lags the events). Name both: the caller can tell.
				return loaded{}, fmt.Errorf("%w: %q: the origin answered version %d, but this node has seen version %d and serves nothing older "+
					"(the key is changing fast, or the origin is behind that version: then reads fail until it catches up or --l1-tombstone-ttl passes)",
					errChanging, key, r.version, st.Version)
			}
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

// keep records in L1 an answer about to be served and reports whether it may be served (see
// lru.Cache.Keep). An origin answer that Redis did not store opens a gap there for the key.
func (n *Node) keep(key string, r loaded) bool {
	if r.versionless || r.leasedL2 {
		// A versionless answer, filled under a lease (which also took care of Redis) or read from
		// Redis: served only while L1 still holds this very answer (another versionless answer
		// at the same version may be newer).
		return n.l1.Leased(key, r.lease)
	}
	var ok bool
	if r.tier == pb.Tier_TIER_L1 {
		ok = n.l1.Admits(key, r.version, r.tok)
	} else if ok = n.l1.Keep(key, r.version, r.value, !r.found, r.tok); ok {
		n.watchLearned(key, r.version) // near caches drop anything older, as L1 now refuses it
	}
	if ok && r.tier == pb.Tier_TIER_ORIGIN && !r.inL2 && n.l2 != nil {
		n.gaps.add(key, r.version)
	}
	return ok
}

// behind is the error for a request whose own load found the origin below its min_version.
func (n *Node) behind(key string, r loaded, minVersion uint64) error {
	if r.found {
		return fmt.Errorf("%w: origin has %q at version %d, request wants at least %d", errOriginBehind, key, r.version, minVersion)
	}
	return fmt.Errorf("%w: origin has no value for %q (deleted at version %d), request wants at least version %d", errOriginBehind, key, r.version, minVersion)
}

// fromL1 answers from L1 when it holds key at minVersion or newer, and counts the request's one
// L1 hit or miss.
func (n *Node) fromL1(key string, minVersion uint64, asOf time.Time) (loaded, bool) {
	r, ok := n.peekL1(key, minVersion, asOf)
	if ok {
		n.m.l1Hit.Inc()
	} else {
		n.m.l1Miss.Inc()
	}
	return r, ok
}

// peekL1 is fromL1 without counting: a load looking again after the request's miss was counted.
func (n *Node) peekL1(key string, minVersion uint64, asOf time.Time) (loaded, bool) {
	it, ok := n.l1.Get(key)
	if !ok || it.Version < minVersion {
		return loaded{}, false
	}
	return loaded{value: it.Value, version: it.Version, found: !it.Missing, tier: pb.Tier_TIER_L1, freshAsOf: asOf, leasedL1: it.Leased}, true
}

// stale answers from whatever tier holds key, marked stale: the newer of L1 and L2; found=false
// when neither holds it.
func (n *Node) stale(ctx context.Context, key string, minVersion uint64, asOf time.Time) loaded {
	n.staleReads.Add(1)
	n.m.staleReads.Inc()
	best := loaded{stale: true, freshAsOf: asOf}
	if it, ok := n.l1.Get(key); ok && it.Version >= minVersion {
		best = loaded{value: it.Value, version: it.Version, found: !it.Missing, tier: pb.Tier_TIER_L1, stale: true, freshAsOf: asOf}
	}
	if n.l2 != nil {
		// Not written to L1: the node cannot vouch for L2 now, and L1 must only hold what it can.
		if e, found, err := n.l2.Get(ctx, key); err == nil && found && e.Version >= minVersion && (best.tier == pb.Tier_TIER_UNSPECIFIED || e.Version > best.version) {
			best = loaded{value: e.Value, version: e.Version, found: !e.Missing, tier: pb.Tier_TIER_L2, stale: true, freshAsOf: asOf}
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
		if r, ok := n.peekL1(key, spec.floor, asOf); ok { // another flight may have filled it
			r.tok = tok
			return r, nil
		}
		lctx, span := ctx, trace.Span(nil)
		if n.l2 != nil {
			lctx, span = n.startSpan(ctx, "L2 get")
		}
		r, ok := n.fromL2(lctx, key, spec.floor, asOf, tok)
		if span != nil {
			endSpan(span, nil, attribute.Bool("cachewire.hit", ok), attribute.Int64("cachewire.version", int64(r.version)))
		}
		if ok {
			r.tok = tok
			return r, nil
		}
	}
	if n.cfg.Loader == nil {
		return loaded{freshAsOf: asOf, miss: true, tok: tok}, nil // the application loads and calls Set
	}
	var l2tok redistier.FillToken
	var l2lease redistier.Lease
	l2leased := false
	if n.l2 != nil {
		l2tok = n.l2.BeginFill(ctx, key) // before the origin read: a fill begun in an older L2 epoch is refused
		if n.leaseL2.Load() {
			var err error
			l2lease, err = n.l2.BeginLease(ctx, key)
			l2leased = err == nil
		}
	}
	lease := n.l1.BeginLease(key, tok) // for a versionless answer: what L1 holds before the origin is read
	octx, span := n.startSpan(ctx, "origin load")
	res, err := n.cfg.Loader.Load(octx, key)
	if span != nil {
		endSpan(span, err, attribute.Bool("cachewire.found", res.Found), attribute.Int64("cachewire.version", int64(res.Version)),
			attribute.Bool("cachewire.versionless", res.Versionless))
	}
	n.loads.Add(1)
	if err != nil {
		n.m.loadError.Inc()
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
			return loaded{}, ctx.Err()
		}
		return loaded{}, fmt.Errorf("%w: %w", errOriginUnavailable, err)
	}
	if err := ctx.Err(); err != nil {
		// A Loader that does not honour ctx answered after LoaderTimeout: L1 may have let go of
		// tombstones (TombstoneTTL) that this answer must be checked against. Not served.
		n.m.loadError.Inc()
		return loaded{}, fmt.Errorf("%w: the origin answered after the load's context ended: %w", errOriginUnavailable, err)
	}
	now := time.Now()
	if res.Versionless {
		return n.fillLeased(ctx, key, res, lease, l2lease, l2leased, now), nil
	}
	if !res.Found {
		n.m.loadNotFound.Inc()
		inL2 := n.fillMissing(ctx, key, res.Version, tok, l2tok)
		return loaded{version: res.Version, tier: pb.Tier_TIER_ORIGIN, freshAsOf: now, tok: tok, inL2: inL2}, nil
	}
	n.m.loadFound.Inc()
	_, inL2 := n.fill(ctx, key, res.Version, res.Value, tok, l2tok)
	return loaded{value: res.Value, version: res.Version, found: true, tier: pb.Tier_TIER_ORIGIN, freshAsOf: now, tok: tok, inL2: inL2}, nil
}

// fromL2 serves key from Redis when it holds a new enough version that L1 also accepts: an L2
// value older than a version L1 has already seen (Redis lagging behind the event stream) is not
// served.
func (n *Node) fromL2(ctx context.Context, key string, minVersion uint64, asOf time.Time, tok lru.FillToken) (loaded, bool) {
	if n.l2 == nil {
		return loaded{}, false
	}
	if !n.l2Trusted(key) || n.gaps.blocks(key) {
		// Redis may be behind what this node already applied or served: do not serve from it.
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
	var lease lru.Lease
	switch {
	case e.Leased:
		lease, ok = n.l1.FillVersionless(key, e.Version, e.Value, e.Missing, tok)
	case e.Missing:
		ok = n.l1.FillMissing(key, e.Version, tok)
	default:
		ok = n.l1.Fill(key, e.Version, e.Value, tok)
	}
	if !ok {
		n.m.staleFillL1.Inc()
		n.m.l2Miss.Inc()
		return loaded{}, false
	}
	if !e.Leased {
		n.watchLearned(key, e.Version)
	}
	n.m.l2Hit.Inc()
	return loaded{value: e.Value, version: e.Version, found: !e.Missing, tier: pb.Tier_TIER_L2, freshAsOf: asOf, leasedL2: e.Leased, lease: lease}, true
}

// fill stores a value read from the origin (or given to Set) in both tiers, each under its
// version rule, and reports whether L1 took it and whether Redis holds it (or a newer version).
// Neither tier takes it when L1 already refuses it as stale: a Redis that lost its tombstones (a
// new epoch) would otherwise take a version older than this node knows.
func (n *Node) fill(ctx context.Context, key string, version uint64, value []byte, tok lru.FillToken, l2tok redistier.FillToken) (ok, inL2 bool) {
	if !n.l1.Keep(key, version, value, false, tok) {
		n.m.staleFillL1.Inc()
		return false, false
	}
	ok = true
	inL2 = n.fillL2(ctx, key, version, func(tok redistier.FillToken) (bool, error) {
		return n.l2.Fill(ctx, tok, key, version, value)
	}, l2tok)
	return ok, inL2
}

// fillMissing caches, in both tiers, that the origin has no value for key at version, and
// reports whether Redis holds it (or a newer version).
func (n *Node) fillMissing(ctx context.Context, key string, version uint64, tok lru.FillToken, l2tok redistier.FillToken) (inL2 bool) {
	if !n.l1.Keep(key, version, nil, true, tok) {
		n.m.staleFillL1.Inc()
		return false
	}
	return n.fillL2(ctx, key, version, func(tok redistier.FillToken) (bool, error) {
		return n.l2.FillMissing(ctx, tok, key, version)
	}, l2tok)
}

func (n *Node) fillL2(_ context.Context, key string, version uint64, fill func(redistier.FillToken) (bool, error), tok redistier.FillToken) bool {
	if n.l2 == nil {
		return false
	}
	switch acc, err := fill(tok); {
	case err != nil:
		n.gaps.add(key, version) // Redis may not hold what this node may serve
		return false
	case !acc:
		n.m.staleFillL2.Inc() // Redis holds a newer version
	}
	return true
}

// fillLeased fills an answer from a versionless origin under the leases taken before the origin
// was read (Meta's leases): each tier stores it only if it still holds exactly what it held then,
// at the version it knew then, so that any later event evicts it. The answer is at least that new:
// the origin reads from the primary, and every version a tier knew was committed before the lease
// was taken. It is answered at L1's version. When Redis did not store it (no lease was taken: the
// first versionless answer; the entry changed; Redis failed) or stored it at a lower version than
// L1's, Redis may hold an older answer, so the node evicts the key there (Drop).
func (n *Node) fillLeased(ctx context.Context, key string, res Loaded, lease lru.Lease, l2 redistier.Lease, l2leased bool, now time.Time) loaded {
	n.m.versionless.Inc()
	if res.Found {
		n.m.loadFound.Inc()
	} else {
		n.m.loadNotFound.Inc()
	}
	if !n.leaseL2.Load() && n.l2 != nil {
		n.leaseL2.Store(true)
		n.log.Info("the origin answers without versions: fills go under leases, and every origin load takes one on the key's Redis entry first", "key", key)
	}
	r := loaded{value: res.Value, version: lease.Version(), found: res.Found, tier: pb.Tier_TIER_ORIGIN, freshAsOf: now, versionless: true, inL2: true}
	if !res.Found {
		r.value = nil
	}
	held, ok := n.l1.FillLeased(key, lease, r.value, !r.found)
	if !ok {
		n.m.staleFillL1.Inc()
		r.leaseLost = true
		return r
	}
	r.lease = held
	if n.l2 == nil {
		return r
	}
	stored := false
	if l2leased {
		acc, err := n.l2.FillLeased(ctx, l2, key, r.value, !r.found)
		if err == nil && !acc {
			n.m.staleFillL2.Inc()
		}
		stored = acc && err == nil && l2.Version >= r.version
	}
	if !stored {
		// Redis may hold an older answer, at this version or above, which this node would
		// serve once L1 forgets this one. Evict it there; if even that fails, never read the
		// key from Redis again (no event can say when Redis has caught up with this answer).
		if err := n.l2.Drop(ctx, key); err != nil {
			n.gaps.add(key, math.MaxUint64)
		}
	}
	return r
}

// tracedLoad is the load a request starts, in a span that is a child of the request's (the
// flight runs on the node's context, which holds no span).
func (n *Node) tracedLoad(ctx context.Context, key string, asOf time.Time) func(context.Context, loadSpec) (loaded, error) {
	parent := trace.SpanContextFromContext(ctx)
	return func(lctx context.Context, spec loadSpec) (loaded, error) {
		lctx, span := n.tracer.Start(trace.ContextWithSpanContext(lctx, parent), "load",
			trace.WithAttributes(attribute.String("cachewire.key", key), attribute.Int64("cachewire.min_version", int64(spec.floor))))
		r, err := n.load(lctx, key, spec, asOf)
		endSpan(span, err, attribute.String("cachewire.tier", tierName(r.tier)), attribute.Int64("cachewire.version", int64(r.version)))
		return r, err
	}
}

// startSpan starts a child span of ctx's, or returns a nil span when the node traces nothing.
func (n *Node) startSpan(ctx context.Context, name string) (context.Context, trace.Span) {
	if n.tracer == nil {
		return ctx, nil
	}
	return n.tracer.Start(ctx, name)
}

// endSpan ends span with attrs, recording err when there is one.
func endSpan(span trace.Span, err error, attrs ...attribute.KeyValue) {
	span.SetAttributes(attrs...)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}

// tierName is the tier's name in spans: L1, L2, origin, or none.
func tierName(t pb.Tier) string {
	switch t {
	case pb.Tier_TIER_L1:
		return "L1"
	case pb.Tier_TIER_L2:
		return "L2"
	case pb.Tier_TIER_ORIGIN:
		return "origin"
	}
	return "none"
}
