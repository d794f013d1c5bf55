package redistier

import (
	"fmt"
	"testing"

	"github.com/cachewire/cachewire/invalidation"
)

// TestFillAfterEvictAtTheKeptVersion: the script's 'X' turns a held value into a tombstone
// at the value's own version, and a fill at an equal version is accepted over a tombstone. Redis
// cannot tell when a fill's load began, so a load begun before the EVICT (on a node whose L1 has
// not seen it yet, which therefore admits the fill) puts the dropped value back, where every
// node reads it once its hold on L2 is over. The same when Redis held only a tombstone, or
// nothing, when the EVICT came: the load may still carry the value the other tiers dropped.
func TestFillAfterEvictAtTheKeptVersion(t *testing.T) {
	tier, _ := newTier(t)
	ctx := ctxT(t)
	for i, start := range []string{"value@3", "tombstone@3", "nothing"} {
		key := fmt.Sprintf("evict-%d", i)
		switch start {
		case "value@3":
			if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, key), key, 3, []byte("suspect")); !ok || err != nil {
				t.Fatal(ok, err)
			}
		case "tombstone@3":
			if _, err := tier.Apply(ctx, &invalidation.Event{Key: key, Version: 3, Op: invalidation.OpInvalidate}, invalidation.RefreshHeld); err != nil {
				t.Fatal(err)
			}
		}
		slow := tier.BeginFill(ctx, key) // a load reads suspect@3, slowly
		if _, err := tier.Apply(ctx, &invalidation.Event{Key: key, Op: invalidation.OpEvict}, invalidation.RefreshHeld); err != nil {
			t.Fatal(err)
		}
		ok, err := tier.Fill(ctx, slow, key, 3, []byte("suspect"))
		if err != nil {
			t.Fatal(err)
		}
		if e, found, _ := tier.Get(ctx, key); ok || found {
			t.Errorf("from %s: a fill begun before the EVICT was accepted=%v; Redis serves %q@%d (found %v)", start, ok, e.Value, e.Version, found)
		}
		// Later events apply as before, and fills above them are taken.
		if _, err := tier.Apply(ctx, &invalidation.Event{Key: key, Version: 4, Op: invalidation.OpInvalidate}, invalidation.RefreshHeld); err != nil {
			t.Fatal(err)
		}
		if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, key), key, 4, []byte("v4")); !ok || err != nil {
			t.Errorf("from %s: a fill of v4 after an INVALIDATE at 4: %v %v", start, ok, err)
		}
	}
}
