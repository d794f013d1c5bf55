package redistier

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

// TestBatchMatchesOneByOne: random batches (keys repeated within a batch, every kind of event,
// leased answers and drops in between) leave the tier exactly as applying the same events one at
// a time does, under every policy, with the same applied and ignored counts.
func TestBatchMatchesOneByOne(t *testing.T) {
	r := testenv.NewRedis(t)
	mk := func(suffix string) *Tier {
		tier, err := New(Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix + suffix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tier.Close() })
		return tier
	}
	batched, single := mk("b:"), mk("s:")
	ctx := ctxT(t)
	rng := rand.New(rand.NewPCG(7, 11))
	keys := []string{"a", "b", "c", "d"}
	ops := []invalidation.Op{invalidation.OpUpsert, invalidation.OpDelete, invalidation.OpInvalidate, invalidation.OpEvict}
	for round := range 60 {
		p := []invalidation.Policy{invalidation.RefreshHeld, invalidation.RefreshAll, invalidation.EvictOnly}[round%3]
		// Between batches, the same reads and fills reach both tiers: values, not-founds and
		// versionless answers under leases.
		for _, k := range keys {
			v := uint64(rng.IntN(30))
			switch rng.IntN(4) {
			case 0:
				for _, tier := range []*Tier{batched, single} {
					if _, err := tier.Fill(ctx, tier.BeginFill(ctx, k), k, v, []byte(fmt.Sprintf("f%d", v))); err != nil {
						t.Fatal(err)
					}
				}
			case 1:
				for _, tier := range []*Tier{batched, single} {
					l, err := tier.BeginLease(ctx, k)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := tier.FillLeased(ctx, l, k, []byte("leased"), false); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		var events []invalidation.Event
		for range 1 + rng.IntN(12) {
			e := invalidation.Event{Key: keys[rng.IntN(len(keys))], Version: uint64(rng.IntN(30)), Op: ops[rng.IntN(len(ops))]}
			if e.Op == invalidation.OpUpsert && rng.IntN(3) > 0 {
				e.Value, e.HasValue = []byte(fmt.Sprintf("e%d", e.Version)), true
			}
			events = append(events, e)
		}
		ba, bi, err := batched.ApplyBatch(ctx, events, p)
		if err != nil {
			t.Fatal(err)
		}
		sa, si := 0, 0
		for i := range events {
			a, err := single.Apply(ctx, &events[i], p)
			if err != nil {
				t.Fatal(err)
			}
			if a == invalidation.Ignore {
				si++
			} else {
				sa++
			}
		}
		if ba != sa || bi != si {
			t.Fatalf("round %d (%s, %v): batch applied %d ignored %d, one by one %d and %d", round, p, events, ba, bi, sa, si)
		}
		for _, k := range keys {
			be, bf, err1 := batched.Get(ctx, k)
			se, sf, err2 := single.Get(ctx, k)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if bf != sf || be.Version != se.Version || be.Tombstone != se.Tombstone || be.Leased != se.Leased || string(be.Value) != string(se.Value) {
				t.Fatalf("round %d (%s, %v): key %s batched %+v (found %v), one by one %+v (found %v)", round, p, events, k, be, bf, se, sf)
			}
		}
	}
}
