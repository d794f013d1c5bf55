package embedded_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/internal/testenv"
)

// TestNearCacheThroughNodeRestart: a near cache whose node is killed stops answering in process
// at once, and once the node is back it resynchronizes by flushing: the write made while the node
// was down (whose event the restarted node, starting at the log end, never applies) is read, not
// the value the near cache held before.
func TestNearCacheThroughNodeRestart(t *testing.T) {
	c := start(t, embedded.Config{Nodes: 1})
	ctx := context.Background()
	w, _ := clients(t, c, 0)
	near, err := client.NewCache(c.NodeAddrs[0], client.WithTimeout(2*time.Second), client.WithRetries(1, 0),
		client.WithNearCache(client.NearCacheConfig{Logger: slog.New(slog.DiscardHandler)}))
	if err != nil {
		t.Fatal(err)
	}
	defer near.Close()
	stats := func() client.NearStats { st, _ := near.NearStats(); return st }
	testenv.WaitFor(t, 10*time.Second, func() string {
		if !stats().Synced {
			return "the near cache is not in sync"
		}
		return ""
	})
	w1, err := w.Put(ctx, "k", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, func() string {
		it, err := near.Get(ctx, "k", client.MinVersion(w1.Version))
		if err != nil || it.Tier != client.TierNear || string(it.Value) != "v1" {
			return "not yet a near-cache hit of v1"
		}
		return ""
	})

	c.KillNode(0)
	testenv.WaitFor(t, 10*time.Second, func() string {
		if stats().Synced {
			return "the near cache still says it is in sync with a killed node"
		}
		return ""
	})
	if it, err := near.Get(ctx, "k"); err == nil {
		t.Fatalf("answered %+v with the node down and the stream broken", it)
	}
	w2, err := w.Put(ctx, "k", []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RestartNode(ctx, 0); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, func() string {
		if !stats().Synced {
			return "the near cache has not resynchronized"
		}
		return ""
	})
	// A plain read, without the session's floor: only the resync's flush keeps v1 out.
	it, err := near.Get(ctx, "k")
	if err != nil || string(it.Value) != "v2" || it.Version != w2.Version || it.Tier == client.TierNear {
		t.Fatalf("after the restart: %+v, %v; want v2 from the node", it, err)
	}
	if it, err := near.Get(ctx, "k"); err != nil || string(it.Value) != "v2" || it.Tier != client.TierNear {
		t.Fatalf("then: %+v, %v; want v2 from the near cache", it, err)
	}
	if st := stats(); st.Resyncs != 1 || st.Breaks == 0 {
		t.Fatalf("stats = %+v", st)
	}
}
