package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"

	"github.com/cachewire/cachewire/internal/fault"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

// movedKey returns a key whose partition differs between from and to partitions.
func movedKey(t *testing.T, from, to int) string {
	for i := range 1000 {
		k := fmt.Sprintf("user:%d", i)
		if invalidation.PartitionFor(k, from) != invalidation.PartitionFor(k, to) &&
			invalidation.PartitionFor(k, to) >= from {
			return k
		}
	}
	t.Fatal("no key moves to a new partition")
	return ""
}

// TestPartitionsAddedToALiveTopic: the topic grows from 3 to 6 partitions under a running
// node. A key that moves to a new partition gets its next event there; the node finds the new
// partition, reads it from its beginning and applies the event. A producer that has not seen the
// new partitions yet still writes the key to its old partition: the node applies that too
// (versions order the two), and until then its freshness for the key is the older of the two
// partitions' (Subscriber.KeyPartitions).
func TestPartitionsAddedToALiveTopic(t *testing.T) {
	h := newHarness(t)
	key := movedKey(t, 3, 6)
	h.origin.put(key, 1, "v1")
	n := h.start(func(c *Config) { c.MaxStaleness = 2 * time.Second })
	expect(t, get(t, n, key, 0), pb.Tier_TIER_ORIGIN, 1, "v1")
	expect(t, get(t, n, key, 0), pb.Tier_TIER_L1, 1, "v1")

	resp, err := h.kafka.Client(t).CreatePartitions(ctxT(t), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: h.topic, Count: 6}}})
	if err != nil || len(resp.Errors) > 0 && resp.Errors[h.topic] != nil {
		t.Fatalf("create partitions: %v %v", err, resp)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if c := n.sub.NumPartitions(h.topic); c != 6 {
			return fmt.Sprintf("the node sees %d partitions", c)
		}
		return ""
	})
	if ps := n.sub.KeyPartitions(h.topic, key, nil); len(ps) != 2 {
		t.Fatalf("KeyPartitions = %v, want the key's partition under 3 and under 6", ps)
	}
	// v2 on the key's new partition (a producer that has the new metadata), then v3 on its old
	// one (a producer that has not).
	write := func(p int, v uint64) {
		tr := h.kafka.Conn.Transport()
		defer tr.CloseIdleConnections()
		w := &kafka.Writer{Addr: kafka.TCP(h.kafka.Brokers...), Topic: h.topic, Transport: tr,
			Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return p }), RequiredAcks: kafka.RequireAll}
		defer w.Close()
		val, err := invalidation.Encode(&invalidation.Event{Key: key, Version: v, Op: invalidation.OpUpsert, Value: []byte(fmt.Sprintf("v%d", v)), HasValue: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteMessages(ctxT(t), kafka.Message{Key: []byte(key), Value: val}); err != nil {
			t.Fatal(err)
		}
	}
	write(invalidation.PartitionFor(key, 6), 2)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := get(t, n, key, 0); r.Version != 2 || r.Freshness.GetStale() {
			return fmt.Sprintf("serves %q@%d from %s (stale %v), want v2 from the new partition", r.Value, r.Version, r.Tier, r.Freshness.GetStale())
		}
		return ""
	})
	write(invalidation.PartitionFor(key, 3), 3)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := get(t, n, key, 0); r.Version != 3 {
			return fmt.Sprintf("serves %q@%d from %s, want v3 from the old partition", r.Value, r.Version, r.Tier)
		}
		return ""
	})
	write(invalidation.PartitionFor(key, 6), 2) // a late duplicate changes nothing
	if r := get(t, n, key, 0); r.Version != 3 {
		t.Fatalf("after a late v2: %q@%d", r.Value, r.Version)
	}
}

// TestFreshnessIsBoundedByTheLastMetadataLookup: a node whose metadata lookups fail cannot know
// whether partitions were added (and receive events it does not read), so it stops vouching
// within max_staleness even though every partition it reads stays caught up.
func TestFreshnessIsBoundedByTheLastMetadataLookup(t *testing.T) {
	h := newHarness(t)
	if h.kafka.Fake == nil {
		t.Skip("refusing only metadata requests needs the in-process Kafka")
	}
	h.origin.put("k", 1, "v1")
	n := h.start(func(c *Config) { c.MaxStaleness = 500 * time.Millisecond })
	expect(t, get(t, n, "k", 0), pb.Tier_TIER_ORIGIN, 1, "v1")
	expect(t, get(t, n, "k", 0), pb.Tier_TIER_L1, 1, "v1")
	heal := fault.Refuse(h.kafka.Fake, "metadata refused by the test", kmsg.Metadata)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := get(t, n, "k", 0); r.Tier != pb.Tier_TIER_ORIGIN {
			return fmt.Sprintf("with metadata refused, still served from %s", r.Tier)
		}
		return ""
	})
	st, _ := n.sub.Partition(h.topic, invalidation.PartitionFor("k", 3))
	if age := time.Since(st.CaughtUpAt); age > 500*time.Millisecond {
		t.Fatalf("the partition itself fell behind (caught up %v ago): the test did not isolate the metadata bound", age)
	}
	heal()
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := get(t, n, "k", 0); r.Tier != pb.Tier_TIER_L1 {
			return fmt.Sprintf("after healing, served from %s", r.Tier)
		}
		return ""
	})
}

// TestWatchEndsWhenPartitionsAreAdded: a near cache maps keys to partitions with the count its
// stream started with, so the node ends every Watch stream (UNAVAILABLE, naming the change) when
// the count changes, and a new stream starts with the new count.
func TestWatchEndsWhenPartitionsAreAdded(t *testing.T) {
	h := newHarness(t)
	n := h.start(nil)
	ctx := ctxT(t)
	stream, err := n.client.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	if start := recvSeq(t, stream, &seq).GetStart(); start.GetTopics()[0].GetPartitions() != 3 {
		t.Fatalf("start = %v", start)
	}
	if _, err := h.kafka.Client(t).CreatePartitions(ctx, &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: h.topic, Count: 5}}}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := stream.Recv()
		if err == nil {
			continue // heartbeats until the node notices
		}
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "now has 5 partitions (had 3)") {
			t.Fatalf("stream ended with %v, want UNAVAILABLE naming the new partition count", err)
		}
		break
	}
	again, err := n.client.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	seq = 0
	if start := recvSeq(t, again, &seq).GetStart(); start.GetTopics()[0].GetPartitions() != 5 {
		t.Fatalf("new stream's start = %v, want 5 partitions", start)
	}
}
