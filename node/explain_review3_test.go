package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TestExplainL2TrustedAgreesWithTheReadPath_review3: l2_trusted says "the node serves key from
// Redis". While the node has an L2 gap for the key (it served a version from the origin that a
// failed Redis fill did not store), fromL2 refuses Redis and a Get goes to the origin; Explain
// must not report l2_trusted then (cachectl would judge the node by Redis's older version).
func TestExplainL2TrustedAgreesWithTheReadPath_review3(t *testing.T) {
	h := newHarness(t)
	n := h.start(nil)
	ctx := context.Background()
	const key = "review3:gap"
	if err := h.publisher().Publish(ctx, invalidation.Event{Key: key, Version: 5, Op: invalidation.OpUpsert, Value: []byte("v5"), HasValue: true}); err != nil {
		t.Fatal(err)
	}
	var r *pb.ExplainResponse
	testenv.WaitFor(t, 30*time.Second, func() string {
		var err error
		if r, err = n.client.Explain(ctx, &pb.ExplainRequest{Key: key}); err != nil {
			return err.Error()
		}
		if r.GetL2().GetVersion() != 5 || !r.GetL2Trusted() || r.GetL1().GetVersion() != 5 {
			return fmt.Sprintf("L1 %v, L2 %v, trusted %v", r.GetL1(), r.GetL2(), r.GetL2Trusted())
		}
		return ""
	})
	if it, ok, _ := n.l1.Peek(key); ok {
		t.Skipf("L1 holds a value (%+v): this test needs L1 to hold only the version", it)
	}
	// The origin moved to v7 and this node served it, but Redis failed the fill: a gap.
	h.origin.put(key, 7, "v7")
	n.gaps.add(key, 7)

	if r, err := n.client.Explain(ctx, &pb.ExplainRequest{Key: key}); err != nil {
		t.Fatal(err)
	} else if r.GetL2Trusted() {
		g := get(t, n, key, 0)
		t.Fatalf("Explain: l2_trusted with L2 at v%d, but a Get is answered from %s at v%d (the gap blocks Redis)",
			r.GetL2().GetVersion(), g.GetTier(), g.GetVersion())
	}
}

// TestExplainSurvivesANonUTF8TraceparentHeader_review3: the traceparent header of a record is
// arbitrary bytes (a producer's, not cachewire's). Decode copies it into Event.Trace unchecked,
// and Explain slices its trace id into a proto string field: Explain of that key must not fail.
func TestExplainSurvivesANonUTF8TraceparentHeader_review3(t *testing.T) {
	h := newHarness(t)
	n := h.start(nil)
	ctx := ctxT(t)
	const key = "review3:hdr"
	raw, err := invalidation.Encode(&invalidation.Event{Key: key, Version: 3, Op: invalidation.OpInvalidate})
	if err != nil {
		t.Fatal(err)
	}
	bad := "00-" + strings.Repeat("\xff", 32) + "-" + strings.Repeat("0", 16) + "-01"
	w := h.kafka.Writer(t, h.topic)
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(key), Value: raw, Headers: []kafka.Header{{Key: "traceparent", Value: []byte(bad)}}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if st := n.l1.State(key); st.Version != 3 {
			return fmt.Sprintf("L1 state %+v", st)
		}
		return ""
	})
	if _, err := n.client.Explain(ctx, &pb.ExplainRequest{Key: key}); err != nil {
		t.Fatalf("Explain after an event with a non-UTF-8 traceparent header: %v", err)
	}
}
