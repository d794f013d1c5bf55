package node

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TestExplainReportsWhatTheNodeHolds: after an event and a read, Explain shows the key's
// partition, L1 and L2 at the version, the event with its offset, source, commit time and
// trace id, and the origin's version on request; after a DELETE, L1's tombstone and the new
// last event. It changes nothing: no read is counted.
func TestExplainReportsWhatTheNodeHolds(t *testing.T) {
	h := newHarness(t)
	n := h.start(nil)
	ctx := context.Background()
	pub := h.publisher()
	const key, traceID = "explain:k", "4bf92f3577b34da6a3ce929d0e0e4736"
	committed := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	h.origin.put(key, 7, "v7")
	if err := pub.Publish(ctx, invalidation.Event{Key: key, Version: 7, Op: invalidation.OpUpsert, Value: []byte("v7"), HasValue: true,
		CommittedAt: committed, Source: "users-service", Trace: map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}}); err != nil {
		t.Fatal(err)
	}
	var r *pb.ExplainResponse
	testenv.WaitFor(t, 20*time.Second, func() string {
		var err error
		if r, err = n.client.Explain(ctx, &pb.ExplainRequest{Key: key}); err != nil {
			return err.Error()
		}
		if r.GetLastEvent().GetVersion() != 7 {
			return fmt.Sprintf("last event %v", r.GetLastEvent())
		}
		return ""
	})
	if _, err := n.client.Get(ctx, &pb.GetRequest{Key: key, MinVersion: 7}); err != nil {
		t.Fatal(err)
	}
	// The group applies the event to Redis too; then L1 (filled by the read) and L2 agree.
	testenv.WaitFor(t, 20*time.Second, func() string {
		var err error
		if r, err = n.client.Explain(ctx, &pb.ExplainRequest{Key: key, Origin: true}); err != nil {
			return err.Error()
		}
		if !r.GetL2().GetPresent() || r.GetL2().GetVersion() != 7 {
			return fmt.Sprintf("L2 %v", r.GetL2())
		}
		return ""
	})
	stats, _ := n.client.Stats(ctx, &pb.StatsRequest{})
	part := invalidation.PartitionFor(key, 3)
	e := r.GetLastEvent()
	switch {
	case !r.GetReady() || !r.GetVouching() || r.GetNotVouching() != "" || r.GetFreshAsOf() == nil:
		t.Fatalf("explain = %v, want ready and vouching", r)
	case len(r.GetPartitions()) != 1 || int(r.GetPartitions()[0].GetPartition()) != part || r.GetPartitions()[0].GetCaughtUpAt() == nil:
		t.Fatalf("partitions = %v, want the key's partition %d, caught up", r.GetPartitions(), part)
	case !r.GetL1().GetPresent() || r.GetL1().GetVersion() != 7 || r.GetL1().GetTombstone() || r.GetL1().GetValueBytes() != 2:
		t.Fatalf("L1 = %v, want v7 with 2 bytes", r.GetL1())
	case e.GetTopic() != h.topic || int(e.GetPartition()) != part || e.GetOffset() != 0 || e.GetOp() != pb.Op_OP_UPSERT ||
		e.GetSource() != "users-service" || !e.GetCommittedAt().AsTime().Equal(committed) || e.GetTraceId() != traceID || e.GetAppliedAt() == nil:
		t.Fatalf("last event = %v, want the UPSERT at offset 0 with its source, commit time and trace id %s", e, traceID)
	case !r.GetOrigin().GetFound() || r.GetOrigin().GetVersion() != 7:
		t.Fatalf("origin = %v, want found at v7", r.GetOrigin())
	}
	if _, err := n.client.Explain(ctx, &pb.ExplainRequest{Key: key, Origin: true}); err != nil {
		t.Fatal(err)
	}
	after, _ := n.client.Stats(ctx, &pb.StatsRequest{})
	if after.GetL1().GetHits() != stats.GetL1().GetHits() || after.GetL1().GetMisses() != stats.GetL1().GetMisses() ||
		after.GetL2().GetHits() != stats.GetL2().GetHits() || after.GetL2().GetMisses() != stats.GetL2().GetMisses() || after.GetOriginLoads() != stats.GetOriginLoads() {
		t.Fatalf("stats moved from %v to %v: Explain counts no read or load", stats, after)
	}

	if err := pub.Publish(ctx, invalidation.Event{Key: key, Version: 9, Op: invalidation.OpDelete}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, func() string {
		var err error
		if r, err = n.client.Explain(ctx, &pb.ExplainRequest{Key: key}); err != nil {
			return err.Error()
		}
		if l1 := r.GetL1(); !l1.GetTombstone() || l1.GetVersion() != 9 || r.GetLastEvent().GetOp() != pb.Op_OP_DELETE || r.GetLastEvent().GetOffset() != 1 {
			return fmt.Sprintf("L1 %v, last event %v; want the DELETE's tombstone at v9", l1, r.GetLastEvent())
		}
		return ""
	})
	if r.GetOrigin() != nil || r.GetLastEvent().GetTraceId() != "" {
		t.Fatalf("origin %v (not asked), trace id %q (the DELETE carried none)", r.GetOrigin(), r.GetLastEvent().GetTraceId())
	}
	if _, err := n.client.Explain(ctx, &pb.ExplainRequest{Key: ""}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Explain of an empty key: %v, want InvalidArgument", err)
	}
}

// TestExplainIsCoveredByClientRestrictions: Explain needs an identified caller, and counts
// against its rate limit like every call.
func TestExplainIsCoveredByClientRestrictions(t *testing.T) {
	h := newHarness(t)
	const token = "ops-token-0123456789"
	n := h.start(func(c *Config) {
		c.Clients = &ClientsConfig{Tokens: map[string]string{token: "ops"}, Rate: 0.001, Burst: 1}
	})
	ctx := context.Background()
	if _, err := n.client.Explain(ctx, &pb.ExplainRequest{Key: "k"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Explain without a token: %v, want Unauthenticated", err)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	if _, err := n.client.Explain(authed, &pb.ExplainRequest{Key: "k"}); err != nil {
		t.Fatalf("Explain with a token: %v", err)
	}
	if _, err := n.client.Explain(authed, &pb.ExplainRequest{Key: "k"}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a second Explain past the client's rate: %v, want ResourceExhausted", err)
	}
}

// TestRecentTableForgetsAKeyWhoseSlotWasTaken: the table is direct-mapped, so of two keys in one
// slot only the later is remembered, and a key never recorded is not found.
func TestRecentTableForgetsAKeyWhoseSlotWasTaken(t *testing.T) {
	r := newRecent()
	now := time.Now()
	// recentSlots+1 keys: two of them share a slot.
	slot := map[uint64]string{}
	var first, second string
	for i := 0; second == ""; i++ {
		k := "k" + strconv.Itoa(i)
		s := hashSlot(r, k)
		if prev, ok := slot[s]; ok {
			first, second = prev, k
		}
		slot[s] = k
	}
	r.record("t", 0, []invalidation.Event{{Key: first, Version: 1, Offset: 10}}, now)
	if e, ok := r.last("t", 0, first); !ok || e.version != 1 || e.offset != 10 {
		t.Fatalf("last(%s) = %+v %v, want v1 at offset 10", first, e, ok)
	}
	r.record("t", 0, []invalidation.Event{{Key: second, Version: 2, Offset: 11}}, now)
	if _, ok := r.last("t", 0, first); ok {
		t.Fatalf("%s is still remembered after %s took its slot", first, second)
	}
	if e, ok := r.last("t", 0, second); !ok || e.version != 2 {
		t.Fatalf("last(%s) = %+v %v, want v2", second, e, ok)
	}
	if _, ok := r.last("t", 1, second); ok {
		t.Fatal("a key found on a partition it was never recorded on")
	}
}
