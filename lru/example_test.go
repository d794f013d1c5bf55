package lru_test

import (
	"fmt"

	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
)

// A slow loader read version 1; an invalidation to version 2 arrived before its fill. The fill
// is rejected, and only a value at least as new as version 2 is accepted.
func Example() {
	c, _ := lru.New(lru.Config{MaxEntries: 1000, MaxBytes: 1 << 20})

	tok := c.BeginFill()
	c.Apply(&invalidation.Event{Key: "user:1", Version: 2, Op: invalidation.OpInvalidate}, invalidation.RefreshHeld)
	fmt.Println("stale fill accepted:", c.Fill("user:1", 1, []byte("Ada"), tok))

	fmt.Println("fresh fill accepted:", c.Fill("user:1", 2, []byte("Ada Lovelace"), c.BeginFill()))
	it, _ := c.Get("user:1")
	fmt.Printf("%s@%d\n", it.Value, it.Version)
	// Output:
	// stale fill accepted: false
	// fresh fill accepted: true
	// Ada Lovelace@2
}

// An UPSERT that carries its value refreshes a held entry in place.
func ExampleCache_Apply() {
	c, _ := lru.New(lru.Config{})
	c.Fill("k", 1, []byte("one"), c.BeginFill())
	a := c.Apply(&invalidation.Event{Key: "k", Version: 2, Op: invalidation.OpUpsert, Value: []byte("two"), HasValue: true}, invalidation.RefreshHeld)
	it, _ := c.Get("k")
	fmt.Println(a, string(it.Value), it.Version)
	// A duplicate delivery changes nothing.
	fmt.Println(c.Apply(&invalidation.Event{Key: "k", Version: 2, Op: invalidation.OpInvalidate}, invalidation.RefreshHeld))
	// Output:
	// refresh two 2
	// ignore
}
