package redistier

import (
	"testing"
)

// TestLeaseReviewRefusedAfterADrop: Drop over a marked tombstone ("V t <epoch> l") rewrites the
// very same bytes, so a lease taken on that tombstone before the Drop still matches its SHA-1.
// The Drop was done by a node that served a versionless answer Redis did not take; the lease's
// load may have read the origin before that answer, so its fill must be refused (node/memL2,
// which compares write generations, refuses it). The Lua script takes it: Redis then holds an
// answer older than one a node served, and that node reads it back once its L1 lets go.
func TestLeaseReviewRefusedAfterADrop(t *testing.T) {
	tier, _ := newTier(t)
	ctx := ctxT(t)
	// An earlier drop (or an event evicting a leased answer) left a marked tombstone.
	if err := tier.Drop(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	// Node B takes its lease and reads the origin: v1.
	lb, err := tier.BeginLease(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	// v2 is written. Node A (no Redis lease: its first versionless answer, or its own CAS
	// failed, or L1 knew a higher version than Redis) reads v2, serves it and drops Redis's entry.
	if err := tier.Drop(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	// B's older answer must not land now.
	if ok, err := tier.FillLeased(ctx, lb, "k", []byte("v1"), false); ok || err != nil {
		e, _, _ := tier.Get(ctx, "k")
		t.Fatalf("FillLeased after a Drop = %v, %v; Redis now serves %q@%d, older than the answer the dropping node served", ok, err, e.Value, e.Version)
	}
}

// TestLeaseReviewRefusedAfterFillAndDrop: the same A-B-A through a fill: C fills its answer
// under a lease on the marked tombstone, A (whose CAS then fails) drops it, which restores the
// tombstone's bytes; B's lease, taken before either and read before both, still matches.
func TestLeaseReviewRefusedAfterFillAndDrop(t *testing.T) {
	tier, _ := newTier(t)
	ctx := ctxT(t)
	if err := tier.Drop(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	lb, err := tier.BeginLease(ctx, "k") // B reads v1
	if err != nil {
		t.Fatal(err)
	}
	lc, _ := tier.BeginLease(ctx, "k") // C reads v2
	la, _ := tier.BeginLease(ctx, "k") // A reads v3
	if ok, err := tier.FillLeased(ctx, lc, "k", []byte("v2"), false); !ok || err != nil {
		t.Fatalf("C's fill: %v %v", ok, err)
	}
	if ok, _ := tier.FillLeased(ctx, la, "k", []byte("v3"), false); ok {
		t.Fatal("A's fill landed over C's")
	}
	if err := tier.Drop(ctx, "k"); err != nil { // A served v3, Redis did not take it: drop
		t.Fatal(err)
	}
	if ok, err := tier.FillLeased(ctx, lb, "k", []byte("v1"), false); ok || err != nil {
		e, _, _ := tier.Get(ctx, "k")
		t.Fatalf("B's fill after C's fill and A's drop = %v, %v; Redis serves %q@%d, older than v2 and v3 that C and A served", ok, err, e.Value, e.Version)
	}
}
