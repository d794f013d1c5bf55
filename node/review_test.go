package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

// Review tests: interleavings that break the read-path invariants (docs/design.md 3, 10, 11).

// TestReviewStalePathFillsL1WithLaggingL2: the stale path (node beyond max_staleness, origin down
// or cache-aside) fills L1 from L2 without the node's L2 gating. What it fills is then served
// from L1 as fresh once the node can vouch again, although L2 was lagging behind a version the
// node applied and served before an L1 reset.
func TestReviewStalePathFillsL1WithLaggingL2(t *testing.T) {
	for _, mode := range []string{"origin down", "cache-aside"} {
		t.Run(mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBareNode(t, lru.Config{})
				b.cfg.Policy = invalidation.RefreshAll
				// Redis holds v3; the group has not applied the event to v5 yet.
				b.l2.Fill(context.Background(), b.l2.BeginFill(context.Background(), "k"), "k", 3, []byte("v3"))
				b.applyL1(invalidation.Event{Key: "k", Version: 5, Op: invalidation.OpUpsert, Value: []byte("v5"), HasValue: true})
				ch := b.startGet("k", 0)
				synctest.Wait()
				if r := recv(t, ch); r.err != nil || r.r.version != 5 || r.r.stale {
					t.Fatalf("first read: %v, want fresh v5 from L1", r)
				}
				// A gap in the event stream: L1 is reset, and the node's gating stops using L2
				// until the group has caught up.
				b.l1.Flush()
				b.trusted = func(string) bool { return false }
				// Kafka becomes unreachable: the node cannot vouch for its tiers.
				b.fresh = false
				switch mode {
				case "origin down":
					b.cfg.Loader = LoaderFunc(func(context.Context, string) (Loaded, error) {
						return Loaded{}, errors.New("origin down (test)")
					})
				case "cache-aside":
					b.cfg.Loader = nil
				}
				ch = b.startGet("k", 0)
				synctest.Wait()
				if r := recv(t, ch); r.err != nil || !r.r.stale {
					t.Fatalf("read while unvouched: %v, want a stale answer", r)
				}
				// Kafka is back; nothing new was published for k. The node vouches again.
				b.fresh = true
				ch = b.startGet("k", 0)
				synctest.Wait()
				r := recv(t, ch)
				if r.err == nil && !r.r.stale && r.r.version < 5 && r.r.tier != pb.Tier_TIER_UNSPECIFIED { // a cache-aside miss claims nothing
					t.Fatalf("monotonic reads: the node served v5 (stale=false), then %v with stale=false "+
						"(the stale path filled L1 from a lagging L2 that the gating did not trust)", r)
				}
			})
		})
	}
}

// flakyL2 is a memL2 whose fills can fail, as a Redis blip (timeout, back-off) makes them fail.
type flakyL2 struct {
	*memL2
	failFills atomic.Bool
}

func (f *flakyL2) Fill(ctx context.Context, tok redistier.FillToken, key string, version uint64, value []byte) (bool, error) {
	if f.failFills.Load() {
		return false, errors.New("redistier: redis unavailable: i/o timeout (test)")
	}
	return f.memL2.Fill(ctx, tok, key, version, value)
}

// TestReviewFailedL2FillThenL1ForgetsOldEntry: the node serves v5 from the origin; its fill of
// Redis fails (an error the read path ignores), so Redis keeps v3 in the current epoch. The
// event to v5 is not yet published (the relay lags). After the tombstone TTL, L1 evicts v5 under
// capacity pressure: the entry is no longer young, so no tombstone and no fence. L2 is trusted
// (the group has applied everything in the log) and serves v3 as fresh. Needs the event to lag
// the origin by about TombstoneTTL - MaxStaleness (25 s by default); the L2 fill fails whenever a
// slow origin read leaves no time on the load's LoaderTimeout context, or Redis blips.
func TestReviewFailedL2FillThenL1ForgetsOldEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBareNode(t, lru.Config{MaxEntries: 1, TTLJitter: -1})
		l2 := &flakyL2{memL2: b.l2}
		b.Node.l2 = l2
		l2.Fill(context.Background(), l2.BeginFill(context.Background(), "k"), "k", 3, []byte("v3"))
		b.origin.put("k", 5, "v5") // committed; its event is not published yet
		l2.failFills.Store(true)
		ch := b.startGet("k", 5) // read-your-writes: skips L2's v3, reads the origin
		synctest.Wait()
		b.origin.releaseAt(0)
		synctest.Wait()
		if r := recv(t, ch); r.err != nil || r.r.version != 5 {
			t.Fatalf("first read: %v, want v5", r)
		}
		l2.failFills.Store(false)
		time.Sleep(31 * time.Second) // past L1's tombstone TTL (30s)
		b.l1.Fill("other", 1, []byte("x"), b.l1.BeginFill())
		if _, ok := b.l1.Get("k"); ok {
			t.Fatal("k still in L1")
		}
		ch = b.startGet("k", 0)
		synctest.Wait()
		for b.origin.numPending() > 0 {
			b.origin.releaseAt(0)
			synctest.Wait()
		}
		if r := recv(t, ch); r.err == nil && !r.r.stale && r.r.version < 5 {
			t.Fatalf("monotonic reads: the node served v5, then %v (stale=false)", r)
		}
	})
}

// TestReviewRefreshHeldAfterFailoverServesOlderVersion: docs/consistency.md says refresh-held is
// not exposed to the refresh-all case of "what is left". After a failover, the old-epoch entry
// that came back counts as "held", so refresh-held writes the event's value in the new epoch,
// exactly like refresh-all.
func TestReviewRefreshHeldAfterFailoverServesOlderVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBareNode(t, lru.Config{})
		b.cfg.Policy = invalidation.RefreshHeld
		b.l2.onEpoch = b.newL2Epoch
		b.origin.put("k", 5, "v5")
		ch := b.startGet("k", 0)
		synctest.Wait()
		b.origin.releaseAt(0)
		synctest.Wait()
		if r := recv(t, ch); r.err != nil || r.r.version != 5 {
			t.Fatalf("read: %v", r)
		}
		// v6 and v7 are written; the relay is stalled (no event yet). A read-your-writes read
		// of v7 goes to the origin; v7 is in L1 and Redis.
		b.origin.put("k", 7, "v7")
		ch = b.startGet("k", 7)
		synctest.Wait()
		b.origin.releaseAt(0)
		synctest.Wait()
		if r := recv(t, ch); r.err != nil || r.r.version != 7 {
			t.Fatalf("read: %v", r)
		}
		// Failover to a replica that only had v5: it comes back as an old-epoch entry.
		b.l2.failover(map[string]memEntry{"k": {version: 5, kind: 'V', value: []byte("v5"), epoch: b.l2.epoch}})
		// The relay publishes v6 (with its value); the group applies it in the new epoch, and L1
		// ignores it (it holds v7).
		e6 := invalidation.Event{Key: "k", Version: 6, Op: invalidation.OpUpsert, Value: []byte("v6"), HasValue: true}
		b.l2.Apply(context.Background(), &e6, invalidation.RefreshHeld)
		b.applyL1(e6)
		// A gap in the event stream resets L1; the group has applied everything in the log
		// (v7's event is still not published), so the gating trusts L2 again.
		b.l1.Flush()
		ch = b.startGet("k", 0)
		synctest.Wait()
		for b.origin.numPending() > 0 {
			b.origin.releaseAt(0)
			synctest.Wait()
		}
		if r := recv(t, ch); r.err == nil && !r.r.stale && r.r.version < 7 {
			t.Fatalf("monotonic reads: the node served v7, then %v (refresh-held wrote v6 over an old-epoch entry)", r)
		}
	})
}

// TestReviewCacheAsideSetAfterRedisWipe: Set takes its L2 token when Set arrives, not when the
// application read the origin. An application read v3 before the key was deleted at v4; Redis
// then loses everything (and the tombstone); the application's Set of v3 lands in the new epoch,
// and another node serves it.
func TestReviewCacheAsideSetAfterRedisWipe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBareNode(t, lru.Config{})
		b.cfg.Loader = nil
		b.l2.onEpoch = b.newL2Epoch
		// The application reads v3 from its database (not through the node) ...
		del := invalidation.Event{Key: "k", Version: 4, Op: invalidation.OpDelete}
		b.applyL1(del)
		b.l2.Apply(context.Background(), &del, invalidation.RefreshHeld)
		b.l2.wipe()
		// ... and then calls Set with what it read.
		resp, err := (&service{n: b.Node}).Set(context.Background(), &pb.SetRequest{Key: "k", Value: []byte("v3"), Version: 3})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Set accepted=%v", resp.Accepted)
		other := newBareNode(t, lru.Config{})
		other.cfg.Loader = nil
		other.Node.l2 = b.l2
		ch := other.startGet("k", 0)
		synctest.Wait()
		if r := recv(t, ch); r.err == nil && r.r.found && r.r.version == 3 {
			t.Fatalf("a Set of v3 read before the delete at 4 landed in Redis after the wipe: another node serves %v", r)
		}
	})
}

// holdRT is a Kafka transport that holds the first answer it receives until released.
type holdRT struct {
	inner    kafka.RoundTripper
	once     sync.Once
	executed chan struct{}
	release  chan struct{}
}

func (h *holdRT) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	resp, err := h.inner.RoundTrip(ctx, addr, req)
	h.once.Do(func() {
		close(h.executed)
		<-h.release
	})
	return resp, err
}

// TestReviewL2PollBegunBeforeFenceMoveTrustsL2: pollL2 snapshots L1's positions and the group's
// committed offsets, then takes l2mu. If L1 forgets a young version (fence moves, l2Fresh resets
// need to needNext) while a poll is in flight, the poll sets need from its older snapshot and
// caughtUpAt to its start: L2 is trusted again although the group never applied the event L1
// forgot, and L2's older value is served.
func TestReviewL2PollBegunBeforeFenceMoveTrustsL2(t *testing.T) {
	h := newHarness(t)
	h.origin.put("a", 1, "a1")
	n := h.start(func(c *Config) {
		c.L2WatchInterval = time.Hour // only the first poll runs on its own; the test runs the next
		c.MaxStaleness = time.Minute
		c.L1.TombstoneTTL = 2 * time.Minute // longer than MaxStaleness, as node.Config requires
		c.L1.MaxTombstones = 1
	})
	testenv.WaitFor(t, 30*time.Second, func() string {
		if !n.l2Fresh("a") {
			return "L2 not trusted yet"
		}
		return ""
	})
	expect(t, get(t, n, "a", 0), pb.Tier_TIER_ORIGIN, 1, "a1") // L1 and Redis hold a@1
	if e, found, err := n.l2.Get(ctxT(t), "a"); err != nil || !found || e.Version != 1 {
		t.Fatalf("Redis: %+v %v %v", e, found, err)
	}
	_ = n.group.Close() // the group member stalls: nothing more reaches Redis

	tr := h.kafka.Conn.Transport()
	defer tr.CloseIdleConnections()
	rt := &holdRT{inner: tr, executed: make(chan struct{}), release: make(chan struct{})}
	client := &kafka.Client{Addr: kafka.TCP(h.kafka.Brokers...), Timeout: 5 * time.Second, Transport: rt}
	polled := make(chan struct{})
	go func() { defer close(polled); n.pollL2(ctxT(t), client) }()
	<-rt.executed // the poll has its snapshot of L1 and of the group's offsets

	pub := h.publisher()
	fence := n.l1.Fence()
	h.origin.mu.Lock()
	h.origin.data["a"] = Loaded{Version: 2} // deleted at 2
	h.origin.data["b"] = Loaded{Version: 3}
	h.origin.mu.Unlock()
	if err := pub.Publish(ctxT(t), invalidation.Event{Key: "a", Version: 2, Op: invalidation.OpDelete}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, func() string {
		if st := n.l1.State("a"); st.Version != 2 {
			return fmt.Sprintf("L1 has not applied a@2: %+v", st)
		}
		return ""
	})
	if err := pub.Publish(ctxT(t), invalidation.Event{Key: "b", Version: 3, Op: invalidation.OpDelete}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, func() string {
		if n.l1.Fence() == fence {
			return "L1 has not forgotten the young tombstone of a"
		}
		return ""
	})
	if n.l2Fresh("a") {
		t.Fatal("L2 trusted right after L1 forgot a young version")
	}
	close(rt.release)
	<-polled
	r := get(t, n, "a", 0)
	if r.Version < 2 && !r.Freshness.GetStale() {
		t.Fatalf("monotonic reads: the node applied a@2, then served %v@%d from %s (stale=false): l2Fresh=%v",
			string(r.Value), r.Version, r.Tier, n.l2Fresh("a"))
	}
}
