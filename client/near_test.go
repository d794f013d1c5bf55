package client

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// watchNode is a CacheService whose state and Watch stream the test drives: Get answers the
// version the test set for the key when the request arrives (as a node answers from its L1),
// optionally held at a gate; every Watch stream is handed to the test, which sends its messages.
type watchNode struct {
	pb.UnimplementedCacheServiceServer
	mu       sync.Mutex
	versions map[string]uint64
	gate     *getGate // the next Get waits at it
	stale    bool     // answers say stale=true
	gets     atomic.Int64
	streams  chan *fakeStream
}

type getGate struct {
	arrived chan uint64   // receives the version the held Get will answer
	release chan struct{} // closed to let it answer
}

type fakeStream struct {
	send chan *pb.WatchResponse
	end  chan error
	done <-chan struct{}
}

func value(key string, v uint64) []byte { return fmt.Appendf(nil, "%s@%d", key, v) }

func (w *watchNode) Get(_ context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	w.gets.Add(1)
	w.mu.Lock()
	v, gate, stale := w.versions[req.GetKey()], w.gate, w.stale
	w.gate = nil
	w.mu.Unlock()
	resp := &pb.GetResponse{Key: req.GetKey(), Version: v, Found: v > 0, Tier: pb.Tier_TIER_L1, Freshness: &pb.Freshness{Stale: stale}}
	if v > 0 {
		resp.Value = value(req.GetKey(), v)
	}
	if gate != nil {
		gate.arrived <- v
		<-gate.release
	}
	return resp, nil
}

func (w *watchNode) BatchGet(ctx context.Context, req *pb.BatchGetRequest) (*pb.BatchGetResponse, error) {
	out := &pb.BatchGetResponse{}
	for _, r := range req.GetRequests() {
		resp, _ := w.Get(ctx, r)
		out.Responses = append(out.Responses, resp)
	}
	return out, nil
}

func (w *watchNode) Watch(_ *pb.WatchRequest, ss pb.CacheService_WatchServer) error {
	fs := &fakeStream{send: make(chan *pb.WatchResponse), end: make(chan error, 1), done: ss.Context().Done()}
	select {
	case w.streams <- fs:
	case <-ss.Context().Done():
		return ss.Context().Err()
	}
	for {
		select {
		case m := <-fs.send:
			if err := ss.Send(m); err != nil {
				return err
			}
		case err := <-fs.end:
			return err
		case <-ss.Context().Done():
			return ss.Context().Err()
		}
	}
}

func (w *watchNode) set(key string, v uint64) {
	w.mu.Lock()
	w.versions[key] = v
	w.mu.Unlock()
}

func (w *watchNode) holdNext() *getGate {
	g := &getGate{arrived: make(chan uint64, 1), release: make(chan struct{})}
	w.mu.Lock()
	w.gate = g
	w.mu.Unlock()
	return g
}

// nearHarness is a client with a near cache on a watchNode.
type nearHarness struct {
	t       *testing.T
	node    *watchNode
	cache   *Cache
	applied chan uint64
	stream  *fakeStream
	seq     uint64
	stale   time.Duration // the node's max_staleness, sent at start
}

func newNearHarness(t *testing.T) *nearHarness {
	t.Helper()
	h := &nearHarness{t: t, node: &watchNode{versions: map[string]uint64{}, streams: make(chan *fakeStream)},
		applied: make(chan uint64, 1<<16), stale: 5 * time.Second}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterCacheServiceServer(s, h.node)
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(lis)
	hook := func(o *options) { o.nearApplied = func(seq uint64) { h.applied <- seq } }
	h.cache, err = NewCache(lis.Addr().String(), WithTimeout(10*time.Second), WithRetries(0, 0),
		WithNearCache(NearCacheConfig{MaxEntries: 64, Logger: slog.New(slog.DiscardHandler)}), hook)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.cache.Close()
		s.Stop()
	})
	return h
}

// open waits for the client to open its next Watch stream.
func (h *nearHarness) open() {
	h.t.Helper()
	select {
	case h.stream = <-h.node.streams:
		h.seq = 0
	case <-time.After(10 * time.Second):
		h.t.Fatal("the near cache opened no Watch stream")
	}
}

// send sends body as the stream's next message and waits until the client applied it.
func (h *nearHarness) send(body any) {
	h.t.Helper()
	h.seq++
	h.sendSeq(h.seq, body)
	for {
		select {
		case s := <-h.applied:
			if s == h.seq {
				return
			}
		case <-time.After(10 * time.Second):
			h.t.Fatalf("the near cache did not apply message %d", h.seq)
		}
	}
}

func (h *nearHarness) sendSeq(seq uint64, body any) {
	h.t.Helper()
	m := &pb.WatchResponse{Seq: seq}
	switch b := body.(type) {
	case *pb.WatchStart:
		m.Body = &pb.WatchResponse_Start{Start: b}
	case *pb.WatchEvents:
		m.Body = &pb.WatchResponse_Events{Events: b}
	case *pb.WatchHeartbeat:
		m.Body = &pb.WatchResponse_Heartbeat{Heartbeat: b}
	case *pb.WatchReset:
		m.Body = &pb.WatchResponse_Reset_{Reset_: b}
	default:
		h.t.Fatalf("no such body %T", body)
	}
	select {
	case h.stream.send <- m:
	case <-h.stream.done:
		h.t.Fatalf("stream ended before message %d", seq)
	case <-time.After(10 * time.Second):
		h.t.Fatalf("message %d not taken", seq)
	}
}

func positions(ago time.Duration) []*pb.WatchPosition {
	return []*pb.WatchPosition{{Topic: "t", Partition: 0, Offset: 1, CaughtUpAt: timestamppb.New(time.Now().Add(-ago))}}
}

// start opens the next stream and synchronizes it, the partition caught up ago.
func (h *nearHarness) start(ago time.Duration) {
	h.t.Helper()
	h.open()
	h.send(&pb.WatchStart{NodeId: "fake", MaxStaleness: durationpb.New(h.stale), Now: timestamppb.Now(),
		Topics: []*pb.WatchTopic{{Topic: "t", Partitions: 1}}, Positions: positions(ago)})
}

func (h *nearHarness) heartbeat(ago time.Duration) {
	h.t.Helper()
	h.send(&pb.WatchHeartbeat{Now: timestamppb.Now(), Positions: positions(ago)})
}

// event: the node applied key at v (an INVALIDATE), then streams it.
func (h *nearHarness) event(key string, v uint64) {
	h.t.Helper()
	h.node.set(key, v)
	h.send(&pb.WatchEvents{Topic: "t", Events: []*pb.WatchEvent{{Key: key, Version: v, Op: pb.Op_OP_INVALIDATE}}})
}

func (h *nearHarness) get(key string, opts ...GetOption) Item {
	h.t.Helper()
	it, err := h.cache.Get(context.Background(), key, opts...)
	if err != nil {
		h.t.Fatalf("Get(%q): %v", key, err)
	}
	return it
}

func expectItem(t *testing.T, it Item, tier Tier, version uint64) {
	t.Helper()
	if it.Tier != tier || it.Version != version || (version > 0 && string(it.Value) != string(value(it.Key, version))) {
		t.Fatalf("got %q@%d from %q, want @%d from %q", it.Value, it.Version, it.Tier, version, tier)
	}
}

func nearStats(t *testing.T, c *Cache) NearStats {
	t.Helper()
	st, ok := c.NearStats()
	if !ok {
		t.Fatal("no near cache")
	}
	return st
}

// TestNearCacheAnswersOnlyWhatTheNodeWould: a Get is answered in process only with a version at
// least min_version, while the key's partition is fresh within the node's max_staleness, and
// never from a stale or cache-aside answer.
func TestNearCacheAnswersOnlyWhatTheNodeWould(t *testing.T) {
	h := newNearHarness(t)
	h.start(0)
	h.node.set("k", 3)
	expectItem(t, h.get("k"), TierL1, 3)   // a miss fills the near cache
	expectItem(t, h.get("k"), TierNear, 3) // and the next read is answered in process
	h.node.set("k", 4)                     // written, event not yet here: the session's floor
	expectItem(t, h.get("k", MinVersion(4)), TierL1, 4)
	expectItem(t, h.get("k"), TierNear, 4)
	if it := h.get("k"); it.FreshAsOf.IsZero() || time.Since(it.FreshAsOf) > time.Minute {
		t.Fatalf("FreshAsOf = %v", it.FreshAsOf)
	}

	// Not found is cached too (at its version), as by L1.
	h.node.set("gone", 0)
	if it := h.get("gone"); it.Found || it.Tier != TierL1 {
		t.Fatalf("got %+v", it)
	}
	if it := h.get("gone"); it.Found || it.Tier != TierNear {
		t.Fatalf("got %+v, want a near-cache not-found", it)
	}

	// A stale answer (the node could not vouch for it) is not kept.
	h.node.mu.Lock()
	h.node.stale = true
	h.node.mu.Unlock()
	h.node.set("s", 1)
	h.get("s")
	if it := h.get("s"); it.Tier == TierNear {
		t.Fatalf("a stale answer was kept: %+v", it)
	}

	// Freshness: a partition last caught up beyond max_staleness answers nothing in process.
	gets := h.node.gets.Load()
	h.stale = 50 * time.Millisecond
	h.stream.end <- status.Error(codes.Unavailable, "restart (test)")
	h.start(time.Second) // caught up a second ago, the bound is 50 ms
	h.node.mu.Lock()
	h.node.stale = false
	h.node.mu.Unlock()
	h.get("k")
	if it := h.get("k"); it.Tier == TierNear {
		t.Fatalf("answered in process beyond max_staleness: %+v", it)
	}
	h.heartbeat(0)
	expectItem(t, h.get("k"), TierNear, 4)
	if h.node.gets.Load() <= gets {
		t.Fatal("no Get reached the node")
	}
	st := nearStats(t, h.cache)
	if st.Hits == 0 || st.Misses == 0 || st.Fills == 0 || st.Resyncs != 1 || st.Breaks != 1 || !st.Synced {
		t.Fatalf("stats = %+v", st)
	}
}

// TestNearCacheFillRacingAnEvent: an answer read before an event must not be kept once the event
// has been applied, in either order of their arrival.
func TestNearCacheFillRacingAnEvent(t *testing.T) {
	t.Run("event first", func(t *testing.T) {
		h := newNearHarness(t)
		h.start(0)
		h.node.set("k", 1)
		g := h.node.holdNext()
		done := make(chan Item)
		go func() { done <- h.get("k") }()
		if v := <-g.arrived; v != 1 {
			t.Fatalf("the held Get answers %d", v)
		}
		h.event("k", 2) // applied while the answer at 1 is on its way
		close(g.release)
		expectItem(t, <-done, TierL1, 1) // the caller gets the node's answer...
		expectItem(t, h.get("k"), TierL1, 2)
		expectItem(t, h.get("k"), TierNear, 2) // ...but the near cache never kept version 1
		if st := nearStats(t, h.cache); st.StaleFillsRejected != 1 {
			t.Fatalf("stale fills rejected = %d, want 1", st.StaleFillsRejected)
		}
	})
	t.Run("answer first", func(t *testing.T) {
		h := newNearHarness(t)
		h.start(0)
		h.node.set("k", 1)
		expectItem(t, h.get("k"), TierL1, 1)
		expectItem(t, h.get("k"), TierNear, 1)
		h.event("k", 2)
		expectItem(t, h.get("k"), TierL1, 2) // evicted: read through
	})
	t.Run("refresh", func(t *testing.T) {
		h := newNearHarness(t)
		h.start(0)
		h.node.set("k", 1)
		h.get("k")
		h.node.set("k", 2)
		h.send(&pb.WatchEvents{Topic: "t", Events: []*pb.WatchEvent{{Key: "k", Version: 2, Op: pb.Op_OP_UPSERT, Value: value("k", 2)}}})
		expectItem(t, h.get("k"), TierNear, 2) // refreshed in place
	})
}

// TestNearCacheStreamGap: a sequence gap means no near-cache answers until the client has
// resubscribed and flushed.
func TestNearCacheStreamGap(t *testing.T) {
	h := newNearHarness(t)
	h.start(0)
	h.node.set("k", 1)
	h.get("k")
	expectItem(t, h.get("k"), TierNear, 1)
	first := h.stream
	h.sendSeq(h.seq+2, &pb.WatchHeartbeat{Now: timestamppb.Now(), Positions: positions(0)}) // message h.seq+1 never came
	select {
	case <-first.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the client kept a stream with a gap")
	}
	// Until the next stream is synchronized, everything goes to the node, even what the near
	// cache holds (it may have missed events in the gap).
	h.node.set("k", 2) // the lost message: the event for version 2
	h.open()
	expectItem(t, h.get("k"), TierL1, 2)
	expectItem(t, h.get("k"), TierL1, 2)
	h.seq = 0
	h.send(&pb.WatchStart{NodeId: "fake", MaxStaleness: durationpb.New(h.stale), Now: timestamppb.Now(),
		Topics: []*pb.WatchTopic{{Topic: "t", Partitions: 1}}, Positions: positions(0)})
	expectItem(t, h.get("k"), TierL1, 2) // flushed at resync: read through again
	expectItem(t, h.get("k"), TierNear, 2)
	if st := nearStats(t, h.cache); st.Gaps != 1 || st.Resyncs != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestNearCacheNodeReset: the node flushing L1 flushes the near cache.
func TestNearCacheNodeReset(t *testing.T) {
	h := newNearHarness(t)
	h.start(0)
	h.node.set("k", 1)
	h.get("k")
	expectItem(t, h.get("k"), TierNear, 1)
	h.send(&pb.WatchReset{Topic: "t", Reason: "offset out of range (test)"})
	expectItem(t, h.get("k"), TierL1, 1)
}

// TestNearCacheSessionReadsItsWrites: a session's floor sends a read past an older near-cache
// entry to the node, and its hits raise the floor.
func TestNearCacheSessionReadsItsWrites(t *testing.T) {
	h := newNearHarness(t)
	h.start(0)
	h.node.set("k", 1)
	h.get("k")
	s := NewSession(h.cache, nil)
	h.node.set("k", 2)
	s.Observe("k", 2) // the session wrote version 2; its event has not arrived
	if it, err := s.Get(context.Background(), "k"); err != nil || it.Version != 2 || it.Tier == TierNear {
		t.Fatalf("got %+v, %v; want version 2 from the node", it, err)
	}
	if it, err := s.Get(context.Background(), "k"); err != nil || it.Version != 2 || it.Tier != TierNear {
		t.Fatalf("got %+v, %v; want version 2 from the near cache", it, err)
	}
	items, err := s.BatchGet(context.Background(), []string{"k", "other"})
	if err != nil || items[0].Tier != TierNear || items[0].Version != 2 || items[1].Key != "other" || items[1].Tier != TierL1 {
		t.Fatalf("BatchGet = %+v, %v", items, err)
	}
}

// TestNearCacheHitAllocatesNothing: the hit path is allocation-free.
func TestNearCacheHitAllocatesNothing(t *testing.T) {
	h := newNearHarness(t)
	h.start(0)
	h.node.set("k", 1)
	h.get("k")
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() {
		if it, _ := h.cache.Get(ctx, "k"); it.Tier != TierNear {
			panic("not a hit")
		}
	}); n != 0 {
		t.Fatalf("a near-cache hit allocates %v times", n)
	}
}

// TestNearCacheRandomSchedules drives random interleavings of node writes (events on the
// stream, or lost while it is down), reads held at the node while others run, gaps, broken
// streams and resyncs, and checks every near-cache answer against a model: never older than an
// event the client applied, than the node's state when the current stream started, or than any
// answer the client already returned for the key; and none while out of sync.
func TestNearCacheRandomSchedules(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 3
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomSchedule(t, uint64(seed)) })
	}
}

func randomSchedule(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	h := newNearHarness(t)
	h.start(0)
	keys := []string{"a", "b", "c"}
	version := map[string]uint64{} // the node's (the truth)
	floor := map[string]uint64{}   // what a near-cache answer must be at least
	type pending struct {
		key  string
		gate *getGate
		done chan Item
	}
	var held []pending
	up := true
	raise := func(k string, v uint64) { floor[k] = max(floor[k], v) }
	finish := func(p pending) {
		close(p.gate.release)
		it := <-p.done
		raise(p.key, it.Version) // the client returned it: nothing older may follow
	}
	check := func(step int, it Item) {
		t.Helper()
		if it.Tier == TierNear {
			if !up {
				t.Fatalf("step %d: answered %q@%d in process while out of sync", step, it.Key, it.Version)
			}
			if it.Version < floor[it.Key] {
				t.Fatalf("step %d: near cache answered %q@%d, but %d was applied or returned before", step, it.Key, it.Version, floor[it.Key])
			}
		}
		raise(it.Key, it.Version)
	}
	for step := range 300 {
		k := keys[rng.IntN(len(keys))]
		switch op := rng.IntN(10); {
		case op < 3: // the node applies a write
			version[k]++
			if up {
				h.event(k, version[k])
				raise(k, version[k])
			} else {
				h.node.set(k, version[k]) // lost with the stream
			}
		case op < 5 && len(held) < 3: // a read reaches the node and is held there
			p := pending{key: k, gate: h.node.holdNext(), done: make(chan Item, 1)}
			go func() { p.done <- h.get(p.key) }()
			select {
			case <-p.gate.arrived:
				held = append(held, p)
			case it := <-p.done: // answered in process: it never reached the node
				h.node.mu.Lock()
				h.node.gate = nil
				h.node.mu.Unlock()
				check(step, it)
			}
		case op < 6 && len(held) > 0: // a held read answers
			i := rng.IntN(len(held))
			finish(held[i])
			held = append(held[:i], held[i+1:]...)
		case op < 9: // a read
			check(step, h.get(k))
		default: // the stream breaks (gap or error), or comes back
			if !up {
				h.send(&pb.WatchStart{NodeId: "fake", MaxStaleness: durationpb.New(h.stale), Now: timestamppb.Now(),
					Topics: []*pb.WatchTopic{{Topic: "t", Partitions: 1}}, Positions: positions(0)})
				for key, v := range version {
					raise(key, v) // every answer from now on is at least the node's state now
				}
				up = true
				continue
			}
			old := h.stream
			if rng.IntN(2) == 0 {
				h.sendSeq(h.seq+2, &pb.WatchHeartbeat{Now: timestamppb.Now(), Positions: positions(0)})
			} else {
				old.end <- status.Error(codes.Unavailable, "broken (test)")
			}
			<-old.done
			h.open() // the client resubscribed; start comes later
			up = false
		}
	}
	for _, p := range held {
		finish(p)
	}
}

// BenchmarkNearCacheHit measures the hit path alone, from parallel goroutines (-cpu).
func BenchmarkNearCacheHit(b *testing.B) {
	nc, err := newNearCache(NearCacheConfig{Logger: slog.New(slog.DiscardHandler)}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	// Never opened: no stream; the benchmark sets the view.
	v := &nearView{maxStale: int64(time.Hour), topics: []nearTopic{{fresh: make([]atomic.Int64, 3)}}}
	for i := range v.topics[0].fresh {
		v.topics[0].fresh[i].Store(nc.now())
	}
	nc.view.Store(v)
	nc.synced.Store(true)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("k:%d", i)
		l := nc.shard(keys[i]).l
		l.Fill(keys[i], 1, make([]byte, 100), l.BeginFill())
	}
	c := &Cache{near: nc}
	ctx := context.Background()
	b.ReportAllocs()
	var worker atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(worker.Add(1)) * 7919 // workers read different keys at any moment
		for pb.Next() {
			if it, _ := c.Get(ctx, keys[i%len(keys)]); it.Tier != TierNear {
				panic("miss")
			}
			i++
		}
	})
}

// TestNearCacheCollector: the near cache's counters are exported to Prometheus.
func TestNearCacheCollector(t *testing.T) {
	h := newNearHarness(t)
	h.start(0)
	h.node.set("k", 1)
	h.get("k")
	h.get("k")
	reg := prometheus.NewRegistry()
	reg.MustRegister(NearCacheCollector(h.cache, prometheus.Labels{"node": "fake"}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			got[f.GetName()] += v
		}
	}
	for name, want := range map[string]float64{"cachewire_near_hits_total": 1, "cachewire_near_misses_total": 1,
		"cachewire_near_fills_total": 1, "cachewire_near_entries": 1, "cachewire_near_synced": 1} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], want, got)
		}
	}
	plain, err := NewCache("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if n := testutil.CollectAndCount(NearCacheCollector(plain, nil)); n != 0 {
		t.Fatalf("a client without a near cache exported %d metrics", n)
	}
}
