package redistier

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

// loseEverything does to the test's keys what a FLUSHALL or a restart without persistence does
// (without touching other tests' keys on a shared real server).
func loseEverything(t *testing.T, ctx context.Context, r *testenv.Redis) {
	t.Helper()
	c := r.Client(t)
	keys, err := c.Keys(ctx, r.Prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		if err := c.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFillBegunBeforeLossIsRefused: Redis lost its data (and with it a tombstone) while a load
// was running; the load's fill of an older version must not land in the emptied Redis.
func TestFillBegunBeforeLossIsRefused(t *testing.T) {
	r := testenv.NewRedis(t)
	var epochs atomic.Int64
	tier, err := New(Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix, OnNewEpoch: func() { epochs.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	ctx := ctxT(t)
	tok := tier.BeginFill(ctx, "k") // a load reads version 1 from the origin ...
	if _, err := tier.Apply(ctx, &invalidation.Event{Key: "k", Version: 2, Op: invalidation.OpDelete}, invalidation.RefreshHeld); err != nil {
		t.Fatal(err)
	}
	loseEverything(t, ctx, r) // ... the tombstone at 2 is lost ...
	ok, err := tier.Fill(ctx, tok, "k", 1, []byte("old"))
	if !errors.Is(err, ErrEpochChanged) || ok {
		t.Fatalf("fill begun before the loss: accepted=%v err=%v, want refused with ErrEpochChanged", ok, err)
	}
	if _, found, _ := tier.Get(ctx, "k"); found {
		t.Fatal("the old value is visible")
	}
	s := tier.Stats()
	if s.NewEpochs != 1 || s.EpochFillsRejected != 1 || epochs.Load() != 1 {
		t.Fatalf("stats %+v, OnNewEpoch called %d times: want one new epoch and one refused fill", s, epochs.Load())
	}
	// A load that begins in the new epoch fills as usual.
	if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, "k"), "k", 3, []byte("new")); err != nil || !ok {
		t.Fatalf("fill in the new epoch: accepted=%v err=%v", ok, err)
	}
	if e, found, _ := tier.Get(ctx, "k"); !found || e.Version != 3 {
		t.Fatalf("Get = %+v %v, want version 3", e, found)
	}
}

// TestOldEpochEntriesAreFloorsNotServed: after a failover to a lagging replica (or a restart that
// reloaded a snapshot) the entries that came back are not served, but still bound what can be
// written.
func TestOldEpochEntriesAreFloorsNotServed(t *testing.T) {
	tier, r := newTier(t)
	ctx := ctxT(t)
	if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, "k"), "k", 5, []byte("v5")); err != nil || !ok {
		t.Fatalf("fill: %v %v", ok, err)
	}
	// Another server process: its epoch key was stamped with another run_id.
	ekey := r.Prefix + epochSuffix
	if v, err := epochScript.Run(ctx, r.Client(t), []string{ekey}, newEpoch(), "replica-run-id", "stamp").Text(); err != nil || len(v) < epochLen {
		t.Fatalf("stamp: %q %v", v, err)
	}
	// The tier notices on its next write (or on connect).
	if ok, _ := tier.Fill(ctx, tier.BeginFill(ctx, "other"), "other", 1, []byte("x")); ok {
		t.Fatal("a fill begun in the old epoch was accepted")
	}
	e, found, err := tier.Get(ctx, "k")
	if err != nil || found || !e.OldEpoch || e.Version != 5 {
		t.Fatalf("Get of an old-epoch entry = %+v %v %v, want not served, OldEpoch at 5", e, found, err)
	}
	if ok, _ := tier.Fill(ctx, tier.BeginFill(ctx, "k"), "k", 4, []byte("v4")); ok {
		t.Fatal("a fill older than an old-epoch entry was accepted")
	}
	if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, "k"), "k", 5, []byte("v5")); err != nil || !ok {
		t.Fatalf("a fill at the old entry's version in the new epoch: %v %v", ok, err)
	}
	if e, found, _ := tier.Get(ctx, "k"); !found || e.Version != 5 {
		t.Fatalf("Get after refill = %+v %v", e, found)
	}
}

// TestEpochStamp: the epoch key records which server process started it; a connect to another
// process (restart with a snapshot, promoted replica) starts a new epoch, one to the same does not.
func TestEpochStamp(t *testing.T) {
	r := testenv.NewRedis(t)
	ctx := ctxT(t)
	c := r.Client(t)
	key := r.Prefix + epochSuffix
	run := func(rid, mode string) string {
		v, err := epochScript.Run(ctx, c, []string{key}, newEpoch(), rid, mode).Text()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a := run("A", "stamp")
	if run("A", "stamp") != a || run("", "stamp") != a || run("B", "get") != a {
		t.Fatal("the epoch changed without a new server process")
	}
	b := run("B", "stamp")
	if b == a || b[epochLen+1:] != "B" {
		t.Fatalf("a connect to server B kept epoch %q (now %q)", a, b)
	}
	if err := c.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	if run("B", "get") == b {
		t.Fatal("a lost epoch key did not start a new epoch")
	}
}

// TestApplyRunsAgainInTheNewEpoch: a batch that began before Redis lost its data is refused by the
// script and applied again in the new epoch; nothing is lost.
func TestApplyRunsAgainInTheNewEpoch(t *testing.T) {
	tier, r := newTier(t)
	ctx := ctxT(t)
	if _, err := tier.Apply(ctx, &invalidation.Event{Key: "a", Version: 1, Op: invalidation.OpDelete}, invalidation.RefreshAll); err != nil {
		t.Fatal(err)
	}
	loseEverything(t, ctx, r)
	events := []invalidation.Event{
		{Key: "a", Version: 2, Op: invalidation.OpUpsert, Value: []byte("a2"), HasValue: true},
		{Key: "b", Version: 3, Op: invalidation.OpUpsert, Value: []byte("b3"), HasValue: true},
	}
	applied, ignored, err := tier.ApplyBatch(ctx, events, invalidation.RefreshAll)
	if err != nil || applied != 2 || ignored != 0 {
		t.Fatalf("ApplyBatch = %d, %d, %v; want 2 applied", applied, ignored, err)
	}
	for _, k := range []string{"a", "b"} {
		if _, found, _ := tier.Get(ctx, k); !found {
			t.Fatalf("%s not applied in the new epoch", k)
		}
	}
	if s := tier.Stats(); s.NewEpochs != 1 {
		t.Fatalf("NewEpochs = %d, want 1", s.NewEpochs)
	}
}

// TestOnConnectStartsAnEpochForANewServerProcess: with a server that reports a run_id (real
// redis-server), a tier connecting to a server whose epoch was started by another process
// starts a new epoch before its first command.
func TestOnConnectStartsAnEpochForANewServerProcess(t *testing.T) {
	r := testenv.NewRedis(t)
	if !r.Real {
		t.Skip("miniredis reports no run_id; set CACHEWIRE_TEST_REDIS to run against redis-server")
	}
	ctx := ctxT(t)
	key := r.Prefix + epochSuffix
	c := r.Client(t)
	if err := c.Set(ctx, key, "0123456789abcdef:some-other-run-id", 0).Err(); err != nil {
		t.Fatal(err)
	}
	tier, err := New(Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	if _, _, err := tier.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	v, err := c.Get(ctx, key).Result()
	if err != nil || v[:epochLen] == "0123456789abcdef" {
		t.Fatalf("epoch key %q (%v): want a new epoch stamped with this server's run_id", v, err)
	}
	if tier.Stats().NewEpochs != 0 {
		t.Fatal("a tier that never knew the old epoch reported a new one")
	}
}

func TestSlot(t *testing.T) {
	for key, want := range map[string]uint16{"foo": 12182, "hello": 866, "{foo}bar": 12182, "a{}b": Slot("a{}b")} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
	keys := slotEpochKeys("cw:")
	for s, k := range keys {
		if Slot(k) != uint16(s) {
			t.Fatalf("epoch key %q for slot %d is in slot %d", k, s, Slot(k))
		}
	}
}
