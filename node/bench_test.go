package node

import (
	"context"
	"testing"

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
