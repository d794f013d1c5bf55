package redistier

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

// TestLeaseIsACompareAndSet: an answer from a versionless origin lands in Redis only if the
// entry is exactly what it was when the load began, at that entry's version; anything that
// touched the key in between (an event, another fill, a versionless fill at the same version,
// an EVICT, a loss) refuses it.
func TestLeaseIsACompareAndSet(t *testing.T) {
	tier, r := newTier(t)
	ctx := ctxT(t)
	apply := func(key string, e invalidation.Event) {
		t.Helper()
		e.Key = key
		if _, err := tier.Apply(ctx, &e, invalidation.RefreshHeld); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		start  func(key string)
		during func(key string)
		want   bool
		at     uint64
		err    error
	}{
		{name: "nothing held, nothing happens", want: true, at: 0},
		{name: "tombstone, nothing happens", start: func(k string) { apply(k, invalidation.Event{Version: 4, Op: invalidation.OpInvalidate}) }, want: true, at: 4},
		{name: "value, nothing happens", start: func(k string) { _, _ = tier.Fill(ctx, tier.BeginFill(ctx, k), k, 3, []byte("v3")) }, want: true, at: 3},
		{name: "an event evicts", during: func(k string) { apply(k, invalidation.Event{Version: 5, Op: invalidation.OpInvalidate}) }},
		{name: "an event refreshes", start: func(k string) { _, _ = tier.Fill(ctx, tier.BeginFill(ctx, k), k, 3, []byte("v3")) },
			during: func(k string) {
				apply(k, invalidation.Event{Version: 5, Op: invalidation.OpUpsert, Value: []byte("v5"), HasValue: true})
			}},
		{name: "a versioned fill", during: func(k string) { _, _ = tier.Fill(ctx, tier.BeginFill(ctx, k), k, 2, []byte("v2")) }},
		{name: "another versionless fill at the same version", start: func(k string) { apply(k, invalidation.Event{Version: 4, Op: invalidation.OpInvalidate}) },
			during: func(k string) {
				l, err := tier.BeginLease(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				if ok, err := tier.FillLeased(ctx, l, k, []byte("newer"), false); !ok || err != nil {
					t.Fatalf("the other fill: %v %v", ok, err)
				}
			}},
		{name: "an EVICT", start: func(k string) { _, _ = tier.Fill(ctx, tier.BeginFill(ctx, k), k, 3, []byte("v3")) },
			during: func(k string) { apply(k, invalidation.Event{Op: invalidation.OpEvict}) }},
		{name: "an EVICT's tombstone held when the load began", start: func(k string) { apply(k, invalidation.Event{Op: invalidation.OpEvict}) }},
		{name: "Redis loses everything", during: func(string) { loseEverything(t, ctx, r) }, err: ErrEpochChanged},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := fmt.Sprintf("lease-%d", i)
			if tc.start != nil {
				tc.start(key)
			}
			l, err := tier.BeginLease(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if tc.during != nil {
				tc.during(key)
			}
			ok, err := tier.FillLeased(ctx, l, key, []byte("answer"), false)
			if ok != tc.want || !errors.Is(err, tc.err) {
				t.Fatalf("FillLeased = %v, %v; want %v, %v", ok, err, tc.want, tc.err)
			}
			e, found, err := tier.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				if found && string(e.Value) == "answer" {
					t.Fatal("a refused fill is served")
				}
				return
			}
			if !found || string(e.Value) != "answer" || e.Version != tc.at {
				t.Fatalf("Get = %q@%d found=%v, want answer@%d", e.Value, e.Version, found, tc.at)
			}
			// Any later event evicts it.
			apply(key, invalidation.Event{Version: tc.at + 1, Op: invalidation.OpInvalidate})
			if _, found, _ := tier.Get(ctx, key); found {
				t.Fatal("an event above the lease's version did not evict the answer")
			}
		})
	}
}

// TestLeaseNotFoundAndTombstoneTTL: a versionless not-found is cached for NegativeTTL, and a
// lease fill over a tombstone never shortens how long the key's version is remembered.
func TestLeaseNotFoundAndTombstoneTTL(t *testing.T) {
	r := testenv.NewRedis(t)
	tier, err := New(Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	ctx := context.Background()
	if _, err := tier.Apply(ctx, &invalidation.Event{Key: "k", Version: 7, Op: invalidation.OpDelete}, invalidation.RefreshHeld); err != nil {
		t.Fatal(err)
	}
	l, err := tier.BeginLease(ctx, "k")
	if err != nil || l.Version != 7 {
		t.Fatalf("BeginLease = %+v, %v; want version 7", l, err)
	}
	if ok, err := tier.FillLeased(ctx, l, "k", []byte("ignored"), true); !ok || err != nil {
		t.Fatalf("FillLeased(missing) = %v, %v", ok, err)
	}
	e, found, err := tier.Get(ctx, "k")
	if err != nil || !found || !e.Missing || e.Version != 7 || e.Value != nil {
		t.Fatalf("Get = %+v %v %v, want a not-found at 7", e, found, err)
	}
	pttl, err := r.Client(t).PTTL(ctx, tier.Key("k")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pttl < tier.cfg.NegativeTTL || pttl > tier.cfg.TombstoneTTL {
		t.Fatalf("PTTL %v: want the tombstone's remaining TTL (≤ %v), not the shorter NegativeTTL %v", pttl, tier.cfg.TombstoneTTL, tier.cfg.NegativeTTL)
	}
}

// TestEventEvictsALeasedEntry: an answer stored under a lease at version 1 may hold what the
// origin wrote at 6; an UPSERT at 2 carrying its value evicts it under every policy.
func TestEventEvictsALeasedEntry(t *testing.T) {
	tier, _ := newTier(t)
	ctx := ctxT(t)
	for i, p := range []invalidation.Policy{invalidation.RefreshHeld, invalidation.RefreshAll} {
		key := fmt.Sprintf("leased-%d", i)
		if _, err := tier.Apply(ctx, &invalidation.Event{Key: key, Version: 1, Op: invalidation.OpInvalidate}, p); err != nil {
			t.Fatal(err)
		}
		l, err := tier.BeginLease(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := tier.FillLeased(ctx, l, key, []byte("v6"), false); !ok || err != nil {
			t.Fatalf("FillLeased: %v %v", ok, err)
		}
		if e, found, err := tier.Get(ctx, key); !found || err != nil || !e.Leased || e.Version != 1 || string(e.Value) != "v6" {
			t.Fatalf("Get = %+v %v %v, want the leased v6 at 1", e, found, err)
		}
		a, err := tier.Apply(ctx, &invalidation.Event{Key: key, Version: 2, Op: invalidation.OpUpsert, Value: []byte("v2"), HasValue: true}, p)
		if err != nil || a != invalidation.Evict {
			t.Fatalf("%v: Apply = %v, %v; want Evict", p, a, err)
		}
		if e, found, _ := tier.Get(ctx, key); found {
			t.Fatalf("%v: Redis serves %q@%d after the event", p, e.Value, e.Version)
		}
		// Nor is a later event's value written while the tombstone lives.
		a, err = tier.Apply(ctx, &invalidation.Event{Key: key, Version: 3, Op: invalidation.OpUpsert, Value: []byte("v3"), HasValue: true}, p)
		if err != nil || a != invalidation.Evict {
			t.Fatalf("%v: the next Apply = %v, %v; want Evict", p, a, err)
		}
		if e, found, _ := tier.Get(ctx, key); found {
			t.Fatalf("%v: Redis serves %q@%d after the next event", p, e.Value, e.Version)
		}
	}
}

// TestDropEvictsWhateverIsHeld: Drop leaves a marked tombstone at the version held, over a
// value, a leased answer, a tombstone or nothing; later events' values are not written while it
// lives, and a lease taken after it fills as usual.
func TestDropEvictsWhateverIsHeld(t *testing.T) {
	tier, _ := newTier(t)
	ctx := ctxT(t)
	for i, start := range []string{"value@3", "tombstone@3", "nothing"} {
		key := fmt.Sprintf("drop-%d", i)
		want := uint64(3)
		switch start {
		case "value@3":
			_, _ = tier.Fill(ctx, tier.BeginFill(ctx, key), key, 3, []byte("v3"))
		case "tombstone@3":
			_, _ = tier.Apply(ctx, &invalidation.Event{Key: key, Version: 3, Op: invalidation.OpInvalidate}, invalidation.RefreshAll)
		default:
			want = 0
		}
		if err := tier.Drop(ctx, key); err != nil {
			t.Fatal(err)
		}
		e, found, err := tier.Get(ctx, key)
		if found || err != nil || !e.Tombstone || e.Version != want {
			t.Fatalf("%s: after Drop, Get = %+v %v %v; want a tombstone at %d", start, e, found, err, want)
		}
		if a, _ := tier.Apply(ctx, &invalidation.Event{Key: key, Version: 4, Op: invalidation.OpUpsert, Value: []byte("v4"), HasValue: true}, invalidation.RefreshAll); a != invalidation.Evict {
			t.Fatalf("%s: an event's value after Drop: %v, want Evict", start, a)
		}
		l, err := tier.BeginLease(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := tier.FillLeased(ctx, l, key, []byte("v9"), false); !ok || err != nil {
			t.Fatalf("%s: a lease after Drop: %v %v", start, ok, err)
		}
	}
}
