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
// Shared loads and each request's own answer. Concurrent misses of a key share one load, but each
// request is answered by its own needs. A request joins only a load made to a floor at least its
// min_version (tier entries below the floor are skipped) and, when it cannot vouch for its tiers,
// only one that reads the origin. An answer below its min_version, found or not found, from a
// load that began before the request arrived proves nothing (the write may have come after the
// load read): the request asks for a load that begins after it arrived, and only if that one is
// still below min_version does it get Unavailable ("origin is behind"). Nobody inherits another
// request's error.
//
// Monotonic reads. Before any answer goes out, L1 must admit it (lru.Cache.Admits): no newer
// version of the key was applied or served meanwhile, and L1 has not been flushed or forgotten a
// young version since the load began. Otherwise the request loads again (at most a few times; then
// Unavailable). L1 remembers what it applied and served for at least its tombstone TTL, longer
// than any load. Past that, the slower tiers must not go back: L2 is used only while the shared
// group has caught up with L1, and not at all after an L1 reset, after L1 forgot a young version,
// or in a new L2 epoch, until the group has applied everything up to L1's position then; Redis
// itself refuses writes begun in an older epoch and never serves entries from one (package
// redistier). The origin reads the primary, which never goes back.
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
