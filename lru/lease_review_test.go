package lru

import (
	"strings"
	"testing"
	"time"

	"github.com/cachewire/cachewire/invalidation"
)

// TestLeaseReviewMarkSurvivesLosingTheAnswer: a versionless answer stored under a lease at
// version 1 may hold what the origin wrote at 6, while the events for 2..6 are still on their
// way. TestEventEvictsALeasedAnswer checks that the UPSERT at 2 evicts it rather than writing its
// (older) value. But once the answer leaves L1 for another reason (evicted for room, expired,
// or too large to hold in the first place) the tombstone that keeps its version is not marked:
// under refresh-all the UPSERT at 2 then writes v2, and the node serves v2 after v6
// (invariant 10); a versioned fill of v2 from Redis is taken too.
func TestLeaseReviewMarkSurvivesLosingTheAnswer(t *testing.T) {
	big := strings.Repeat("6", 4000)
	cases := []struct {
		name   string
		cfg    Config
		answer string
		lose   func(c *Cache, clk *clock)
	}{
		{name: "evicted for room", cfg: Config{MaxEntries: 1}, answer: "v6",
			lose: func(c *Cache, _ *clock) { c.Fill("other", 1, []byte("o"), c.BeginFill()) }},
		{name: "expired", cfg: Config{TTL: time.Second}, answer: "v6",
			lose: func(c *Cache, clk *clock) { clk.advance(2 * time.Second); c.Get("k") }},
		{name: "too large to hold", cfg: Config{MaxBytes: 2000}, answer: big,
			lose: func(*Cache, *clock) {}},
	}
	for _, tc := range cases {
		for _, via := range []string{"event", "fill from Redis"} {
			t.Run(tc.name+"/"+via, func(t *testing.T) {
				c, clk := newTest(t, tc.cfg)
				c.Apply(invalidate("k", 1), invalidation.RefreshAll)
				if _, ok := c.FillLeased("k", c.BeginLease("k", c.BeginFill()), []byte(tc.answer), false); !ok {
					t.Fatal("FillLeased refused")
				}
				// (The node serves the answer here.)
				tc.lose(c, clk)
				if via == "event" {
					c.Apply(upsert("k", 2, "v2"), invalidation.RefreshAll)
				} else if !c.Fill("k", 2, []byte("v2"), c.BeginFill()) {
					return
				}
				if it, ok := c.Get("k"); ok {
					t.Fatalf("L1 holds %q@%d after serving the versionless answer (which may hold v6): the tombstone left when it went lost its lease mark", it.Value, it.Version)
				}
			})
		}
	}
}

// TestLeaseReviewFillVersionlessOverANewerLeasedAnswer: a load reads Redis's leased answer
// (older, read from the origin by another node earlier) and is slow to put it in L1; meanwhile
// another load on this node reads the origin under a lease, fills L1 and is served. Both are
// at version 0: the version rule cannot order them, and FillVersionless only checks it, so the
// older answer replaces the newer one that was already served.
func TestLeaseReviewFillVersionlessOverANewerLeasedAnswer(t *testing.T) {
	c, _ := newTest(t, Config{})
	tok := c.BeginFill() // load 1 begins; Redis answers "older" at version 0 (leased)
	if _, ok := c.FillLeased("k", c.BeginLease("k", c.BeginFill()), []byte("newer"), false); !ok {
		t.Fatal("load 2's fill refused")
	}
	// Load 2's answer "newer" is served here.
	c.FillVersionless("k", 0, []byte("older"), false, tok)
	if it, ok := c.Get("k"); !ok || string(it.Value) != "newer" {
		t.Fatalf("L1 holds %q@%d (%v) after serving \"newer\"; an answer read before it replaced it", it.Value, it.Version, ok)
	}
}

// TestLeaseReviewVersionedAnswerOverALeasedOne: an origin may version some answers and not
// others (design 12: "a 404 that cannot say when the key was deleted" next to 200s with a
// Cachewire-Version header). A versioned load that began before a versionless answer was
// filled read older data, yet Keep takes it over that answer at the same version (or over the
// marked tombstone the answer left, at a higher version): the version rule cannot see that the
// leased entry may be newer than its version.
func TestLeaseReviewVersionedAnswerOverALeasedOne(t *testing.T) {
	t.Run("same version", func(t *testing.T) {
		c, _ := newTest(t, Config{})
		c.Apply(invalidate("k", 1), invalidation.RefreshHeld)
		tok := c.BeginFill() // a versioned load reads v1@1
		// v1 is deleted (at 2, event in flight); a versionless load reads the 404 and is served.
		if _, ok := c.FillLeased("k", c.BeginLease("k", c.BeginFill()), nil, true); !ok {
			t.Fatal("FillLeased refused")
		}
		if c.Keep("k", 1, []byte("v1"), false, tok) {
			t.Error("Keep of v1@1, read before the not-found that was served, says it may be served")
		}
		if it, ok := c.Get("k"); ok && !it.Missing {
			t.Fatalf("L1 holds %q@%d after serving the not-found read later", it.Value, it.Version)
		}
	})
	t.Run("over the marked tombstone", func(t *testing.T) {
		c, _ := newTest(t, Config{})
		c.Apply(invalidate("k", 1), invalidation.RefreshHeld)
		tok := c.BeginFill() // a versioned load reads v2@2
		// v3..v6 are written; a versionless load reads v6 and is served (labelled 1).
		if _, ok := c.FillLeased("k", c.BeginLease("k", c.BeginFill()), []byte("v6"), false); !ok {
			t.Fatal("FillLeased refused")
		}
		c.Apply(invalidate("k", 2), invalidation.RefreshHeld) // evicts it: marked tombstone at 2
		if c.Keep("k", 2, []byte("v2"), false, tok) {
			t.Error("Keep of v2@2, read before v6 was served, says it may be served")
		}
		if it, ok := c.Get("k"); ok {
			t.Fatalf("L1 holds %q@%d after serving v6", it.Value, it.Version)
		}
	})
}
