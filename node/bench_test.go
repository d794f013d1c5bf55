package node

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// BenchmarkGetHitGRPC is a cached read through the node over gRPC (an L1 hit): the hot path of a
// sidecar Get, allocations included (client and server side: both run in this process).
func BenchmarkGetHitGRPC(b *testing.B) {
	h := newHarness(b)
	h.origin.put("k", 1, "value")
	n := h.start(nil)
	ctx := context.Background()
	req := &pb.GetRequest{Key: "k"}
	if r, err := n.client.Get(ctx, req); err != nil || r.Version != 1 {
		b.Fatalf("warm-up Get: %v %v", r, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := n.client.Get(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetHitInProcess is the node's read path alone (an L1 hit), without gRPC.
func BenchmarkGetHitInProcess(b *testing.B) {
	h := newHarness(b)
	h.origin.put("k", 1, "value")
	n := h.start(nil)
	ctx := context.Background()
	if _, err := n.get(ctx, "k", 0); err != nil {
		b.Fatal(err)
	}
	if _, err := n.get(ctx, "k", 0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := n.get(ctx, "k", 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyEvents is the node's L1 sink for one partition's batches of 100 refresh events:
// L1's apply plus what the node adds (the Watch fan-out with no watcher, the L2 gap check, the
// table of recent events for Explain, the apply latency histogram; no tracer). Compare with
// lru's BenchmarkApplyBatch, L1 alone.
func BenchmarkApplyEvents(b *testing.B) {
	h := newHarness(b)
	n := h.start(nil)
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
	}
	batch := make([]invalidation.Event, 100)
	val := make([]byte, 100)
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	v := uint64(1)
	for i := 0; b.Loop(); i++ {
		for j := range batch {
			v++
			batch[j] = invalidation.Event{Key: keys[(i*100+j)%len(keys)], Version: v, Op: invalidation.OpUpsert, Value: val, HasValue: true,
				CommittedAt: now, Offset: int64(v)}
		}
		n.applyEvents("t", 0, batch)
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}
