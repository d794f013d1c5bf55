package node

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// recvSeq receives the next message and checks that it is numbered one past the last.
func recvSeq(t *testing.T, s pb.CacheService_WatchClient, last *uint64) *pb.WatchResponse {
	t.Helper()
	m, err := s.Recv()
	if err != nil {
		t.Fatalf("Recv after message %d: %v", *last, err)
	}
	if m.GetSeq() != *last+1 {
		t.Fatalf("message %d after %d", m.GetSeq(), *last)
	}
	*last = m.GetSeq()
	return m
}

// TestWatchStreamsStartEventsAndHeartbeats: the stream opens with the node's positions, carries
// the events L1 applies (with the value when it refreshes), numbered without gaps, and
// heartbeats whose positions are past the events sent before them.
func TestWatchStreamsStartEventsAndHeartbeats(t *testing.T) {
	h := newHarness(t)
	n := h.start(func(c *Config) { c.Policy = invalidation.RefreshAll })
	ctx := ctxT(t)
	stream, err := n.client.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	start := recvSeq(t, stream, &seq).GetStart()
	if start == nil || start.GetNodeId() != n.cfg.NodeID || start.GetMaxStaleness().AsDuration() != n.cfg.MaxStaleness ||
		len(start.GetTopics()) != 1 || start.GetTopics()[0].GetPartitions() != 3 || len(start.GetPositions()) != 3 || start.GetNow() == nil {
		t.Fatalf("start = %v", start)
	}
	for _, p := range start.GetPositions() {
		if p.GetCaughtUpAt() == nil {
			t.Fatalf("position %v: never caught up, yet the node is ready", p)
		}
	}
	pub := h.publisher()
	if err := pub.Publish(ctx, invalidation.Event{Key: "w:1", Version: 7, Op: invalidation.OpUpsert, Value: []byte("v7"), HasValue: true}); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, invalidation.Event{Key: "w:1", Version: 8, Op: invalidation.OpDelete}); err != nil {
		t.Fatal(err)
	}
	part := int32(invalidation.PartitionFor("w:1", 3))
	var got []*pb.WatchEvent
	heartbeatsAfter := 0
	for heartbeatsAfter < 3 {
		m := recvSeq(t, stream, &seq)
		switch b := m.GetBody().(type) {
		case *pb.WatchResponse_Events:
			if b.Events.GetTopic() != h.topic || b.Events.GetPartition() != part {
				t.Fatalf("events on %s/%d, want %s/%d", b.Events.GetTopic(), b.Events.GetPartition(), h.topic, part)
			}
			got = append(got, b.Events.GetEvents()...)
		case *pb.WatchResponse_Heartbeat:
			if len(b.Heartbeat.GetPositions()) != 3 || b.Heartbeat.GetNow() == nil {
				t.Fatalf("heartbeat = %v", b.Heartbeat)
			}
			if len(got) == 2 {
				heartbeatsAfter++
				for _, p := range b.Heartbeat.GetPositions() {
					if p.GetPartition() == part && p.GetOffset() < 2 {
						t.Fatalf("a heartbeat after both events says partition %d is at offset %d", part, p.GetOffset())
					}
				}
			}
		case *pb.WatchResponse_Start:
			t.Fatal("a second start")
		}
	}
	if len(got) != 2 || got[0].GetVersion() != 7 || string(got[0].GetValue()) != "v7" || got[0].GetOp() != pb.Op_OP_UPSERT ||
		got[1].GetVersion() != 8 || got[1].GetOp() != pb.Op_OP_DELETE || got[1].Value != nil {
		t.Fatalf("events = %v", got)
	}
}

// TestWatchCutsOffASlowWatcher: a watcher that stops reading is cut off with ResourceExhausted,
// and the node's apply goes on at its own pace meanwhile.
func TestWatchCutsOffASlowWatcher(t *testing.T) {
	h := newHarness(t)
	n := h.start(func(c *Config) { c.WatchBuffer = 4 })
	// Small HTTP/2 windows, so that what the client does not read backs up into the node.
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := ctxT(t)
	stream, err := pb.NewCacheServiceClient(conn).Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	recvSeq(t, stream, &seq) // start; then the client reads nothing while events flow
	pub := h.publisher()
	const events = 400
	value := make([]byte, 4<<10)
	batch := make([]invalidation.Event, 0, 50)
	for i := range events {
		batch = append(batch, invalidation.Event{Key: "slow:" + itoa(i%50), Version: uint64(i + 1), Op: invalidation.OpUpsert, Value: value, HasValue: true})
		if len(batch) == cap(batch) {
			if err := pub.Publish(ctx, batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if got := n.applied.Load() + n.ignored.Load(); got < events {
			return "the node applied " + itoa(int(got)) + " events"
		}
		return ""
	})
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("the slow watcher's stream ended with %v, want ResourceExhausted", err)
		}
		break
	}
	if n.watch.count.Load() != 0 {
		t.Fatalf("%d watchers left registered", n.watch.count.Load())
	}
}

// TestWatchLimitAndShutdown: Watch streams beyond MaxWatchers are refused; Shutdown ends the
// open ones with Unavailable instead of waiting for them.
func TestWatchLimitAndShutdown(t *testing.T) {
	h := newHarness(t)
	n := h.start(func(c *Config) { c.MaxWatchers = 1; c.ShutdownTimeout = time.Minute })
	ctx := ctxT(t)
	first, err := n.client.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	recvSeq(t, first, &seq)
	second, err := n.client.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a Watch over max_watchers got %v, want ResourceExhausted", err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Shutdown(context.Background()) }()
	for {
		_, err := first.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("at shutdown the stream ended with %v, want Unavailable", err)
		}
		break
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
