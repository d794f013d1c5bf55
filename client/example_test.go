package client_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/embedded"
)

// Write through the writer, then read your write from a cache node.
func Example() {
	cluster, err := embedded.Start(embedded.Config{Nodes: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	ctx := context.Background()

	w, _ := client.NewWriter(cluster.WriterAddr)
	defer w.Close()
	c, _ := client.NewCache(cluster.NodeAddrs[0])
	defer c.Close()

	wr, err := w.Put(ctx, "user:1", []byte("Ada"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("version", wr.Version, "published", wr.Published)

	it, err := c.Get(ctx, "user:1", client.MinVersion(wr.Version))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s@%d\n", it.Value, it.Version)
	it, _ = c.Get(ctx, "user:1")
	fmt.Println("second read from", it.Tier)
	// Output:
	// version 1 published true
	// Ada@1
	// second read from L1
}

// A Session remembers what it wrote, so its reads through any node are never older.
func ExampleSession() {
	cluster, err := embedded.Start(embedded.Config{Nodes: 2})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	ctx := context.Background()

	w, _ := client.NewWriter(cluster.WriterAddr)
	defer w.Close()
	a, _ := client.NewCache(cluster.NodeAddrs[0])
	defer a.Close()
	b, _ := client.NewCache(cluster.NodeAddrs[1])
	defer b.Close()

	// Node b caches version 1.
	w.Put(ctx, "cart:7", []byte("1 book"))
	b.Get(ctx, "cart:7")

	s := client.NewSession(a, w)
	s.Put(ctx, "cart:7", []byte("2 books"), client.NoWait()) // not even waiting for Kafka
	// Reading through node b, which may not have seen the event yet:
	it, _ := s.Via(b).Get(ctx, "cart:7")
	fmt.Printf("%s@%d\n", it.Value, it.Version)
	// Output:
	// 2 books@2
}

// Cache-aside: the application loads from its own store on a miss and fills the cache with the
// version it read; a stale fill is refused.
func ExampleCache_Set() {
	cluster, err := embedded.Start(embedded.Config{Nodes: 1, Node: embedded.CacheAside})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	ctx := context.Background()
	c, _ := client.NewCache(cluster.NodeAddrs[0])
	defer c.Close()

	it, _ := c.Get(ctx, "product:9")
	fmt.Println("found", it.Found)
	ok, _ := c.Set(ctx, "product:9", []byte("v5"), 5)
	fmt.Println("fill v5 accepted", ok)
	c.Invalidate(ctx, "product:9", 6)
	ok, _ = c.Set(ctx, "product:9", []byte("v5"), 5)
	fmt.Println("stale fill v5 accepted", ok)
	// Output:
	// found false
	// fill v5 accepted true
	// stale fill v5 accepted false
}

// A near cache answers hot keys in the application's own memory, kept coherent by the node.
func ExampleWithNearCache() {
	cluster, err := embedded.Start(embedded.Config{Nodes: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	ctx := context.Background()

	w, _ := client.NewWriter(cluster.WriterAddr)
	defer w.Close()
	c, _ := client.NewCache(cluster.NodeAddrs[0], client.WithNearCache(client.NearCacheConfig{
		MaxEntries: 10_000, Logger: slog.New(slog.DiscardHandler)}))
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; { // until its Watch stream is in sync
		if st, _ := c.NearStats(); st.Synced || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	wr, err := w.Put(ctx, "user:1", []byte("Ada"))
	if err != nil {
		log.Fatal(err)
	}
	it, _ := c.Get(ctx, "user:1", client.MinVersion(wr.Version))
	fmt.Printf("%s@%d from %s\n", it.Value, it.Version, it.Tier)
	it, _ = c.Get(ctx, "user:1")
	fmt.Printf("%s@%d from %s\n", it.Value, it.Version, it.Tier)
	// Output:
	// Ada@1 from ORIGIN
	// Ada@1 from NEAR
}
