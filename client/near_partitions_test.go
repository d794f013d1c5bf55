package client

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TestNearCacheCoversEveryPartitionCount: after partitions were added (the node's
// partition_counts say 1, then 2), a key's events may still be on its partition under the old
// count, so the near cache answers it in process only while that partition is fresh too. From a
// node that sends no history, the current count alone decides.
func TestNearCacheCoversEveryPartitionCount(t *testing.T) {
	key := ""
	for i := range 100 {
		if k := fmt.Sprintf("k%d", i); invalidation.PartitionFor(k, 2) == 1 {
			key = k
			break
		}
	}
	h := newNearHarness(t)
	h.stale = 100 * time.Millisecond
	pos := func(p0, p1 time.Duration) []*pb.WatchPosition {
		return []*pb.WatchPosition{
			{Topic: "t", Partition: 0, Offset: 1, CaughtUpAt: timestamppb.New(time.Now().Add(-p0))},
			{Topic: "t", Partition: 1, Offset: 1, CaughtUpAt: timestamppb.New(time.Now().Add(-p1))},
		}
	}
	start := func(counts []int32, p0, p1 time.Duration) {
		h.open()
		h.send(&pb.WatchStart{NodeId: "fake", MaxStaleness: durationpb.New(h.stale), Now: timestamppb.Now(),
			Topics: []*pb.WatchTopic{{Topic: "t", Partitions: 2, PartitionCounts: counts}}, Positions: pos(p0, p1)})
	}
	h.node.set(key, 3)

	// The key's old partition (0) lags beyond max_staleness, its new one (1) is fresh.
	start([]int32{1, 2}, time.Second, 0)
	h.get(key)
	if it := h.get(key); it.Tier == TierNear {
		t.Fatalf("answered in process while the key's old partition lags: %+v", it)
	}
	h.send(&pb.WatchHeartbeat{Now: timestamppb.Now(), Positions: pos(0, 0)})
	expectItem(t, h.get(key), TierNear, 3)

	// A node from before partition_counts: only the current count.
	h.stream.end <- status.Error(codes.Unavailable, "restart (test)")
	start(nil, time.Second, 0)
	h.get(key)
	expectItem(t, h.get(key), TierNear, 3)
}
