// Package client is the Go client for cachewire: Cache talks to a cache node (CacheService),
// Writer to the writer (WriterService), and Session combines them for read-your-writes.
//
// Every method takes a context first; a call whose context has no deadline gets the client's
// default (2 s, WithTimeout). Idempotent calls that fail with Unavailable are retried with
// exponential back-off and jitter (WithRetries); Put and Delete, which create versions, never
// are. Errors match ErrNotFound, ErrInvalidArgument, ErrUnavailable or ErrResourceExhausted with
// errors.Is. Connections use gRPC client-side health checking, so a node that is still
// positioning itself or draining is not sent reads.
//
// Usage:
//
//	w, _ := client.NewWriter("127.0.0.1:7080")
//	c, _ := client.NewCache("127.0.0.1:7070")
//	wr, _ := w.Put(ctx, "user:1", []byte("Ada"))          // returns after Kafka acked the event
//	it, _ := c.Get(ctx, "user:1", client.MinVersion(wr.Version))
//
//	s := client.NewSession(c, w) // remembers what it wrote
//	s.Put(ctx, "cart:7", cart)
//	it, _ = s.Get(ctx, "cart:7") // never older than the Put above
package client
