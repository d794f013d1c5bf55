package lru

import (
	"fmt"
	"testing"
)

// TestSampledReviewPeriodicReadsNeverTouchMostKeys: GetSampled marks a key recently used on every
// eighth read of the Cache, counted across all keys. A reader that cycles through a fixed set of
// keys whose size divides 8 (an application that reads the same 2, 4 or 8 keys per request, and
// in the near cache the same keys of one shard) lands every touch on the same key: the others,
// however hot, keep the recency of their first fill and are the first to go when room is
// needed, before a key that was never read at all. The doc says "a hot key still stays near the
// front".
func TestSampledReviewPeriodicReadsNeverTouchMostKeys(t *testing.T) {
	for _, period := range []int{2, 4, 8} {
		t.Run(fmt.Sprint(period, " hot keys"), func(t *testing.T) {
			c, clk := newTest(t, Config{MaxEntries: period + 1})
			hot := make([]string, period)
			for i := range hot {
				hot[i] = fmt.Sprint("hot", i)
				c.Fill(hot[i], 1, []byte("v"), c.BeginFill())
			}
			c.Fill("cold", 1, []byte("v"), c.BeginFill()) // stored last, never read
			for range 100 {
				for _, k := range hot {
					if _, ok := c.GetSampled(k, clk.now()); !ok {
						t.Fatalf("%s not held", k)
					}
				}
			}
			c.Fill("new", 1, []byte("v"), c.BeginFill()) // needs room: one entry goes
			var lost []string
			for _, k := range hot {
				if _, ok := c.Get(k); !ok {
					lost = append(lost, k)
				}
			}
			if len(lost) > 0 {
				_, coldHeld := c.Get("cold")
				t.Fatalf("after 100 reads each, %v left for room while the never-read key stayed (held: %v)", lost, coldHeld)
			}
		})
	}
}
