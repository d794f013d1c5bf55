// Package node is the cache node: the sidecar that serves CacheService over gRPC next to a
// service instance.
//
// A read goes L1 (the in-process lru.Cache), then, inside one shared load per key, L1 again, L2
// (redistier.Tier, shared by all nodes) and the origin Loader (the writer's read API; none means
// cache-aside). Fills go to both tiers under the version rule. L1 is kept fresh by the node's own
// invalidation.Subscriber, which reads every partition; L2 by an invalidation.GroupApplier in a
// group shared by all nodes.
//
// The node knows how fresh it is: a key is served from the tiers only while its partition was
// caught up with the log end within MaxStaleness. Beyond that, reads go to the origin, or come
// back with stale=true when there is no origin or it is down. A request with min_version is
// served only by a value at least that new.
//
// Usage:
//
//	n, err := node.New(node.Config{Brokers: brokers, Topics: []string{"cachewire.users"},
//		L2: redistier.Config{Addrs: []string{"127.0.0.1:6379"}}})
//	if err := n.Start(); err != nil { ... }
//	<-ctx.Done()
//	n.Shutdown(context.Background())
//
// A Node is safe for concurrent use. After Shutdown or Close every call returns ErrClosed.
package node
