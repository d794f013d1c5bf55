// Package invalidation is cachewire's event model and the Kafka edges that move events.
//
// The core has no I/O: Event and its protobuf codec (Encode, Decode), validation against Limits,
// and the two rules every cache tier follows, Decide (what an event does to what a tier holds:
// refresh, evict to a tombstone, or ignore) and AcceptFill (whether a value read from a slower
// tier or the origin may be stored). Versions only grow per key, so applying an event twice, or
// an older one after a newer one, changes nothing.
//
// The edges use segmentio/kafka-go:
//
//   - Publisher sends events keyed by cache key with the Murmur2 balancer (the Java client's
//     default partitioner) and acks from all in-sync replicas, and returns after the ack.
//   - Subscriber reads every partition of its topics without a consumer group, so every cache
//     node sees every event, and feeds an in-process tier through a Sink. It knows per partition
//     when it was last caught up with the log end.
//   - GroupApplier consumes through one consumer group shared by all nodes and applies each
//     event once to the shared Redis tier, committing only after the apply.
//
// Usage, for a node's L1:
//
//	sub, _ := invalidation.NewSubscriber(invalidation.SubscriberConfig{
//		Brokers: brokers, Topics: []string{"cachewire.users"},
//		Sink: invalidation.SinkFuncs{
//			Apply:     func(_ string, _ int, evs []invalidation.Event) { cache.ApplyBatch(evs, invalidation.RefreshHeld) },
//			ResetFunc: func(string, int, string) { cache.Flush() },
//		},
//	})
//	go sub.Run(ctx)
//	<-sub.Ready() // positioned at the log end: start serving
//	defer sub.Close()
package invalidation
