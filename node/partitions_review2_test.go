package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

// TestReview2L2FreshDebeziumCoversEveryPartition: on a Debezium topic records are placed by
// Debezium's own key, so a cache key's events may be on any partition (freshAsOf checks them
// all). l2Fresh instead checks only the cache key's Murmur2 partition: when the L2 group is
// behind on the partition that actually carries the key's change (here: the node's gating for
// it was reset, as after an L1 reset for that partition), l2Fresh still trusts Redis for the
// key, and fromL2 serves a value the group has not yet invalidated.
func TestReview2L2FreshDebeziumCoversEveryPartition(t *testing.T) {
	h := newHarness(t) // 3 partitions
	n := h.start(func(c *Config) {
		c.L2WatchInterval = time.Hour // only the first poll runs on its own
		c.MaxStaleness = 10 * time.Second
		c.TopicFormats = invalidation.Formats{h.topic: {Format: invalidation.FormatDebezium,
			Debezium: invalidation.DebeziumMapping{Key: "user:{id}", Version: "after.version"}}}
	})
	const key = "user:42"
	testenv.WaitFor(t, 30*time.Second, func() string {
		if !n.l2Fresh(key) {
			return "L2 not trusted yet"
		}
		return ""
	})
	own := invalidation.PartitionFor(key, 3)
	other := (own + 1) % 3
	// The group has not applied what L1 has on another partition, which may hold the key's
	// Debezium records.
	n.resetL2(h.topic, other)
	if n.l2Fresh(key) {
		t.Fatalf("l2Fresh(%q) = true while the L2 group is not known to be caught up on partition %d of the Debezium topic %s (only the cache key's partition %d was checked)", key, other, h.topic, own)
	}
}

// TestReview2NearCacheFreshnessAfterPartitionsAdded: after partitions are added, the node's
// freshness for a key is the oldest over its partition under every count seen
// (Subscriber.KeyPartitions). Watch streams are cut and near caches resubscribe, but WatchStart
// carries only the current count, and the near cache maps a key to its partition under that
// count alone: it claims a fresh_as_of later than the node's own for the key (and answers when
// the node would not, while the key's old partition lags), against "a near cache answers only
// what the node itself would" (invariant 6).
func TestReview2NearCacheFreshnessAfterPartitionsAdded(t *testing.T) {
	h := newHarness(t)
	key := movedKey(t, 3, 6)
	n := h.start(nil)
	resp, err := h.kafka.Client(t).CreatePartitions(ctxT(t), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: h.topic, Count: 6}}})
	if err != nil || len(resp.Errors) > 0 && resp.Errors[h.topic] != nil {
		t.Fatalf("create partitions: %v %v", err, resp)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if c := n.sub.NumPartitions(h.topic); c != 6 {
			return fmt.Sprintf("the node sees %d partitions", c)
		}
		for p := range 6 {
			if st, ok := n.sub.Partition(h.topic, p); !ok || st.CaughtUpAt.IsZero() {
				return fmt.Sprintf("partition %d not caught up", p)
			}
		}
		return ""
	})
	// What a near cache that (re)subscribed now computes for key (client/near.go freshAsOf): the
	// WatchStart's partition counts, and the stalest caught-up time of the key's partitions
	// under them.
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); {
		st := n.watchStart().GetStart() // first: a partition's caught-up time only moves forward
		var counts []int32
		for _, tp := range st.Topics {
			if tp.Topic == h.topic {
				counts = tp.PartitionCounts
			}
		}
		if len(counts) != 2 {
			t.Fatalf("WatchStart partition_counts = %v, want the count before and after", counts)
		}
		var near time.Time
		var ps []int
		for _, c := range counts {
			p := invalidation.PartitionFor(key, int(c))
			ps = append(ps, p)
			for _, pos := range st.Positions {
				if pos.Topic == h.topic && int(pos.Partition) == p && pos.CaughtUpAt != nil {
					if at := pos.CaughtUpAt.AsTime(); near.IsZero() || at.Before(near) {
						near = at
					}
				}
			}
		}
		node := n.freshAsOf(key)
		if near.After(node) {
			t.Fatalf("a near cache subscribed now vouches for %q as of %v (partitions %v), but the node itself only as of %v (its partitions %v)",
				key, near, ps, node, n.sub.KeyPartitions(h.topic, key, nil))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
