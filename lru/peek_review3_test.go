package lru

import (
	"sync"
	"testing"
	"time"
)

// TestPeekAgreesWithGetOnExpiredValues_review3: Peek is what Explain reports as L1's entry. A
// value past its TTL (NegativeTTL for a cached "not found") is no longer served by Get, so Peek
// must not report it as held either (Explain and cachectl would judge the node by it).
func TestPeekAgreesWithGetOnExpiredValues_review3(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c, err := New(Config{TTL: time.Minute, NegativeTTL: time.Second, Now: clock}) // default jitter: ±10%
	if err != nil {
		t.Fatal(err)
	}
	if !c.FillMissing("k", 3, c.BeginFill()) {
		t.Fatal("FillMissing refused")
	}
	if _, ok, _ := c.Peek("k"); !ok {
		t.Fatal("Peek does not see the fresh entry")
	}
	mu.Lock()
	now = now.Add(10 * time.Second) // past NegativeTTL, with any jitter
	mu.Unlock()
	it, peekOK, st := c.Peek("k")
	_, getOK := c.Get("k")
	if peekOK != getOK {
		t.Fatalf("after NegativeTTL: Peek = %+v %v (state %+v), Get ok = %v; want them to agree", it, peekOK, st, getOK)
	}
}
