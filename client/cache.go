package client

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// Tier names where a value came from.
type Tier string

// Tiers.
const (
	TierNone   Tier = ""       // nothing served it (a cache-aside miss)
	TierL1     Tier = "L1"     // the node's in-process cache
	TierL2     Tier = "L2"     // the shared Redis tier
	TierOrigin Tier = "ORIGIN" // the writer's read API
	// TierNear (near.go) is the near cache in this process.
)

func tierOf(t pb.Tier) Tier {
	switch t {
	case pb.Tier_TIER_L1:
		return TierL1
	case pb.Tier_TIER_L2:
		return TierL2
	case pb.Tier_TIER_ORIGIN:
		return TierOrigin
	}
	return TierNone
}

// Item is the answer to a read.
type Item struct {
	Key     string
	Value   []byte
	Version uint64
	// Found is false when the key has no value (Version is then its deletion's, or 0).
	Found bool
	// Tier served the value.
	Tier Tier
	// Stale is true when the node could not vouch for the value's freshness (Kafka unreachable
	// beyond its max_staleness and no origin to read through to).
	Stale bool
	// FreshAsOf is the last time the node was caught up with the key's partition (or when the
	// origin was read).
	FreshAsOf time.Time
}

func itemOf(r *pb.GetResponse) Item {
	it := Item{Key: r.GetKey(), Value: r.GetValue(), Version: r.GetVersion(), Found: r.GetFound(), Tier: tierOf(r.GetTier()),
		Stale: r.GetFreshness().GetStale()}
	if ts := r.GetFreshness().GetFreshAsOf(); ts != nil {
		it.FreshAsOf = ts.AsTime()
	}
	return it
}

// GetOption tunes one read.
type GetOption func(*pb.GetRequest)

// MinVersion asks for a value at least version v new (read-your-writes): the node serves it from
// a tier only if the tier holds v or newer, and reads the origin otherwise.
func MinVersion(v uint64) GetOption {
	return func(r *pb.GetRequest) { r.MinVersion = max(r.MinVersion, v) }
}

// Cache is a client of one cache node (CacheService). It is safe for concurrent use.
type Cache struct {
	c    *conn
	api  pb.CacheServiceClient
	near *nearCache // nil without WithNearCache
}

// NewCache returns a client for the cache node at target (for example "127.0.0.1:7070"). It
// connects lazily. With WithNearCache, it also opens the node's Watch stream, in a goroutine
// that Close stops.
func NewCache(target string, opts ...Option) (*Cache, error) {
	c, err := dial(target, pb.CacheService_ServiceDesc.ServiceName, opts)
	if err != nil {
		return nil, err
	}
	cache := &Cache{c: c, api: pb.NewCacheServiceClient(c.cc)}
	if c.o.near != nil {
		if cache.near, err = newNearCache(*c.o.near, cache.api, c.o.nearApplied); err != nil {
			_ = c.cc.Close()
			return nil, err
		}
		cache.near.open()
	}
	return cache, nil
}

// Get reads key through the node (L1, L2, origin), or from the near cache when there is one and
// it may answer. A key with no value is not an error: Found is false.
func (c *Cache) Get(ctx context.Context, key string, opts ...GetOption) (Item, error) {
	if len(opts) == 0 {
		return c.get(ctx, key, 0, nil) // no request built before the near cache is asked
	}
	req := &pb.GetRequest{Key: key}
	for _, o := range opts {
		o(req)
	}
	return c.get(ctx, key, req.GetMinVersion(), req)
}

// get reads key at minVersion; req, when not nil, is the request to send (built from options).
func (c *Cache) get(ctx context.Context, key string, minVersion uint64, req *pb.GetRequest) (Item, error) {
	var t fillTicket
	if c.near != nil {
		if it, ok := c.near.get(key, minVersion); ok {
			return it, nil
		}
		t = c.near.begin(key) // before the request: an event seen meanwhile refuses its answer
	}
	if req == nil {
		req = &pb.GetRequest{Key: key, MinVersion: minVersion}
	}
	var resp *pb.GetResponse
	err := c.c.call(ctx, "Get", true, func(ctx context.Context) (err error) {
		resp, err = c.api.Get(ctx, req)
		return err
	})
	if err != nil {
		return Item{Key: key}, err
	}
	if c.near != nil {
		c.near.fill(t, resp)
	}
	return itemOf(resp), nil
}

// BatchGet reads keys in one call; the options apply to every key. Items are in key order.
func (c *Cache) BatchGet(ctx context.Context, keys []string, opts ...GetOption) ([]Item, error) {
	reqs := make([]*pb.GetRequest, len(keys))
	for i, k := range keys {
		reqs[i] = &pb.GetRequest{Key: k}
		for _, o := range opts {
			o(reqs[i])
		}
	}
	return c.batchGet(ctx, reqs)
}

func (c *Cache) batchGet(ctx context.Context, reqs []*pb.GetRequest) ([]Item, error) {
	items := make([]Item, len(reqs))
	send, at := reqs, []int(nil) // the requests for the node, and where their answers go
	var tickets []fillTicket
	if c.near != nil {
		send = nil
		for i, r := range reqs {
			if it, ok := c.near.get(r.GetKey(), r.GetMinVersion()); ok {
				items[i] = it
				continue
			}
			send, at = append(send, r), append(at, i)
			tickets = append(tickets, c.near.begin(r.GetKey()))
		}
		if len(send) == 0 {
			return items, nil
		}
	}
	var resp *pb.BatchGetResponse
	err := c.c.call(ctx, "BatchGet", true, func(ctx context.Context) (err error) {
		resp, err = c.api.BatchGet(ctx, &pb.BatchGetRequest{Requests: send})
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(resp.GetResponses()) != len(send) {
		return nil, &Error{Method: "BatchGet", Code: codes.Internal, Message: "the node answered a different number of keys than asked"}
	}
	for i, r := range resp.GetResponses() {
		j := i
		if at != nil {
			j = at[i]
		}
		items[j] = itemOf(r)
		if c.near != nil {
			c.near.fill(tickets[i], r)
		}
	}
	return items, nil
}

// Set is a versioned cache-aside fill: after reading key at version from the system of record,
// store it in the node's tiers. It reports false when the node has already seen a newer version
// (the value was stale and was not stored). Set is idempotent and retried on Unavailable.
func (c *Cache) Set(ctx context.Context, key string, value []byte, version uint64) (bool, error) {
	var t fillTicket
	if c.near != nil {
		t = c.near.begin(key)
	}
	var resp *pb.SetResponse
	err := c.c.call(ctx, "Set", true, func(ctx context.Context) (err error) {
		resp, err = c.api.Set(ctx, &pb.SetRequest{Key: key, Value: value, Version: version})
		return err
	})
	if err == nil && resp.GetAccepted() && c.near != nil {
		// The node holds it now: so may this client's near cache, under the same rules.
		c.near.fill(t, &pb.GetResponse{Key: key, Value: value, Version: version, Found: true, Tier: pb.Tier_TIER_L1, Freshness: &pb.Freshness{}})
	}
	return resp.GetAccepted(), err
}

// Invalidate tells every node that key changed at version (the node publishes an INVALIDATE
// event): a node, or Redis, holding an older version drops it; one already at version or newer
// ignores it. It is idempotent and retried on Unavailable.
func (c *Cache) Invalidate(ctx context.Context, key string, version uint64) error {
	err := c.c.call(ctx, "Invalidate", true, func(ctx context.Context) error {
		_, err := c.api.Invalidate(ctx, &pb.InvalidateRequest{Key: key, Version: version})
		return err
	})
	if err == nil && c.near != nil {
		c.near.apply(invalidation.Event{Key: key, Version: version, Op: invalidation.OpInvalidate})
	}
	return err
}

// Evict makes every node, and Redis, drop the value held for key, keeping its version, so that
// nothing older can be filled back (the node publishes an EVICT event). It needs no version: it
// is for a value suspected wrong. It is idempotent and retried on Unavailable.
func (c *Cache) Evict(ctx context.Context, key string) error {
	err := c.c.call(ctx, "Evict", true, func(ctx context.Context) error {
		_, err := c.api.Evict(ctx, &pb.EvictRequest{Key: key})
		return err
	})
	if err == nil && c.near != nil {
		c.near.apply(invalidation.Event{Key: key, Op: invalidation.OpEvict})
	}
	return err
}

// Stats returns the node's counters and per-partition freshness.
func (c *Cache) Stats(ctx context.Context) (*pb.StatsResponse, error) {
	var resp *pb.StatsResponse
	err := c.c.call(ctx, "Stats", true, func(ctx context.Context) (err error) {
		resp, err = c.api.Stats(ctx, &pb.StatsRequest{})
		return err
	})
	return resp, err
}

// Explain reports what the node knows about key: its partitions and their freshness, whether
// the node vouches for it, what L1 and L2 hold, and the last event the node applied for it.
// With origin, the node also reads key from its origin (storing the answer nowhere) and
// reports the origin's version. It changes nothing; cachectl explain prints it.
func (c *Cache) Explain(ctx context.Context, key string, origin bool) (*pb.ExplainResponse, error) {
	var resp *pb.ExplainResponse
	err := c.c.call(ctx, "Explain", true, func(ctx context.Context) (err error) {
		resp, err = c.api.Explain(ctx, &pb.ExplainRequest{Key: key, Origin: origin})
		return err
	})
	return resp, err
}

// Health returns nil when the node reports SERVING, and an error matching ErrUnavailable when it
// is still positioning itself, draining, or unreachable.
func (c *Cache) Health(ctx context.Context) error {
	return c.c.check(ctx, pb.CacheService_ServiceDesc.ServiceName)
}

// NearStats returns the near cache's counters, and false without WithNearCache.
func (c *Cache) NearStats() (NearStats, bool) {
	if c.near == nil {
		return NearStats{}, false
	}
	return c.near.stats(), true
}

// Close stops the near cache's stream, if any, and closes the connection. Calls after the first
// return an error.
func (c *Cache) Close() error {
	if c.near != nil {
		c.near.close()
	}
	err := c.c.cc.Close()
	if err != nil {
		return errors.Join(errors.New("client: Cache already closed"), err)
	}
	return nil
}
