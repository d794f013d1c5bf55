package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

func upsertAt(key string, v uint64, value string) invalidation.Event {
	return invalidation.Event{Key: key, Version: v, Op: invalidation.OpUpsert, Value: []byte(value), HasValue: true}
}

// getNow runs one Get to completion inside the bubble, releasing the origin loads it starts
// (loads pending before it stay pending).
func (b *bareNode) getNow(t *testing.T, key string, minVersion uint64) result {
	t.Helper()
	before := b.origin.numPending()
	g := b.startGet(key, minVersion)
	synctest.Wait()
	for b.origin.numPending() > before {
		b.origin.releaseAt(before)
		synctest.Wait()
	}
	return recv(t, g)
}

// TestLeaseReviewRefreshAllAfterLeasedAnswerEvictedForRoom: under refresh-all, a versionless
// answer (v6, labelled 1 because L1 knew 1) is served; L1 then evicts it for room, leaving a
// tombstone at 1 without the lease mark. The UPSERT at 2, still on its way when v6 was read,
// is then written to L1 with its value, and the node serves v2 after v6 (invariant 10).
func TestLeaseReviewRefreshAllAfterLeasedAnswerEvictedForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBareNode(t, lru.Config{MaxEntries: 1})
		b.origin.versionless = true
		b.Node.cfg.Policy = invalidation.RefreshAll
		ev1 := invalidateAt("k", 1)
		b.applyL1(ev1)
		b.l2.Apply(context.Background(), &ev1, invalidation.RefreshAll)
		b.origin.put("k", 6, "v6") // written at 2..6; the events are not delivered yet
		if r := b.getNow(t, "k", 0); r.err != nil || string(r.r.value) != "v6" {
			t.Fatalf("first read: %v %q, want v6", r, r.r.value)
		}
		b.origin.put("other", 1, "o")
		if r := b.getNow(t, "other", 0); r.err != nil {
			t.Fatal(r.err)
		} // L1 (one entry) evicts k for room
		ev2 := upsertAt("k", 2, "v2")
		b.applyL1(ev2)
		b.l2.Apply(context.Background(), &ev2, invalidation.RefreshAll)
		if r := b.getNow(t, "k", 0); r.err == nil && string(r.r.value) == "v2" {
			t.Fatalf("the node served v6, then v2 (%v): the UPSERT at 2 refreshed the tombstone the evicted versionless answer left", r)
		}
	})
}

// slowGetL2 is a memL2 whose next Get reads the entry, then waits until the test releases it
// before it returns (a slow Redis reply).
type slowGetL2 struct {
	*memL2
	armed chan struct{} // non-nil: the next Get blocks on it
}

func (s *slowGetL2) Get(ctx context.Context, key string) (redistier.Entry, bool, error) {
	s.mu.Lock()
	gate := s.armed
	s.armed = nil
	s.mu.Unlock()
	e, found, err := s.memL2.Get(ctx, key)
	if gate != nil {
		<-gate
	}
	return e, found, err
}

// TestLeaseReviewL2ReadRacingALeasedFill: Redis holds a versionless answer v1 at version 0,
// filled earlier by another node. Read 1 reads it from Redis slowly. Meanwhile v2 is written,
// and a read with min_version 1 (not joining read 1's load) reads v2 from the origin under a
// lease: L1 and Redis take it at version 0 (the read itself gets errVersionless), and a plain
// read is served v2 from L1. Then read 1's Redis answer returns: FillVersionless checks only the
// version rule (0 >= 0), so the older v1 replaces v2 in L1, and the next read is served v1.
func TestLeaseReviewL2ReadRacingALeasedFill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBareNode(t, lru.Config{})
		b.origin.versionless = true
		slow := &slowGetL2{memL2: b.l2}
		b.Node.l2 = slow
		b.Node.leaseL2.Store(true)
		ctx := context.Background()
		b.origin.put("k", 1, "v1")
		l, _ := b.l2.BeginLease(ctx, "k")
		if ok, _ := b.l2.FillLeased(ctx, l, "k", []byte("v1"), false); !ok {
			t.Fatal("setup: Redis refused v1")
		}
		gate := make(chan struct{})
		slow.mu.Lock()
		slow.armed = gate
		slow.mu.Unlock()
		g1 := b.startGet("k", 0) // reads Redis: v1, slowly
		synctest.Wait()
		b.origin.put("k", 2, "v2")
		if r := b.getNow(t, "k", 1); !errors.Is(r.err, errVersionless) {
			t.Fatalf("min_version=1 read: %v, want errVersionless", r)
		}
		if r := b.getNow(t, "k", 0); r.err != nil || string(r.r.value) != "v2" {
			t.Fatalf("plain read after the lease fill: %v %q, want v2 from L1", r, r.r.value)
		}
		close(gate)
		synctest.Wait()
		for b.origin.numPending() > 0 { // the refused Redis answer sends read 1 to the origin
			b.origin.releaseAt(0)
			synctest.Wait()
		}
		_ = recv(t, g1) // overlaps the reads above: either answer would do
		if r := b.getNow(t, "k", 0); r.err == nil && string(r.r.value) == "v1" {
			t.Fatalf("the node served v2, then v1 (%v): a slow L2 read put the older versionless answer over the newer one in L1", r)
		}
	})
}

// TestLeaseReviewMixedOriginVersionedAnswerOverLeasedNotFound: an HTTP origin that sends
// Cachewire-Version with its 200s but not with its 404s (design 12 names such 404s). Read 1
// loads v1@1. The key is deleted at 2; a read with min_version 2 loads the 404, versionless,
// which L1 stores under a lease at 1 (the read itself gets errVersionless), and a plain read is
// served not-found. Then read 1's v1@1 returns: the version rule takes it over the leased
// not-found at the same version (Keep, and Redis's fill mode), and the next read is served v1,
// which is older than the deletion the node served (invariant 10).
func TestLeaseReviewMixedOriginVersionedAnswerOverLeasedNotFound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBareNode(t, lru.Config{})
		ev1 := invalidateAt("k", 1)
		b.applyL1(ev1)
		b.l2.Apply(context.Background(), &ev1, invalidation.RefreshHeld)
		b.origin.put("k", 1, "v1")
		g1 := b.startGet("k", 0) // a 200 with a version: v1@1
		synctest.Wait()
		b.origin.del("k", 2) // its event is not delivered yet
		g2 := b.startGet("k", 2)
		synctest.Wait()
		if n := b.origin.numPending(); n != 2 {
			t.Fatalf("%d loads pending, want 2", n)
		}
		b.origin.mu.Lock()
		b.origin.versionless = true // the 404 carries no version
		b.origin.mu.Unlock()
		b.origin.releaseAt(1)
		synctest.Wait()
		if r := recv(t, g2); !errors.Is(r.err, errVersionless) {
			t.Fatalf("min_version=2 read: %v, want errVersionless", r)
		}
		if r := b.getNow(t, "k", 0); r.err != nil || r.r.found {
			t.Fatalf("plain read: %v, want not found (from L1)", r)
		}
		b.origin.mu.Lock()
		b.origin.versionless = false
		b.origin.mu.Unlock()
		b.origin.releaseAt(0)
		synctest.Wait()
		_ = recv(t, g1)
		if r := b.getNow(t, "k", 0); r.err == nil && r.r.found && string(r.r.value) == "v1" {
			t.Fatalf("the node served not-found (deleted at 2), then v1 (%v): a versioned answer read earlier replaced the leased not-found", r)
		}
		if e, ok, _ := b.l2.Get(context.Background(), "k"); ok && !e.Missing {
			t.Errorf("Redis holds %q@%d over the not-found a node served", e.Value, e.Version)
		}
	})
}

// fixedOriginClient is an OriginService that cannot say when a key was deleted: it answers
// found=false with version 0 ("0: never written, or unknown", origin.proto).
type fixedOriginClient struct{ resp *pb.LoadResponse }

func (c fixedOriginClient) Load(context.Context, *pb.LoadRequest, ...grpc.CallOption) (*pb.LoadResponse, error) {
	return c.resp, nil
}

func (c fixedOriginClient) BatchLoad(context.Context, *pb.BatchLoadRequest, ...grpc.CallOption) (*pb.BatchLoadResponse, error) {
	return nil, errors.New("not used")
}

// TestLeaseReviewGRPCNotFoundWithoutVersion: v1 was written at 1 and deleted at 2; neither
// event is delivered yet. A gRPC origin that cannot version its answers says found=false,
// version=0. grpcOrigin treats that as a versioned "never written" at 0 (a found answer at 0 is
// versionless, and so is an HTTP 404 without the header), so it is cached unleased, and the
// UPSERT at 1 carrying v1 refreshes it under refresh-held: the node serves not-found, then v1.
func TestLeaseReviewGRPCNotFoundWithoutVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBareNode(t, lru.Config{})
		b.Node.cfg.Loader = &grpcOrigin{client: fixedOriginClient{resp: &pb.LoadResponse{Found: false, Version: 0}}}
		if r := b.getNow(t, "k", 0); r.err != nil || r.r.found {
			t.Fatalf("first read: %v, want not found", r)
		}
		ev1 := upsertAt("k", 1, "v1")
		b.applyL1(ev1)
		b.l2.Apply(context.Background(), &ev1, invalidation.RefreshHeld)
		if r := b.getNow(t, "k", 0); r.err == nil && r.r.found {
			t.Fatalf("the node served not-found (the key was deleted at 2), then %q@%d from %v: an unversioned 404 was cached as a versioned one", r.r.value, r.r.version, r.r.tier)
		}
	})
}

// TestLeaseReviewMemL2MatchesScriptOnLeases runs the same lease sequences on memL2 (the fake the
// read-path tests use) and on the real tier over Redis: they must agree. memL2 compares write
// generations; the script compares the entry's SHA-1, and a Drop over a marked tombstone writes
// the same bytes again.
func TestLeaseReviewMemL2MatchesScriptOnLeases(t *testing.T) {
	r := testenv.NewRedis(t)
	tier, err := redistier.New(redistier.Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	mem := newMemL2()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type tierOps interface {
		BeginLease(ctx context.Context, key string) (redistier.Lease, error)
		FillLeased(ctx context.Context, l redistier.Lease, key string, value []byte, missing bool) (bool, error)
		Drop(ctx context.Context, key string) error
		Get(ctx context.Context, key string) (redistier.Entry, bool, error)
	}
	seqs := map[string]func(tr tierOps, key string) string{
		"drop, lease, drop, fill": func(tr tierOps, key string) string {
			_ = tr.Drop(ctx, key)
			l, _ := tr.BeginLease(ctx, key)
			_ = tr.Drop(ctx, key)
			ok, err := tr.FillLeased(ctx, l, key, []byte("old"), false)
			return fmt.Sprint(ok, err)
		},
		"drop, lease x2, fill, drop, fill": func(tr tierOps, key string) string {
			_ = tr.Drop(ctx, key)
			lb, _ := tr.BeginLease(ctx, key)
			lc, _ := tr.BeginLease(ctx, key)
			ok1, _ := tr.FillLeased(ctx, lc, key, []byte("newer"), false)
			_ = tr.Drop(ctx, key)
			ok2, err := tr.FillLeased(ctx, lb, key, []byte("old"), false)
			return fmt.Sprint(ok1, ok2, err)
		},
	}
	i := 0
	for name, seq := range seqs {
		i++
		key := fmt.Sprintf("k-%d", i)
		gotMem, gotLua := seq(mem, key), seq(tier, key)
		if gotMem != gotLua {
			t.Errorf("%s: memL2 says %s, the Lua script says %s", name, gotMem, gotLua)
		}
	}
}

// TestLeaseReviewTwoNodesDropThenOlderLeaseFill: the A-B-A above, end to end over the real
// script. Redis holds a marked tombstone (an earlier drop). Node B takes its Redis lease and
// reads v1. v2 is written; node A (just started: its first versionless answer, so no Redis
// lease) reads v2, serves it and drops Redis's entry, which rewrites the same tombstone. B's
// compare-and-set then succeeds and Redis holds v1. Once A's L1 lets go of v2 (evicted for
// room), A reads v1 back from Redis: older than what it served (invariant 10). memL2 refuses
// B's fill, so the bareNode tests cannot see this.
func TestLeaseReviewTwoNodesDropThenOlderLeaseFill(t *testing.T) {
	r := testenv.NewRedis(t)
	newTier := func() *redistier.Tier {
		tr, err := redistier.New(redistier.Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		return tr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, bn := newBareNode(t, lru.Config{MaxEntries: 1}), newBareNode(t, lru.Config{})
	a.origin.versionless = true
	a.Node.l2, bn.Node.l2 = newTier(), newTier()
	bn.origin = a.origin
	bn.Node.cfg.Loader = a.origin
	bn.Node.leaseL2.Store(true)                       // B has seen versionless answers before; A has just started
	if err := bn.Node.l2.Drop(ctx, "k"); err != nil { // left by an earlier drop
		t.Fatal(err)
	}
	waitPending := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); a.origin.numPending() != n; {
			if time.Now().After(deadline) {
				t.Fatalf("%d loads pending, want %d", a.origin.numPending(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait := func(ch chan result) result {
		t.Helper()
		select {
		case res := <-ch:
			return res
		case <-time.After(10 * time.Second):
			t.Fatal("read did not finish")
			return result{}
		}
	}
	// finish waits for a read, releasing any origin load it starts.
	finish := func(ch chan result) result {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			select {
			case res := <-ch:
				return res
			default:
			}
			if a.origin.numPending() > 0 {
				a.origin.releaseAt(0)
			}
		}
		t.Fatal("read did not finish")
		return result{}
	}
	a.origin.put("k", 1, "v1")
	gb := bn.startGet("k", 0)
	waitPending(1)
	a.origin.put("k", 2, "v2")
	ga := a.startGet("k", 0)
	waitPending(2)
	a.origin.releaseAt(1) // A's load: v2
	if res := wait(ga); res.err != nil || string(res.r.value) != "v2" {
		t.Fatalf("node A: %v %q, want v2", res, res.r.value)
	}
	a.origin.releaseAt(0) // B's load: v1, read before v2 was written
	if res := wait(gb); res.err != nil {
		t.Fatalf("node B: %v", res)
	}
	a.origin.put("other", 1, "o")
	if res := finish(a.startGet("other", 0)); res.err != nil { // A's L1 (one entry) evicts k
		t.Fatal(res.err)
	}
	res := finish(a.startGet("k", 0))
	if res.err == nil && string(res.r.value) == "v1" {
		t.Fatalf("node A served v2, then v1 from %v: Redis took B's older answer after A's drop", res.r.tier)
	}
}
