package lru

import (
	"testing"
	"time"

	"github.com/cachewire/cachewire/invalidation"
)

// Review tests for EVICT (ec95b91) and tombstone expiry (e5411df): interleavings in which a
// fill whose load began before an EVICT brings back what the EVICT dropped.

func evictEvent(key string) *invalidation.Event {
	return &invalidation.Event{Key: key, Op: invalidation.OpEvict}
}

// TestEvictOfKeyL1DoesNotHoldRefusesLoadBegunBefore: the EVICT drops the value from every
// tier, but this L1 holds no value for the key (it never read it, its tombstone expired, or it
// holds only a tombstone). A load that began before the EVICT may carry the dropped value (read
// from Redis, or from the origin before it was repaired): its fill may not land after the EVICT.
func TestEvictOfKeyL1DoesNotHoldRefusesLoadBegunBefore(t *testing.T) {
	for _, start := range []string{"unknown", "tombstone expired", "young tombstone at the version", "tombstone of a value evicted for room"} {
		t.Run(start, func(t *testing.T) {
			c, clk := newTest(t, Config{MaxEntries: 1})
			switch start {
			case "tombstone expired":
				c.Apply(invalidate("k", 3), invalidation.RefreshHeld)
				clk.advance(31 * time.Second)
			case "young tombstone at the version":
				c.Apply(invalidate("k", 3), invalidation.RefreshHeld)
			case "tombstone of a value evicted for room":
				c.Fill("k", 3, []byte("suspect"), c.BeginFill())
				c.Fill("other", 1, []byte("x"), c.BeginFill()) // k leaves for room, young: a tombstone
				if st := c.State("k"); !st.Known || !st.Tombstone || st.Version != 3 {
					t.Fatalf("State = %+v, want tombstone@3", st)
				}
			}
			before := c.BeginFill() // a load starts and reads the suspect value at 3
			c.Apply(evictEvent("k"), invalidation.RefreshHeld)
			if c.Fill("k", 3, []byte("suspect"), before) {
				t.Fatal("a fill begun before the EVICT was accepted: the dropped value is back in L1")
			}
			if c.Keep("k", 3, []byte("suspect"), false, before) {
				t.Fatal("an answer read before the EVICT was kept")
			}
			if !c.Fill("k", 3, []byte("repaired"), c.BeginFill()) {
				t.Fatal("a fill begun after the EVICT was refused")
			}
			mustGet(t, c, "k", 3, "repaired")
		})
	}
}

// TestPreEvictFillAfterPostEvictFill: the EVICT turns k@3 into a tombstone that refuses
// fills begun before it. A load begun after the EVICT fills the repaired value at 3, which
// replaces the tombstone (or the repaired value is then evicted for room, leaving a plain
// tombstone): the mark is gone, and the slow load begun before the EVICT puts the dropped value
// back at the same version.
func TestPreEvictFillAfterPostEvictFill(t *testing.T) {
	for _, then := range []string{"repaired value held", "repaired value evicted for room"} {
		t.Run(then, func(t *testing.T) {
			c, _ := newTest(t, Config{MaxEntries: 1})
			c.Apply(upsert("k", 3, "suspect"), invalidation.RefreshAll)
			before := c.BeginFill() // a slow load reads suspect@3
			c.Apply(evictEvent("k"), invalidation.RefreshHeld)
			if !c.Fill("k", 3, []byte("repaired"), c.BeginFill()) {
				t.Fatal("a fill begun after the EVICT was refused")
			}
			if then == "repaired value evicted for room" {
				c.Fill("other", 1, []byte("x"), c.BeginFill())
			}
			if c.Fill("k", 3, []byte("suspect"), before) {
				t.Fatal("a fill begun before the EVICT was accepted after a fill begun after it: the dropped value is back")
			}
			if c.Keep("k", 3, []byte("suspect"), false, before) {
				t.Fatal("an answer read before the EVICT was kept")
			}
		})
	}
}

// TestEvictMarkForgottenRaisesFence: what holds: when L1 must forget an EVICT while it is
// young (its tombstone budget overflows, or a flush), every load begun before is fenced.
func TestEvictMarkForgottenRaisesFence(t *testing.T) {
	c, _ := newTest(t, Config{MaxTombstones: 1})
	c.Apply(upsert("k", 3, "suspect"), invalidation.RefreshAll)
	before := c.BeginFill()
	c.Apply(evictEvent("k"), invalidation.RefreshHeld)
	c.Apply(invalidate("x", 1), invalidation.RefreshHeld) // pushes k's tombstone out while young
	if c.Fill("k", 3, []byte("suspect"), before) {
		t.Fatal("a fill begun before the EVICT was accepted after L1 forgot the EVICT")
	}
	after := c.BeginFill()
	if !c.Fill("k", 3, []byte("repaired"), after) {
		t.Fatal("a fill begun after was refused")
	}
}
