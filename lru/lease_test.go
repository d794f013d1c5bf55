package lru

import (
	"testing"
	"time"

	"github.com/cachewire/cachewire/invalidation"
)

// TestLeaseFillsOnlyWhenNothingChanged: an answer from a versionless origin is stored at the
// version the tier knew when the load began, and only if nothing about the key changed in
// between; whatever changed, the fill is refused.
func TestLeaseFillsOnlyWhenNothingChanged(t *testing.T) {
	cases := []struct {
		name   string
		start  func(c *Cache)             // what the tier holds when the load begins
		during func(c *Cache, clk *clock) // what happens while it runs
		want   bool                       // whether the fill lands
		at     uint64                     // the version it lands at
	}{
		{name: "unknown key, nothing happens", want: true, at: 0},
		{name: "tombstone, nothing happens", start: func(c *Cache) { c.Apply(invalidate("k", 4), invalidation.RefreshHeld) }, want: true, at: 4},
		{name: "value, nothing happens", start: func(c *Cache) { c.Fill("k", 3, []byte("v3"), c.BeginFill()) }, want: true, at: 3},
		{name: "an event evicts the key", during: func(c *Cache, _ *clock) { c.Apply(invalidate("k", 5), invalidation.RefreshHeld) }},
		{name: "an event refreshes the key", start: func(c *Cache) { c.Fill("k", 3, []byte("v3"), c.BeginFill()) },
			during: func(c *Cache, _ *clock) { c.Apply(upsert("k", 5, "v5"), invalidation.RefreshHeld) }},
		{name: "another versionless fill at the same version", start: func(c *Cache) { c.Apply(invalidate("k", 4), invalidation.RefreshHeld) },
			during: func(c *Cache, _ *clock) {
				l := c.BeginLease("k", c.BeginFill())
				if _, ok := c.FillLeased("k", l, []byte("newer"), false); !ok {
					panic("the other fill was refused")
				}
			}},
		{name: "a versioned fill", during: func(c *Cache, _ *clock) { c.Fill("k", 2, []byte("v2"), c.BeginFill()) }},
		{name: "an EVICT", start: func(c *Cache) { c.Fill("k", 3, []byte("v3"), c.BeginFill()) },
			during: func(c *Cache, _ *clock) { c.Apply(evictEvent("k"), invalidation.RefreshHeld) }},
		{name: "an EVICT of a key the tier does not hold", during: func(c *Cache, _ *clock) { c.Apply(evictEvent("k"), invalidation.RefreshHeld) }},
		{name: "a flush", during: func(c *Cache, _ *clock) { c.Flush() }},
		{name: "the value expires", start: func(c *Cache) { c.Fill("k", 3, []byte("v3"), c.BeginFill()) },
			during: func(c *Cache, clk *clock) { clk.advance(2 * time.Minute); c.Get("k") }},
		{name: "the value leaves for room", start: func(c *Cache) { c.Fill("k", 3, []byte("v3"), c.BeginFill()) },
			during: func(c *Cache, _ *clock) { c.Fill("other", 1, []byte("x"), c.BeginFill()) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := newTest(t, Config{MaxEntries: 1, TTL: time.Minute, TTLJitter: -1})
			if tc.start != nil {
				tc.start(c)
			}
			l := c.BeginLease("k", c.BeginFill())
			if tc.during != nil {
				tc.during(c, clk)
			}
			before := c.State("k")
			got, ok := c.FillLeased("k", l, []byte("answer"), false)
			if ok != tc.want {
				t.Fatalf("FillLeased = %v, want %v", ok, tc.want)
			}
			if !ok {
				if st := c.State("k"); st != before {
					t.Fatalf("a refused fill changed the state: %+v -> %+v", before, st)
				}
				if it, held := c.Get("k"); held && string(it.Value) == "answer" {
					t.Fatal("a refused fill is held")
				}
				return
			}
			it, held := c.Get("k")
			if !held || string(it.Value) != "answer" || it.Version != tc.at || got.Version() != tc.at {
				t.Fatalf("after the fill: %+v held=%v lease@%d, want answer@%d", it, held, got.Version(), tc.at)
			}
			if !c.Leased("k", got) {
				t.Fatal("Leased is false right after the fill")
			}
			c.Apply(invalidate("k", tc.at+1), invalidation.RefreshHeld)
			if c.Leased("k", got) {
				t.Fatal("Leased is still true after an event evicted the answer")
			}
		})
	}
}

// TestLeasedSeesAReplacementAtTheSameVersion: two versionless answers stored at the same
// version cannot be ordered by it; the one stored later was read later. An answer that was
// replaced may not be served.
func TestLeasedSeesAReplacementAtTheSameVersion(t *testing.T) {
	c, _ := newTest(t, Config{})
	c.Apply(invalidate("k", 4), invalidation.RefreshHeld)
	first, ok := c.FillLeased("k", c.BeginLease("k", c.BeginFill()), []byte("older"), false)
	if !ok {
		t.Fatal("first fill refused")
	}
	second, ok := c.FillLeased("k", c.BeginLease("k", c.BeginFill()), []byte("newer"), false)
	if !ok {
		t.Fatal("second fill refused")
	}
	if c.Leased("k", first) {
		t.Fatal("the replaced answer still counts as held")
	}
	if !c.Leased("k", second) {
		t.Fatal("the newer answer does not count as held")
	}
}

// TestEventEvictsALeasedAnswer: an answer stored under a lease at version 1 may hold what the
// origin wrote at 6. An UPSERT event at 2 carrying its value is older than that: it evicts the
// answer instead of refreshing it, under every policy, and the same holds for an answer read
// from a slower tier with FillVersionless.
func TestEventEvictsALeasedAnswer(t *testing.T) {
	for _, p := range []invalidation.Policy{invalidation.RefreshHeld, invalidation.RefreshAll} {
		for _, via := range []string{"lease", "slower tier"} {
			t.Run(p.String()+"/"+via, func(t *testing.T) {
				c, _ := newTest(t, Config{})
				c.Apply(invalidate("k", 1), p)
				if via == "lease" {
					if _, ok := c.FillLeased("k", c.BeginLease("k", c.BeginFill()), []byte("v6"), false); !ok {
						t.Fatal("fill refused")
					}
				} else if _, ok := c.FillVersionless("k", 1, []byte("v6"), false, c.BeginFill()); !ok {
					t.Fatal("fill refused")
				}
				if a := c.Apply(upsert("k", 2, "v2"), p); a != invalidation.Evict {
					t.Fatalf("Apply = %v, want Evict", a)
				}
				if it, ok := c.Get("k"); ok {
					t.Fatalf("L1 holds %q@%d after the event", it.Value, it.Version)
				}
				// While the tombstone it left lives, no event's value is written for the key,
				// under refresh-all either: it may be older than the answer that was served.
				if a := c.Apply(upsert("k", 3, "v3"), p); a != invalidation.Evict {
					t.Fatalf("Apply after the eviction = %v, want Evict", a)
				}
				if it, ok := c.Get("k"); ok {
					t.Fatalf("L1 holds %q@%d", it.Value, it.Version)
				}
				// A key that never held a versionless answer is refreshed as before.
				c.Apply(upsert("other", 1, "o1"), invalidation.RefreshAll)
				if a := c.Apply(upsert("other", 2, "o2"), p); a != invalidation.Refresh {
					t.Fatalf("Apply over an event's value = %v, want Refresh", a)
				}
			})
		}
	}
}
