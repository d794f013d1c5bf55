package redistier

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

func newTier(t *testing.T) (*Tier, *testenv.Redis) {
	t.Helper()
	r := testenv.NewRedis(t)
	tier, err := New(Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tier.Close() })
	return tier, r
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestStaleFillRace: a loader read version 1, the invalidation to version 2 reached Redis first;
// the loader's fill must be rejected by the script.
func TestStaleFillRace(t *testing.T) {
	tier, _ := newTier(t)
	ctx := ctxT(t)
	if _, err := tier.Apply(ctx, &invalidation.Event{Key: "k", Version: 2, Op: invalidation.OpInvalidate}, invalidation.RefreshHeld); err != nil {
		t.Fatal(err)
	}
	ok, err := tier.Fill(ctx, tier.BeginFill(ctx, "k"), "k", 1, []byte("old"))
	if err != nil || ok {
		t.Fatalf("fill of version 1 after invalidation to 2: accepted=%v err=%v, want rejected", ok, err)
	}
	if _, found, _ := tier.Get(ctx, "k"); found {
		t.Fatal("stale value visible")
	}
	ok, err = tier.Fill(ctx, tier.BeginFill(ctx, "k"), "k", 2, []byte("new"))
	if err != nil || !ok {
		t.Fatalf("fill of version 2: accepted=%v err=%v", ok, err)
	}
	e, found, err := tier.Get(ctx, "k")
	if err != nil || !found || e.Version != 2 || string(e.Value) != "new" {
		t.Fatalf("Get = %+v %v %v", e, found, err)
	}
	if s := tier.Stats(); s.StaleFillsRejected != 1 {
		t.Fatalf("StaleFillsRejected = %d", s.StaleFillsRejected)
	}
}

// TestScriptMatchesGoRules checks the Lua script against invalidation.Decide and AcceptFill for
// every starting state, event and policy.
func TestScriptMatchesGoRules(t *testing.T) {
	tier, _ := newTier(t)
	ctx := ctxT(t)
	type start struct {
		name  string
		setup func(key string) error
		state invalidation.State
	}
	starts := []start{
		{"empty", func(string) error { return nil }, invalidation.State{}},
		{"value@5", func(k string) error { _, err := tier.Fill(ctx, tier.BeginFill(ctx, k), k, 5, []byte("v5")); return err }, invalidation.State{Known: true, Version: 5}},
		{"missing@5", func(k string) error { _, err := tier.FillMissing(ctx, tier.BeginFill(ctx, k), k, 5); return err }, invalidation.State{Known: true, Version: 5}},
		{"tombstone@5", func(k string) error {
			_, err := tier.Apply(ctx, &invalidation.Event{Key: k, Version: 5, Op: invalidation.OpDelete}, invalidation.EvictOnly)
			return err
		}, invalidation.State{Known: true, Version: 5, Tombstone: true}},
	}
	events := []invalidation.Event{
		{Version: 4, Op: invalidation.OpUpsert, Value: []byte("e4"), HasValue: true},
		{Version: 5, Op: invalidation.OpUpsert, Value: []byte("e5"), HasValue: true},
		{Version: 6, Op: invalidation.OpUpsert, Value: []byte("e6"), HasValue: true},
		{Version: 6, Op: invalidation.OpUpsert},
		{Version: 6, Op: invalidation.OpDelete},
		{Version: 5, Op: invalidation.OpInvalidate},
		{Version: 6, Op: invalidation.OpInvalidate},
		{Op: invalidation.OpEvict},
	}
	n := 0
	for _, s := range starts {
		for _, ev := range events {
			for _, p := range []invalidation.Policy{invalidation.RefreshHeld, invalidation.RefreshAll, invalidation.EvictOnly} {
				n++
				key := fmt.Sprintf("parity-%d", n)
				if err := s.setup(key); err != nil {
					t.Fatal(err)
				}
				e := ev
				e.Key = key
				want := invalidation.Decide(s.state, &e, p)
				got, err := tier.Apply(ctx, &e, p)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Errorf("from %s, %s v%d (value %v) under %s: script did %s, Decide says %s", s.name, e.Op, e.Version, e.HasValue, p, got, want)
				}
				after, found, err := tier.Get(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				switch want {
				case invalidation.Refresh:
					if !found || after.Version != e.Version || string(after.Value) != string(e.Value) {
						t.Errorf("%s/%s/%s: after refresh Get = %+v %v", s.name, e.Op, p, after, found)
					}
				case invalidation.Evict:
					wantV := e.Version
					if e.Op == invalidation.OpEvict {
						wantV = s.state.Version // an EVICT keeps the held version
					}
					if found || !after.Tombstone || after.Version != wantV {
						t.Errorf("%s/%s/%s: after evict Get = %+v %v, want tombstone@%d", s.name, e.Op, p, after, found, wantV)
					}
				}
			}
		}
		for _, v := range []uint64{4, 5, 6} {
			n++
			key := fmt.Sprintf("parity-%d", n)
			if err := s.setup(key); err != nil {
				t.Fatal(err)
			}
			got, err := tier.Fill(ctx, tier.BeginFill(ctx, key), key, v, []byte("f"))
			if err != nil {
				t.Fatal(err)
			}
			if want := invalidation.AcceptFill(s.state, v); got != want {
				t.Errorf("fill v%d onto %s: accepted=%v, AcceptFill says %v", v, s.name, got, want)
			}
		}
	}
}

func TestTTLsAndPrefix(t *testing.T) {
	r := testenv.NewRedis(t)
	tier, err := New(Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix, TTL: time.Hour, TombstoneTTL: time.Minute, NegativeTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	ctx := ctxT(t)
	c := r.Client(t)
	tier.Fill(ctx, tier.BeginFill(ctx, "v"), "v", 1, []byte("x"))
	tier.FillMissing(ctx, tier.BeginFill(ctx, "n"), "n", 1)
	tier.Apply(ctx, &invalidation.Event{Key: "t", Version: 1, Op: invalidation.OpDelete}, invalidation.RefreshHeld)
	for key, want := range map[string]time.Duration{"v": time.Hour, "n": 5 * time.Second, "t": time.Minute} {
		ttl, err := c.PTTL(ctx, r.Key(key)).Result()
		if err != nil || ttl <= want-2*time.Second || ttl > want {
			t.Errorf("PTTL(%s) = %v, %v; want about %v", r.Key(key), ttl, err, want)
		}
	}
}

func TestApplyBatchAndScriptReload(t *testing.T) {
	tier, r := newTier(t)
	ctx := ctxT(t)
	// Simulate a restarted Redis that no longer has the script.
	if err := r.Client(t).ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	events := []invalidation.Event{
		{Key: "a", Version: 1, Op: invalidation.OpUpsert, Value: []byte("a1"), HasValue: true},
		{Key: "a", Version: 2, Op: invalidation.OpUpsert, Value: []byte("a2"), HasValue: true},
		{Key: "a", Version: 1, Op: invalidation.OpUpsert, Value: []byte("a1"), HasValue: true}, // redelivered late
		{Key: "b", Version: 3, Op: invalidation.OpDelete},
	}
	applied, ignored, err := tier.ApplyBatch(ctx, events, invalidation.RefreshAll)
	if err != nil || applied != 3 || ignored != 1 {
		t.Fatalf("ApplyBatch = %d applied, %d ignored, %v; want 3, 1, nil", applied, ignored, err)
	}
	e, found, _ := tier.Get(ctx, "a")
	if !found || e.Version != 2 || string(e.Value) != "a2" {
		t.Fatalf("a = %+v %v, want a2@2", e, found)
	}
}

// TestUnavailableFailsFast: with nothing listening, the first call fails with ErrUnavailable and
// the next ones are refused without a network call while the tier backs off.
func TestUnavailableFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	tier, err := New(Config{Addrs: []string{addr}, Backoff: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	ctx := ctxT(t)
	if _, _, err := tier.Get(ctx, "k"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get with Redis down: %v, want ErrUnavailable", err)
	}
	if _, err := tier.Fill(ctx, tier.BeginFill(ctx, "k"), "k", 1, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Fill while backing off: %v, want ErrUnavailable", err)
	}
	if _, _, err := tier.ApplyBatch(ctx, []invalidation.Event{{Key: "k", Version: 1, Op: invalidation.OpDelete}}, invalidation.RefreshHeld); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("ApplyBatch while backing off: %v, want ErrUnavailable", err)
	}
	if s := tier.Stats(); s.Errors != 1 || s.Skipped != 2 {
		t.Fatalf("stats %+v: want 1 error (the real attempt) and 2 skipped calls", s)
	}
	tier.Close()
	if _, _, err := tier.Get(ctx, "k"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
}

// TestRecoversAfterRestart: a Redis that comes back is used again once the back-off ends.
func TestRecoversAfterRestart(t *testing.T) {
	r := testenv.NewRedis(t)
	if r.Mini == nil {
		t.Skip("needs the in-process Redis to stop and restart it")
	}
	tier, err := New(Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	ctx := ctxT(t)
	r.Mini.Close()
	if _, err := tier.Fill(ctx, tier.BeginFill(ctx, "k"), "k", 1, []byte("v")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Fill with Redis down: %v", err)
	}
	if err := r.Mini.Restart(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, func() string {
		if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, "k"), "k", 1, []byte("v")); err != nil || !ok {
			return fmt.Sprintf("tier did not recover: accepted=%v err=%v", ok, err)
		}
		return ""
	})
}
