package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// Deterministic interleavings of loads from a versionless origin (leases, ARCHITECTURE.md
// invariant 12) with events and with each other.

func newVersionlessNode(t *testing.T) *bareNode {
	b := newBareNode(t, lru.Config{})
	b.origin.versionless = true
	return b
}

func invalidateAt(key string, v uint64) invalidation.Event {
	return invalidation.Event{Key: key, Version: v, Op: invalidation.OpInvalidate}
}

// TestVersionlessAnswerRacingAnEventIsNotKept: a load reads v1 from a versionless origin; v2
// is written and its event reaches L1 and Redis before the answer returns. The old answer must
// be neither served nor cached: the read loads again and serves v2, stored at version 2 in both
// tiers, where a later event still evicts it.
func TestVersionlessAnswerRacingAnEventIsNotKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newVersionlessNode(t)
		b.origin.put("k", 1, "v1")
		g := b.startGet("k", 0)
		synctest.Wait()
		b.origin.put("k", 2, "v2")
		ev := invalidateAt("k", 2)
		b.applyL1(ev)
		b.l2.Apply(context.Background(), &ev, invalidation.RefreshHeld)
		b.origin.releaseAt(0) // the answer read before the write
		synctest.Wait()
		if n := b.origin.numPending(); n != 1 {
			t.Fatalf("%d loads pending after the stale answer returned, want 1: the read must load again", n)
		}
		b.origin.releaseAt(0)
		synctest.Wait()
		r := recv(t, g)
		if r.err != nil || string(r.r.value) != "v2" || r.r.version != 2 || r.r.tier != pb.Tier_TIER_ORIGIN {
			t.Fatalf("got %v %q, want v2 at version 2 from the origin", r, r.r.value)
		}
		if it, ok := b.l1.Get("k"); !ok || string(it.Value) != "v2" || it.Version != 2 {
			t.Fatalf("L1 holds %+v %v, want v2@2", it, ok)
		}
		if e, ok, _ := b.l2.Get(context.Background(), "k"); !ok || string(e.Value) != "v2" || e.Version != 2 {
			t.Fatalf("Redis holds %q@%d %v, want v2@2", e.Value, e.Version, ok)
		}
		ev3 := invalidateAt("k", 3)
		b.applyL1(ev3)
		b.l2.Apply(context.Background(), &ev3, invalidation.RefreshHeld)
		if _, ok := b.l1.Get("k"); ok {
			t.Fatal("an event above the lease's version did not evict the answer from L1")
		}
		if _, ok, _ := b.l2.Get(context.Background(), "k"); ok {
			t.Fatal("an event above the lease's version did not evict the answer from Redis")
		}
	})
}

// TestOlderVersionlessAnswerDoesNotOverwriteANewerOne: two nodes share Redis. Node A reads v1
// from the origin and is held; v2 is committed (its event not yet delivered anywhere); node B
// reads v2 and fills Redis at the same version as A would. A's answer, returning last, may be
// served by A (its read began first and L1 saw nothing), but must not replace B's newer one in
// Redis; and A, unable to order B's answer against its own, drops it from Redis.
func TestOlderVersionlessAnswerDoesNotOverwriteANewerOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, bn := newVersionlessNode(t), newVersionlessNode(t)
		bn.Node.l2, bn.l2 = a.l2, a.l2
		bn.origin = a.origin
		bn.Node.cfg.Loader = a.origin
		a.Node.leaseL2.Store(true)
		bn.Node.leaseL2.Store(true)
		a.origin.put("k", 1, "v1")
		ga := a.startGet("k", 0)
		synctest.Wait()
		a.origin.put("k", 2, "v2")
		gb := bn.startGet("k", 0)
		synctest.Wait()
		a.origin.releaseAt(1) // B's load, which read v2
		synctest.Wait()
		if r := recv(t, gb); r.err != nil || string(r.r.value) != "v2" {
			t.Fatalf("node B got %v %q, want v2", r, r.r.value)
		}
		a.origin.releaseAt(0) // A's load, which read v1 before v2 was written
		synctest.Wait()
		if r := recv(t, ga); r.err != nil || string(r.r.value) != "v1" {
			t.Fatalf("node A got %v %q, want v1 (its read began before v2)", r, r.r.value)
		}
		// Redis did not take A's answer, and dropped B's: it held an answer at the version A
		// served, which A cannot order against its own.
		if e, ok, _ := a.l2.Get(context.Background(), "k"); ok {
			t.Fatalf("Redis serves %q@%d; want nothing (A's older answer refused, the entry A cannot order dropped)", e.Value, e.Version)
		}
		if a.gaps.blocks("k") || bn.gaps.blocks("k") {
			t.Fatal("a node does not read the key from Redis, though Redis holds nothing it could go back to")
		}
	})
}

// TestVersionlessAnswerCannotProveMinVersion: a read with min_version > 0 that reaches a
// versionless origin gets Unavailable naming the reason; a plain read is served, and a read with
// min_version is then served from L1 only when L1 holds a version that proves it.
func TestVersionlessAnswerCannotProveMinVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newVersionlessNode(t)
		b.origin.put("k", 5, "v5")
		b.applyL1(invalidateAt("k", 5))
		g := b.startGet("k", 5)
		synctest.Wait()
		b.origin.releaseAt(0)
		synctest.Wait()
		r := recv(t, g)
		if !errors.Is(r.err, errVersionless) {
			t.Fatalf("min_version=5 read got %v, want errVersionless", r)
		}
		if st := toStatus(r.err); st == nil || !containsAll(st.Error(), "Unavailable", "min_version 5", VersionHeader) {
			t.Fatalf("status %v: want Unavailable naming min_version and the header", st)
		}
		g = b.startGet("k", 0)
		synctest.Wait()
		if b.origin.numPending() > 0 {
			b.origin.releaseAt(0)
			synctest.Wait()
		}
		if r := recv(t, g); r.err != nil || string(r.r.value) != "v5" || r.r.version != 5 {
			t.Fatalf("plain read got %v, want v5 at version 5 (what L1 knew when the load began)", r)
		}
		g = b.startGet("k", 5)
		synctest.Wait()
		if r := recv(t, g); r.err != nil || r.r.tier != pb.Tier_TIER_L1 || r.r.version != 5 {
			t.Fatalf("min_version=5 read after the fill got %v, want v5 from L1", r)
		}
	})
}

// TestVersionlessNotFoundAfterADelete: the origin's 404 says nothing of the deletion's
// version. Under a lease it is cached at the version L1 knew (the delete's), and served.
func TestVersionlessNotFoundAfterADelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newVersionlessNode(t)
		b.origin.del("k", 3)
		b.applyL1(invalidation.Event{Key: "k", Version: 3, Op: invalidation.OpDelete})
		g := b.startGet("k", 0)
		synctest.Wait()
		b.origin.releaseAt(0)
		synctest.Wait()
		if r := recv(t, g); r.err != nil || r.r.found || r.r.version != 3 {
			t.Fatalf("got %v, want not found at version 3", r)
		}
		if it, ok := b.l1.Get("k"); !ok || !it.Missing || it.Version != 3 {
			t.Fatalf("L1 holds %+v %v, want a not-found at 3", it, ok)
		}
	})
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
