package node

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

// Review tests for EVICT (ec95b91) and L1 tombstone expiry (e5411df). Each is an interleaving in
// which an evicted value comes back, or a node goes back behind a version it applied.

func evictOf(key string) invalidation.Event {
	return invalidation.Event{Key: key, Op: invalidation.OpEvict}
}

// heldGetL2 is a memL2 whose reads, once armed, return what they read only when released: a load
// that read Redis before an EVICT and fills L1 after it.
type heldGetL2 struct {
	*memL2
	hold chan struct{}
}

func (h *heldGetL2) Get(ctx context.Context, key string) (redistier.Entry, bool, error) {
	e, found, err := h.memL2.Get(ctx, key)
	if h.hold != nil {
		<-h.hold
	}
	return e, found, err
}

// TestEvictOfKeyNotInL1DuringALoad: as TestEvictDuringALoadDoesNotBringTheValueBack, but
// L1 holds no value for the key when the EVICT arrives (this node never read it, or its
// tombstone expired), so the EVICT changes nothing in L1 and the load begun before it fills the
// dropped value, which this node then serves from L1 until its TTL. Two sources of the dropped
// value: Redis (read before the group applied the EVICT there) and the origin (read before it
// was repaired in place).
func TestEvictOfKeyNotInL1DuringALoad(t *testing.T) {
	for _, source := range []string{"redis", "origin"} {
		t.Run(source, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				b := newBareNode(t, lru.Config{})
				var hold chan struct{}
				switch source {
				case "redis":
					b.origin.put("k", 3, "repaired")
					b.l2.Fill(ctx, b.l2.BeginFill(ctx, "k"), "k", 3, []byte("suspect"))
					hold = make(chan struct{})
					b.Node.l2 = &heldGetL2{memL2: b.l2, hold: hold}
				case "origin":
					b.origin.put("k", 3, "suspect")
				}
				g := b.startGet("k", 0)
				synctest.Wait()
				// The EVICT: the group applies it to Redis, the node's subscriber to L1 (which
				// holds L2 for the partition until the group has applied it).
				ev := evictOf("k")
				b.l2.Apply(ctx, &ev, invalidation.RefreshHeld)
				b.applyL1(ev)
				b.origin.put("k", 3, "repaired")
				if hold != nil {
					close(hold)
				}
				synctest.Wait()
				for i := 0; b.origin.numPending() > 0 && i < 10; i++ {
					b.origin.releaseAt(0)
					synctest.Wait()
				}
				if r := recv(t, g); r.err != nil || string(r.r.value) != "repaired" {
					t.Errorf("get = %v %q, want repaired@3 (a load begun after the EVICT)", r, r.r.value)
				}
				if it, ok := b.l1.Get("k"); ok && string(it.Value) == "suspect" {
					t.Fatalf("L1 holds the evicted value %q@%d after the EVICT was applied", it.Value, it.Version)
				}
			})
		})
	}
}

// TestPreEvictLoadLandsAfterPostEvictLoad: L1 holds k@3; a load begun before the EVICT
// is slow; after the EVICT a read-your-writes request (min_version 3, which cannot join the
// older load) loads the repaired value and L1 keeps it, replacing the EVICT's tombstone. Then
// the old load returns the dropped value at the same version: L1 held a value at 3, so the fill
// rule accepts it, and nothing remembers the EVICT.
func TestPreEvictLoadLandsAfterPostEvictLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBareNode(t, lru.Config{})
		b.origin.put("k", 3, "suspect")
		b.l1.Fill("k", 3, []byte("suspect"), b.l1.BeginFill())
		b.fresh = false // the node cannot vouch for L1: the first read goes to the origin
		old := b.startGet("k", 0)
		synctest.Wait()
		b.fresh = true
		b.applyL1(evictOf("k"))
		b.origin.put("k", 3, "repaired")
		b.trusted = func(string) bool { return false } // L2 held until the group applies the EVICT
		ryw := b.startGet("k", 3)
		synctest.Wait()
		if got := b.origin.numPending(); got != 2 {
			t.Fatalf("%d loads pending, want 2", got)
		}
		b.origin.releaseAt(1) // the load begun after the EVICT
		synctest.Wait()
		if r := recv(t, ryw); r.err != nil || string(r.r.value) != "repaired" {
			t.Fatalf("min_version request = %v %q, want repaired@3", r, r.r.value)
		}
		b.origin.releaseAt(0) // the load begun before the EVICT returns the dropped value
		synctest.Wait()
		for i := 0; b.origin.numPending() > 0 && i < 10; i++ {
			b.origin.releaseAt(0)
			synctest.Wait()
		}
		if r := recv(t, old); r.err != nil || string(r.r.value) != "repaired" {
			t.Errorf("first request = %v %q, want repaired@3", r, r.r.value)
		}
		if it, ok := b.l1.Get("k"); !ok || string(it.Value) != "repaired" {
			t.Fatalf("L1 holds %q@%d (%v) after the EVICT, want repaired@3", it.Value, it.Version, ok)
		}
	})
}

// TestLaggingNodeRefillsRedisAfterEvict: node B's subscriber lags the group. B's load
// (begun before the EVICT, so it read the value before the origin was repaired) returns after
// the group applied the EVICT to Redis but before B's L1 saw it: B's L1 admits it, and Redis
// takes it at the kept version (an equal version is accepted over a tombstone). Once B's L1
// applies the EVICT, its hold is already satisfied (the group is past it), and every node serves
// the dropped value from Redis until its TTL.
func TestLaggingNodeRefillsRedisAfterEvict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		a := newBareNode(t, lru.Config{})
		b := newBareNode(t, lru.Config{})
		b.Node.l2, b.l2 = a.l2, a.l2 // one Redis
		b.origin = a.origin
		b.cfg.Loader = a.origin
		a.origin.put("k", 3, "suspect")
		a.l2.Fill(ctx, a.l2.BeginFill(ctx, "k"), "k", 3, []byte("suspect"))
		b.fresh = false // B's subscriber lags: it cannot vouch for its tiers, it reads the origin
		g := b.startGet("k", 0)
		synctest.Wait()
		a.origin.put("k", 3, "repaired")
		ev := evictOf("k")
		a.l2.Apply(ctx, &ev, invalidation.RefreshHeld) // the group
		a.applyL1(ev)                                  // node A's subscriber
		a.origin.releaseAt(0)                          // B's load returns the value it read before
		synctest.Wait()
		recv(t, g) // B had not seen the EVICT yet: whatever it answered is not the point
		b.applyL1(ev)
		b.fresh = true
		// The group has applied the EVICT: neither node holds L2 any more.
		for name, n := range map[string]*bareNode{"a": a, "b": b} {
			ch := n.startGet("k", 0)
			synctest.Wait()
			for i := 0; a.origin.numPending() > 0 && i < 10; i++ {
				a.origin.releaseAt(0)
				synctest.Wait()
			}
			if r := recv(t, ch); r.err != nil || string(r.r.value) != "repaired" {
				t.Errorf("node %s after the EVICT: %v %q, want repaired@3", name, r, r.r.value)
			}
		}
		if e, ok := a.l2.entries["k"]; ok && string(e.value) == "suspect" {
			t.Fatalf("Redis holds the evicted value again (%q@%d)", e.value, e.version)
		}
	})
}

// TestEvictHoldLostAfterL2GatingReset: holdL2 raises need to the EVICT's offset, but when
// the partition's need is needNext (Redis started a new epoch, or L1's fence moved, since the last
// poll) max(needNext, offset) is needNext: the hold is lost. A poll whose snapshot of L1's
// positions was taken before the EVICT was applied then sets need below it and marks the group
// caught up, although the group never applied the EVICT: Redis serves the evicted value.
func TestEvictHoldLostAfterL2GatingReset(t *testing.T) {
	h := newHarness(t)
	h.origin.put("a", 1, "suspect")
	n := h.start(func(c *Config) {
		c.L2WatchInterval = time.Hour // only the first poll runs on its own; the test runs the next
		c.MaxStaleness = time.Minute
		c.L1.TombstoneTTL = 2 * time.Minute
	})
	testenv.WaitFor(t, 30*time.Second, func() string {
		if !n.l2Fresh("a") {
			return "L2 not trusted yet"
		}
		return ""
	})
	expect(t, get(t, n, "a", 0), pb.Tier_TIER_ORIGIN, 1, "suspect") // L1 and Redis hold a@1
	// Redis loses its epoch key (a FLUSHALL of another prefix's keys, a restart...): the next
	// fill is refused and the tier starts a new epoch, and the node's gating starts over
	// (need = needNext everywhere). Another node's load then fills a@1 in the new epoch.
	ctx := ctxT(t)
	if err := h.redis.Client(t).Del(ctx, h.redis.Prefix+"\xffepoch").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.l2.Fill(ctx, n.l2.BeginFill(ctx, "a"), "a", 1, []byte("suspect")); err == nil {
		t.Fatal("a fill begun in the lost epoch was accepted")
	}
	if ok, err := n.l2.Fill(ctx, n.l2.BeginFill(ctx, "a"), "a", 1, []byte("suspect")); !ok || err != nil {
		t.Fatalf("fill in the new epoch: %v %v", ok, err)
	}
	if n.l2Fresh("a") {
		t.Fatal("L2 trusted right after a new epoch")
	}
	_ = n.group.Close() // the group member stalls: the EVICT will not reach Redis

	tr := h.kafka.Conn.Transport()
	defer tr.CloseIdleConnections()
	rt := &holdRT{inner: tr, executed: make(chan struct{}), release: make(chan struct{})}
	client := &kafka.Client{Addr: kafka.TCP(h.kafka.Brokers...), Timeout: 5 * time.Second, Transport: rt}
	polled := make(chan struct{})
	go func() { defer close(polled); n.pollL2(ctxT(t), client) }()
	<-rt.executed // the poll has its snapshot of L1's positions, from before the EVICT

	h.origin.put("a", 1, "repaired")
	if err := h.publisher().Publish(ctxT(t), evictOf("a")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, func() string {
		if st := n.l1.State("a"); !st.Tombstone {
			return fmt.Sprintf("L1 has not applied the EVICT: %+v", st)
		}
		return ""
	})
	close(rt.release)
	<-polled
	if e, found, _ := n.l2.Get(ctxT(t), "a"); !found || string(e.Value) != "suspect" {
		t.Fatalf("Redis: %+v %v: the test needs the group not to have applied the EVICT", e, found)
	}
	r := get(t, n, "a", 0)
	if string(r.Value) == "suspect" {
		t.Fatalf("the node applied the EVICT, then served the evicted value from %s (l2Fresh=%v)", r.Tier, n.l2Fresh("a"))
	}
}

// TestTombstoneExpiresWhileL2Lags: e5411df argues that an expired tombstone can move no
// fence because no load older than TombstoneTTL runs. But L1's tombstones also cover the L2
// group's lag: L2 is trusted for MaxStaleness after the group was last seen caught up, and
// within that time L1 alone refuses what Redis has not caught up with. Nothing makes
// MaxStaleness shorter than TombstoneTTL: with --max-staleness 60s and the default 30s TTL, a
// stalled group's old value is served once the tombstone of the newer event expired.
func TestTombstoneExpiresWhileL2Lags(t *testing.T) {
	cfg := Config{NodeID: "x", GRPCAddr: "127.0.0.1:0", HTTPAddr: "-", Brokers: []string{"127.0.0.1:1"}, Topics: []string{"t"},
		MaxStaleness: time.Minute, L1: lru.Config{TombstoneTTL: 30 * time.Second}}
	if _, err := New(cfg); err != nil {
		t.Logf("the configuration is refused: %v", err)
		return
	}
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := newBareNode(t, cfg.L1)
		b.cfg.MaxStaleness = cfg.MaxStaleness
		caughtUp := time.Now() // the last poll that saw the group caught up; then it stalls
		b.trusted = func(string) bool { return time.Since(caughtUp) <= b.cfg.MaxStaleness }
		b.l2.Fill(ctx, b.l2.BeginFill(ctx, "k"), "k", 3, []byte("v3"))
		b.origin.put("k", 4, "v4")
		time.Sleep(time.Second)
		b.applyL1(invalidation.Event{Key: "k", Version: 4, Op: invalidation.OpInvalidate}) // the group has not
		time.Sleep(31 * time.Second)                                                       // L1's tombstone expires
		g := b.startGet("k", 0)
		synctest.Wait()
		for i := 0; b.origin.numPending() > 0 && i < 10; i++ {
			b.origin.releaseAt(0)
			synctest.Wait()
		}
		if r := recv(t, g); r.err == nil && !r.r.stale && r.r.version < 4 {
			t.Fatalf("monotonic reads: the node applied k@4, then served %v (stale=false)", r)
		}
	})
}

// TestLoaderIgnoringItsContextOutlivesTombstone: the expiry argument rests on
// LoaderTimeout bounding every load, but the node takes an origin answer whenever it comes: a
// Loader that does not honour its context (a documented requirement, not an enforced one)
// returns after the tombstone of a newer event expired, and its older answer is served.
func TestLoaderIgnoringItsContextOutlivesTombstone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBareNode(t, lru.Config{})
		b.cfg.Loader = LoaderFunc(func(context.Context, string) (Loaded, error) {
			time.Sleep(40 * time.Second) // a driver stuck in a retry loop that ignores ctx
			return Loaded{Value: []byte("v3"), Version: 3, Found: true}, nil
		})
		g := b.startGet("k", 0)
		synctest.Wait()
		time.Sleep(time.Second)
		b.applyL1(invalidation.Event{Key: "k", Version: 4, Op: invalidation.OpDelete})
		time.Sleep(40 * time.Second)
		synctest.Wait()
		if r := recv(t, g); r.err == nil && !r.r.stale && r.r.version < 4 {
			t.Fatalf("the node applied k@4, then served %v from a load that outlived LoaderTimeout and the tombstone", r)
		}
	})
}

// failApplyL2 is a memL2 whose event applies fail, as when Redis blips during the Evict RPC.
type failApplyL2 struct{ *memL2 }

func (f failApplyL2) Apply(context.Context, *invalidation.Event, invalidation.Policy) (invalidation.Action, error) {
	return invalidation.Ignore, redistier.ErrUnavailable
}

// TestEvictRPCWithRedisErrorServesEvictedValue: the Evict RPC publishes, applies the EVICT
// to Redis (the error is ignored) and then to L1, which turns the value into a tombstone at its
// version. Until this node's subscriber delivers the EVICT (and holds L2) and the group applies
// it, Redis still holds the value, at the version L1 kept, and a load begun after the EVICT takes
// it: the node serves the value it has just evicted, after Evict returned OK.
func TestEvictRPCWithRedisErrorServesEvictedValue(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "events", 1)
	b := newBareNode(t, lru.Config{})
	_ = b.Node.pub.Close()
	pub, err := invalidation.NewPublisher(invalidation.PublisherConfig{Brokers: k.Brokers, Kafka: k.Conn, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	b.Node.pub = pub // closed with the node
	ctx := ctxT(t)
	b.origin.put("k", 3, "repaired")
	b.l2.Fill(ctx, b.l2.BeginFill(ctx, "k"), "k", 3, []byte("suspect"))
	b.l1.Fill("k", 3, []byte("suspect"), b.l1.BeginFill())
	b.Node.l2 = failApplyL2{b.l2}
	if _, err := (&service{n: b.Node}).Evict(ctx, &pb.EvictRequest{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	// Neither this node's subscriber nor the group has delivered the EVICT yet: nothing holds L2.
	done := make(chan result, 1)
	go func() {
		r, err := b.get(ctx, "k", 0)
		done <- result{r, err}
	}()
	var r result
	for r.r.tier == pb.Tier_TIER_UNSPECIFIED && r.err == nil {
		select {
		case r = <-done:
		case <-time.After(10 * time.Millisecond):
			if b.origin.numPending() > 0 {
				b.origin.releaseAt(0)
			}
		}
	}
	if r.err == nil && string(r.r.value) == "suspect" {
		t.Fatalf("Evict returned, then the node served the evicted value from %s", r.r.tier)
	}
}
