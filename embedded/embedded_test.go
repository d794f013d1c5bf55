package embedded_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/internal/fault"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/writer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func start(t *testing.T, cfg embedded.Config) *embedded.Cluster {
	t.Helper()
	c, err := embedded.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func clients(t *testing.T, c *embedded.Cluster, node int) (*client.Writer, *client.Cache) {
	t.Helper()
	w, err := client.NewWriter(c.WriterAddr, client.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	cc, err := client.NewCache(c.NodeAddrs[node], client.WithTimeout(2*time.Second), client.WithRetries(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return w, cc
}

// TestKillAndRestartNode: a killed node stops answering at once while the others serve; it comes
// back on its address, through Config.Node again, with an empty L1 that reads the latest version.
func TestKillAndRestartNode(t *testing.T) {
	var starts [2]atomic.Int32
	c := start(t, embedded.Config{Nodes: 2, Node: func(i int, _ *node.Config) { starts[i].Add(1) }})
	ctx := context.Background()
	w, cc := clients(t, c, 1)
	_, other := clients(t, c, 0)
	if _, err := w.Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if it, err := cc.Get(ctx, "k"); err != nil || string(it.Value) != "v1" {
		t.Fatalf("before the kill: %+v, %v", it, err)
	}
	addr := c.NodeAddrs[1]

	c.KillNode(1)
	if c.Node(1) != nil {
		t.Fatal("Node(1) is not nil after KillNode")
	}
	if it, err := cc.Get(ctx, "k"); err == nil {
		t.Fatalf("the killed node answered: %+v", it)
	}
	wr, err := w.Put(ctx, "k", []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}
	if it, err := other.Get(ctx, "k", client.MinVersion(wr.Version)); err != nil || string(it.Value) != "v2" {
		t.Fatalf("the other node: %+v, %v", it, err)
	}
	c.KillNode(1) // a second kill does nothing

	if err := c.RestartNode(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if c.NodeAddrs[1] != addr || c.Node(1).GRPCAddr() != addr {
		t.Fatalf("restarted on %s, was %s", c.Node(1).GRPCAddr(), addr)
	}
	if got0, got1 := starts[0].Load(), starts[1].Load(); got0 != 1 || got1 != 2 {
		t.Fatalf("Config.Node ran %d and %d times, want 1 and 2", got0, got1)
	}
	// The client reconnects after gRPC's backoff.
	var it client.Item
	testenv.WaitFor(t, 10*time.Second, func() string {
		if it, err = cc.Get(ctx, "k"); err != nil {
			return err.Error()
		}
		return ""
	})
	if string(it.Value) != "v2" || it.Tier == client.TierL1 {
		t.Fatalf("after the restart: %+v (want v2, not from the lost L1)", it)
	}
	if err := c.RestartNode(ctx, 1); err == nil {
		t.Fatal("RestartNode of a running node succeeded")
	}
	if err := c.RestartNode(ctx, 2); err == nil {
		t.Fatal("RestartNode of node 2 of 2 succeeded")
	}
}

// TestKillAndRestartWriter: a writer killed with a write committed but unpublished (Kafka
// refusing it) reports it, and once restarted on its address and database publishes it.
func TestKillAndRestartWriter(t *testing.T) {
	var starts atomic.Int32
	c := start(t, embedded.Config{Nodes: 1, Writer: func(*writer.Config) { starts.Add(1) }})
	ctx := context.Background()
	w, _ := clients(t, c, 0)
	addr := c.WriterAddr

	heal := fault.Refuse(c.Kafka(), "kafka paused by the test")
	if _, err := w.Put(ctx, "k", []byte("v1"), client.NoWait()); err != nil {
		t.Fatal(err)
	}
	if n := c.KillWriter(); n == 0 {
		t.Fatal("KillWriter found nothing unpublished with Kafka refusing every request")
	}
	if c.Writer() != nil {
		t.Fatal("Writer() is not nil after KillWriter")
	}
	if n := c.KillWriter(); n != 0 {
		t.Fatalf("a second KillWriter returned %d", n)
	}
	heal()

	if err := c.RestartWriter(); err != nil {
		t.Fatal(err)
	}
	if got := c.Writer().GRPCAddr(); got != addr || c.WriterAddr != addr {
		t.Fatalf("restarted on %s, was %s", got, addr)
	}
	if n := starts.Load(); n != 2 {
		t.Fatalf("Config.Writer ran %d times, want 2", n)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if d := c.Writer().OutboxDepth(); d != 0 {
			return "the restarted writer has not published its outbox"
		}
		return ""
	})
	it, err := w.Get(ctx, "k") // the same client, reconnected
	if err != nil || string(it.Value) != "v1" {
		t.Fatalf("the write before the kill: %+v, %v", it, err)
	}
	if err := c.RestartWriter(); err == nil {
		t.Fatal("RestartWriter of a running writer succeeded")
	}
}

// TestClose: Close is safe twice, and restarts after it fail with ErrClosed.
func TestClose(t *testing.T) {
	c, err := embedded.Start(embedded.Config{Nodes: 1})
	if err != nil {
		t.Fatal(err)
	}
	if c.Kafka() == nil || c.Redis() == nil {
		t.Fatal("no in-process Kafka or Redis")
	}
	c.KillNode(0)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.RestartNode(context.Background(), 0); !errors.Is(err, embedded.ErrClosed) {
		t.Fatalf("RestartNode after Close: %v", err)
	}
	if err := c.RestartWriter(); !errors.Is(err, embedded.ErrClosed) {
		t.Fatalf("RestartWriter after Close: %v", err)
	}
	if c.Node(0) != nil || c.Writer() != nil {
		t.Fatal("a node or the writer outlived Close")
	}
}
