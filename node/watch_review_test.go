package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

// These tests run a real node (kfake, miniredis, an in-process origin) with real Go clients, one
// of them with a near cache (client.WithNearCache), and compare what the near cache answers with
// what its node would.

// nearClient opens a client with a near cache on n and waits until its stream is in sync.
func nearClient(t *testing.T, n *testNode) *client.Cache {
	t.Helper()
	c, err := client.NewCache(n.GRPCAddr(), client.WithTimeout(10*time.Second), client.WithRetries(0, 0),
		client.WithNearCache(client.NearCacheConfig{Logger: slog.New(slog.DiscardHandler)}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	testenv.WaitFor(t, 20*time.Second, func() string {
		if st, _ := c.NearStats(); !st.Synced {
			return "the near cache is not in sync"
		}
		return ""
	})
	return c
}

func nearGet(t *testing.T, c *client.Cache, key string, opts ...client.GetOption) client.Item {
	t.Helper()
	it, err := c.Get(ctxT(t), key, opts...)
	if err != nil {
		t.Fatalf("near client Get(%q): %v", key, err)
	}
	return it
}

// holdInNear reads key through c until the near cache answers it, and checks the value.
func holdInNear(t *testing.T, c *client.Cache, key string, version uint64, value string) {
	t.Helper()
	nearGet(t, c, key) // a miss: the node's answer fills the near cache
	if it := nearGet(t, c, key); it.Tier != client.TierNear || it.Version != version || string(it.Value) != value {
		t.Fatalf("want %s@%d held in the near cache, got %+v", value, version, it)
	}
}

// cutSubscriberFetches makes kfake refuse every Fetch from now on (until heal), and returns a
// channel closed once a fetch of partition part was refused: the subscriber reads each partition
// with one fetch at a time, so from then on nothing published to part reaches the node's L1.
// Run without L2: the L2 group's fetches would be counted too.
func cutSubscriberFetches(t *testing.T, h *harness, part int) (refused <-chan struct{}, heal func()) {
	t.Helper()
	k := h.kafka.Fake
	if k == nil {
		t.Skip("needs the in-process Kafka (kfake) to hold fetches back")
	}
	var refusing atomic.Bool
	refusing.Store(true)
	ch := make(chan struct{})
	var once sync.Once
	k.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if !refusing.Load() {
			k.DropControl()
			return nil, nil, false
		}
		k.KeepControl()
		if fr, ok := req.(*kmsg.FetchRequest); ok {
			for _, tp := range fr.Topics {
				for _, p := range tp.Partitions {
					if int(p.Partition) == part {
						once.Do(func() { close(ch) })
					}
				}
			}
		}
		return nil, errors.New("fetch held back by the test"), true
	})
	heal = func() { refusing.Store(false) }
	t.Cleanup(heal)
	return ch, heal
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-ctxT(t).Done():
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestWatchReviewVersionlessAnswerRefreshedByAnOlderEvent: the origin cannot say which version
// it returned (invariant 12). It already has v2 ("new") when the key is first read; the events
// lag: v1's event ("old") arrives after the read. The node stored the answer under a lease, so
// the v1 event evicts it, and the node keeps answering "new". A near cache that kept "new" as a
// plain value at version 0 would let the v1 event refresh it to "old", which the node never
// serves: the node marks such answers versionless, and the near cache keeps none of them.
func TestWatchReviewVersionlessAnswerRefreshedByAnOlderEvent(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	current := "new" // the origin is at v2 already; its events are still on their way
	n := h.start(func(c *Config) {
		c.Loader = LoaderFunc(func(context.Context, string) (Loaded, error) {
			mu.Lock()
			defer mu.Unlock()
			return Loaded{Value: []byte(current), Found: true, Versionless: true}, nil
		})
	})
	near := nearClient(t, n)
	nearGet(t, near, "vl")
	if it := nearGet(t, near, "vl"); it.Tier == client.TierNear || string(it.Value) != "new" {
		t.Fatalf("a versionless answer: got %+v, want \"new\" from the node, not kept in the near cache", it)
	}

	// The lagging event of v1, which carries v1's value.
	if err := h.publisher().Publish(ctxT(t), invalidation.Event{Key: "vl", Version: 1, Op: invalidation.OpUpsert, Value: []byte("old"), HasValue: true}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, func() string {
		if n.applied.Load()+n.ignored.Load() == 0 {
			return "the node has not applied the v1 event yet"
		}
		return ""
	})
	it := nearGet(t, near, "vl")
	if r := get(t, n, "vl", 0); string(r.Value) != "new" {
		t.Fatalf("the node answers %q@%d from %v; want \"new\"", r.Value, r.Version, r.Tier)
	}
	if string(it.Value) != "new" {
		t.Fatalf("after the lagging v1 event the near cache answered %q@%d from %s; it answered \"new\" before, and the node still answers \"new\"",
			it.Value, it.Version, it.Tier)
	}
}

// TestWatchReviewNodeLearnsVersionsTheStreamNeverCarries: the Watch stream carries only what the
// subscriber applies. Everything else that teaches the node's L1 a newer version reaches no near
// cache until (if ever) its event comes back through Kafka: the Invalidate and Evict RPCs (their
// events are on their way; here the subscriber's fetches are held back to keep it so), Set, and
// origin answers newer than what L1 held. Meanwhile the node answers the new version (and would
// refuse anything older), while a near cache on it keeps answering the old one.
func TestWatchReviewNodeLearnsVersionsTheStreamNeverCarries(t *testing.T) {
	noL2 := func(c *Config) {
		c.L2 = redistier.Config{} // no group fetches: see cutSubscriberFetches
		c.MaxStaleness = 20 * time.Second
	}
	const key = "rpc"
	part := invalidation.PartitionFor(key, 3)

	t.Run("another client's Invalidate", func(t *testing.T) {
		h := newHarness(t)
		n := h.start(noL2)
		h.origin.put(key, 1, "v1")
		near := nearClient(t, n)
		holdInNear(t, near, key, 1, "v1")
		refused, _ := cutSubscriberFetches(t, h, part)
		waitClosed(t, refused, "a refused fetch of the key's partition")

		h.origin.put(key, 2, "v2")
		if _, err := n.client.Invalidate(ctxT(t), &pb.InvalidateRequest{Key: key, Version: 2}); err != nil {
			t.Fatal(err)
		}
		expect(t, get(t, n, key, 0), pb.Tier_TIER_ORIGIN, 2, "v2") // the node applied it, and serves v2
		// The event is held back from the subscriber: only the stream can tell the near cache.
		testenv.WaitFor(t, 10*time.Second, func() string {
			if it := nearGet(t, near, key); it.Version < 2 {
				return fmt.Sprintf("after the node applied INVALIDATE@2 (and served v2) its near cache answers %q@%d from %s", it.Value, it.Version, it.Tier)
			}
			return ""
		})
	})

	t.Run("another client's Evict", func(t *testing.T) {
		h := newHarness(t)
		n := h.start(noL2)
		h.origin.put(key, 1, "bad")
		near := nearClient(t, n)
		holdInNear(t, near, key, 1, "bad")
		refused, _ := cutSubscriberFetches(t, h, part)
		waitClosed(t, refused, "a refused fetch of the key's partition")

		h.origin.put(key, 1, "repaired") // the value was wrong; the operator repaired it and evicts
		if _, err := n.client.Evict(ctxT(t), &pb.EvictRequest{Key: key}); err != nil {
			t.Fatal(err)
		}
		expect(t, get(t, n, key, 0), pb.Tier_TIER_ORIGIN, 1, "repaired")
		testenv.WaitFor(t, 10*time.Second, func() string {
			if it := nearGet(t, near, key); string(it.Value) != "repaired" {
				return fmt.Sprintf("after the node applied EVICT (and served the repaired value) its near cache answers %q@%d from %s", it.Value, it.Version, it.Tier)
			}
			return ""
		})
	})

	t.Run("the client's own Set", func(t *testing.T) {
		h := newHarness(t)
		n := h.start(func(c *Config) { noL2(c); c.Loader = nil }) // cache-aside
		near := nearClient(t, n)
		ctx := ctxT(t)
		if ok, err := near.Set(ctx, key, []byte("v1"), 1); !ok || err != nil {
			t.Fatalf("Set v1: %v, %v", ok, err)
		}
		holdInNear(t, near, key, 1, "v1")
		if ok, err := near.Set(ctx, key, []byte("v2"), 2); !ok || err != nil {
			t.Fatalf("Set v2: %v, %v", ok, err)
		}
		expect(t, get(t, n, key, 0), pb.Tier_TIER_L1, 2, "v2")
		if it := nearGet(t, near, key); it.Version < 2 {
			t.Fatalf("Set(v2) was accepted and the node serves v2, but the same client's next Get answered %q@%d from %s", it.Value, it.Version, it.Tier)
		}
	})

	t.Run("an origin answer to another client's min_version read", func(t *testing.T) {
		h := newHarness(t)
		n := h.start(noL2)
		h.origin.put(key, 1, "v1")
		near := nearClient(t, n)
		holdInNear(t, near, key, 1, "v1")
		// v2 is committed; its event is still in the writer's outbox. Its writer reads its write
		// through the node: L1 has v1, so the node loads v2 from the origin, keeps and serves it.
		h.origin.put(key, 2, "v2")
		expect(t, get(t, n, key, 2), pb.Tier_TIER_ORIGIN, 2, "v2")
		expect(t, get(t, n, key, 0), pb.Tier_TIER_L1, 2, "v2") // and serves v2 to everyone since
		testenv.WaitFor(t, 10*time.Second, func() string {
			if it := nearGet(t, near, key); it.Version < 2 {
				return fmt.Sprintf("the node served v2 (and would refuse v1), but its near cache answers %q@%d from %s", it.Value, it.Version, it.Tier)
			}
			return ""
		})
	})
}

// TestWatchReviewEventBatchLargerThanTheClientsReceiveLimit: the node sends all the events of
// one fetch as one WatchEvents message, values included (refresh-held, the default). A producer
// that compresses (a Java or Spring producer with compression.type set, Debezium) puts far more
// than the subscriber's 4 MiB fetch into one fetch once decoded; here, 8 UPSERTs of 700 KiB
// (each within max-value-bytes) in one zstd batch. The message is then over gRPC's default
// 4 MiB receive limit: Recv would fail, the stream break, and the near cache flush and
// resubscribe on every such batch. The node splits batches by size (watchMaxBytes) and the
// client raises its receive limit for the stream.
func TestWatchReviewEventBatchLargerThanTheClientsReceiveLimit(t *testing.T) {
	h := newHarness(t)
	n := h.start(func(c *Config) { c.L2 = redistier.Config{} })
	var logs lockedBuffer
	near, err := client.NewCache(n.GRPCAddr(), client.WithTimeout(10*time.Second), client.WithRetries(0, 0),
		client.WithNearCache(client.NearCacheConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	if err != nil {
		t.Fatal(err)
	}
	defer near.Close()
	testenv.WaitFor(t, 20*time.Second, func() string {
		if st, _ := near.NearStats(); !st.Synced {
			return "the near cache is not in sync"
		}
		return ""
	})
	const key = "big"
	h.origin.put(key, 1, "v1")
	holdInNear(t, near, key, 1, "v1")

	const events = 8
	big := make([]byte, 700<<10)
	w := h.kafka.Writer(t, h.topic)
	w.Compression = kafka.Zstd
	w.BatchSize, w.BatchBytes = 100, 64<<20
	var msgs []kafka.Message
	for v := uint64(2); v < 2+events; v++ {
		b, err := invalidation.Encode(&invalidation.Event{Key: key, Version: v, Op: invalidation.OpUpsert, Value: big, HasValue: true})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Key: []byte(key), Value: b})
	}
	h.origin.put(key, 1+events, string(big))
	if err := w.WriteMessages(ctxT(t), msgs...); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if it := nearGet(t, near, key); it.Tier != client.TierNear || it.Version != 1+events {
			return "the near cache does not hold the last version yet"
		}
		return ""
	})
	if st, _ := near.NearStats(); st.Breaks > 0 || st.Resyncs > 0 {
		t.Fatalf("one batch of %d events broke the near cache's stream (breaks %d, resyncs %d); its log:\n%s", events, st.Breaks, st.Resyncs, logs.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// Scenarios the review checked and found correct.

// TestWatchReviewHeartbeatsNeverRunAheadOfEvents: while events flow in batches of every size on
// all partitions, no heartbeat reports a partition past an offset whose event has not come on
// the stream before it (the subscriber records its position only after L1 applied, and the
// node queued, the events).
func TestWatchReviewHeartbeatsNeverRunAheadOfEvents(t *testing.T) {
	h := newHarness(t)
	n := h.start(func(c *Config) { c.L2 = redistier.Config{} })
	ctx := ctxT(t)
	stream, err := n.client.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	start := recvSeq(t, stream, &seq).GetStart()
	base := map[int32]int64{}
	for _, p := range start.GetPositions() {
		base[p.GetPartition()] = p.GetOffset()
	}
	const total = 600
	go func() {
		pub := h.publisher()
		sent := 0
		for size := 1; sent < total; size = size%37 + 1 {
			var batch []invalidation.Event
			for range min(size, total-sent) {
				sent++
				batch = append(batch, invalidation.Event{Key: "hb:" + itoa(sent%97), Version: uint64(sent), Op: invalidation.OpInvalidate})
			}
			if err := pub.Publish(ctx, batch...); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	got := map[int32]int64{}
	received := 0
	for caughtUp := false; !caughtUp; {
		m := recvSeq(t, stream, &seq)
		switch b := m.GetBody().(type) {
		case *pb.WatchResponse_Events:
			got[b.Events.GetPartition()] += int64(len(b.Events.GetEvents()))
			received += len(b.Events.GetEvents())
		case *pb.WatchResponse_Heartbeat:
			done := int64(0)
			for _, p := range b.Heartbeat.GetPositions() {
				if ahead := p.GetOffset() - base[p.GetPartition()]; ahead > got[p.GetPartition()] {
					t.Fatalf("heartbeat %d says partition %d is %d events past the start, but %d came on the stream", m.GetSeq(), p.GetPartition(), ahead, got[p.GetPartition()])
				}
				done += p.GetOffset() - base[p.GetPartition()]
			}
			caughtUp = done == total
		case *pb.WatchResponse_Start, *pb.WatchResponse_Reset_:
			t.Fatalf("unexpected %T", b)
		}
	}
	if received != total {
		t.Fatalf("received %d events, want %d", received, total)
	}
}

// TestWatchReviewNearCacheThroughNodeClose: a near cache on a node that closes stops answering
// in process, errors on reads, and its Close leaves no goroutine (goleak in TestMain).
func TestWatchReviewNearCacheThroughNodeClose(t *testing.T) {
	h := newHarness(t)
	n := h.start(nil)
	h.origin.put("c", 1, "v1")
	near := nearClient(t, n)
	holdInNear(t, near, "c", 1, "v1")
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, func() string {
		if st, _ := near.NearStats(); st.Synced {
			return "still in sync with a closed node"
		}
		return ""
	})
	if it, err := near.Get(ctxT(t), "c"); err == nil {
		t.Fatalf("answered %+v with the node closed", it)
	}
	if err := near.Close(); err != nil {
		t.Fatal(err)
	}
}
