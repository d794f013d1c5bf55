package redistier

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

// TestReviewNotFoundFillShortensTombstone: a not-found fill at a tombstone's version replaces the
// tombstone (TombstoneTTL, 10 min) with an N entry that lives NegativeTTL (5 s). Once it expires,
// Redis no longer knows the version: a slow load that read v3 before the delete at 5 lands its
// fill, and v3 is served for TTL (1 h). The node only requires LoaderTimeout < L2.TombstoneTTL,
// so --loader-timeout 10s (or any load slower than NegativeTTL) opens this window.
func TestReviewNotFoundFillShortensTombstone(t *testing.T) {
	tier, r := newTier(t)
	if r.Mini == nil {
		t.Skip("needs miniredis FastForward")
	}
	ctx := ctxT(t)
	slow := tier.BeginFill(ctx, "k") // a load on another node reads v3 from the origin, slowly
	if _, err := tier.Apply(ctx, &invalidation.Event{Key: "k", Version: 5, Op: invalidation.OpDelete}, invalidation.RefreshHeld); err != nil {
		t.Fatal(err)
	}
	// A node reads the key after the delete: the origin says not found at 5.
	if ok, err := tier.FillMissing(ctx, tier.BeginFill(ctx, "k"), "k", 5); err != nil || !ok {
		t.Fatalf("FillMissing: %v %v", ok, err)
	}
	r.Mini.FastForward(6 * time.Second) // past NegativeTTL, far within TombstoneTTL
	ok, err := tier.Fill(ctx, slow, "k", 3, []byte("v3"))
	if err != nil {
		t.Fatal(err)
	}
	if e, found, _ := tier.Get(ctx, "k"); ok || (found && e.Version < 5) {
		t.Fatalf("a fill of v3 begun before the delete at 5 was accepted=%v 6s after it; Get = %+v found=%v "+
			"(without the not-found fill the tombstone would refuse it for 10 minutes)", ok, e, found)
	}
}

// holdEpochRead is a go-redis hook that, once armed, holds the answer of the next epoch read
// ("get" mode) until released: a read issued before Redis changed epochs that returns after one
// issued after.
type holdEpochRead struct {
	key      string
	armed    atomic.Bool
	executed chan struct{}
	release  chan struct{}
}

func (h *holdEpochRead) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *holdEpochRead) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *holdEpochRead) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		args := cmd.Args()
		if err == nil && len(args) > 3 && args[3] == h.key && args[len(args)-1] == "get" && h.armed.CompareAndSwap(true, false) {
			close(h.executed)
			<-h.release
		}
		return err
	}
}

// TestReviewEpochLearnGoesBack: learn() stores whatever epoch a read returned, last writer wins.
// An epoch read issued before Redis started a new epoch (a snapshot reload or failover: the old
// entries came back) that returns after a read of the new epoch puts the tier back in the old
// epoch: it reports a second "new epoch" and serves entries of the old one.
func TestReviewEpochLearnGoesBack(t *testing.T) {
	r := testenv.NewRedis(t)
	ctx := ctxT(t)
	writer, err := New(Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	if ok, err := writer.Fill(ctx, writer.BeginFill(ctx, "k"), "k", 3, []byte("v3")); err != nil || !ok {
		t.Fatalf("fill: %v %v", ok, err)
	}

	hook := &holdEpochRead{key: r.Prefix + epochSuffix, executed: make(chan struct{}), release: make(chan struct{})}
	c := r.Client(t)
	c.AddHook(hook)
	var epochs atomic.Int64
	tier, err := New(Config{Client: c, KeyPrefix: r.Prefix, OnNewEpoch: func() { epochs.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()

	hook.armed.Store(true)
	done := make(chan struct{})
	go func() { // a read that learns the epoch for the first time
		defer close(done)
		_, _, _ = tier.Get(ctx, "k")
	}()
	select {
	case <-hook.executed:
	case <-time.After(10 * time.Second):
		t.Fatal("the epoch read did not run")
	}
	// The server is another process now (snapshot reload, promoted replica): a new epoch is
	// stamped, and the old entries are still there.
	if _, err := epochScript.Run(ctx, r.Client(t), []string{r.Prefix + epochSuffix}, newEpoch(), "other-run-id", "stamp").Text(); err != nil {
		t.Fatal(err)
	}
	_ = tier.BeginFill(ctx, "x") // another load learns the new epoch
	close(hook.release)          // the older read returns last
	<-done

	e, found, err := tier.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if found {
		t.Fatalf("Redis is in a new epoch, but the tier serves the old-epoch entry %+v (OnNewEpoch called %d times)", e, epochs.Load())
	}
}

// TestReviewPreEpochTombstoneIsIgnored: the entry format gained a 16-byte epoch under the same
// key prefix. A tombstone written before the upgrade (or by a not yet upgraded group member
// during a rolling upgrade) is 21 bytes, which the new script treats as "nothing known": a slow
// fill of an older version lands over it.
func TestReviewPreEpochTombstoneIsIgnored(t *testing.T) {
	tier, r := newTier(t)
	ctx := ctxT(t)
	tok := tier.BeginFill(ctx, "k") // a load reads v3 ...
	// ... an old node's group member applies the delete at 5, in the old format.
	if err := r.Client(t).Set(ctx, tier.Key("k"), versionArg(5)+"T", 10*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	ok, err := tier.Fill(ctx, tok, "k", 3, []byte("v3"))
	if err != nil {
		t.Fatal(err)
	}
	if e, found, _ := tier.Get(ctx, "k"); ok || (found && e.Version < 5) {
		t.Fatalf("a fill of v3 landed over a tombstone at 5 written in the previous format: accepted=%v, Get=%+v found=%v", ok, e, found)
	}
}
