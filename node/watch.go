package node

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cachewire/cachewire/internal/serving"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// watchHub fans what L1 applies out to the Watch streams (near caches in the applications).
// The apply path never waits for a watcher: each has a bounded buffer, and one whose buffer is
// full is cut off (its stream ends with ResourceExhausted, and its client resynchronizes).
type watchHub struct {
	mu       sync.Mutex
	watchers map[*watcher]struct{}
	count    atomic.Int32 // len(watchers), read without the lock on the apply path
	stopped  bool
	stop     chan struct{} // closed when the node shuts down: every stream ends
}

// watcher is one Watch stream's queue. Its messages carry no sequence number: the stream's
// goroutine numbers them as it sends, and since a full queue cuts the watcher off instead of
// dropping a message, the numbers it sends have no gaps.
type watcher struct {
	ch       chan *pb.WatchResponse
	cut      chan struct{}
	cutOnce  sync.Once
	cutCause string
	// unavailable: cut by cutAll (set before cut closes), not for falling behind.
	unavailable bool
}

func newWatchHub() *watchHub {
	return &watchHub{watchers: map[*watcher]struct{}{}, stop: make(chan struct{})}
}

func (w *watcher) cutOff(cause string) {
	w.cutOnce.Do(func() {
		w.cutCause = cause
		close(w.cut)
	})
}

// add registers a watcher and returns it with its start message, built under the hub's lock so
// that no event is published between the snapshot and the registration: every event applied
// after start was built reaches the watcher.
func (h *watchHub) add(max, buffer int, start func() *pb.WatchResponse) (*watcher, *pb.WatchResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return nil, nil, errNotReady
	}
	if len(h.watchers) >= max {
		return nil, nil, status.Errorf(codes.ResourceExhausted, "node has max_watchers (%d) Watch streams open; retry with back-off, or raise --max-watchers", max)
	}
	w := &watcher{ch: make(chan *pb.WatchResponse, buffer), cut: make(chan struct{})}
	h.watchers[w] = struct{}{}
	h.count.Store(int32(len(h.watchers)))
	return w, start(), nil
}

func (h *watchHub) remove(w *watcher) {
	h.mu.Lock()
	delete(h.watchers, w)
	h.count.Store(int32(len(h.watchers)))
	h.mu.Unlock()
}

// publish queues m on every watcher, cutting off those whose queue is full, and returns how
// many it cut off. It never blocks.
func (h *watchHub) publish(m *pb.WatchResponse) (cut int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers {
		select {
		case w.ch <- m:
		default:
			w.cutOff(fmt.Sprintf("the watcher fell behind: %d messages were waiting to be sent", cap(w.ch)))
			delete(h.watchers, w)
			cut++
		}
	}
	h.count.Store(int32(len(h.watchers)))
	return cut
}

// watchCut is the status a stream cut off ends with.
func (n *Node) watchCut(w *watcher, client string, seq uint64) error {
	if w.unavailable {
		return status.Errorf(codes.Unavailable, "%s; resubscribe: the near cache resynchronizes", w.cutCause)
	}
	n.log.Warn("Watch stream cut off", "client", client, "cause", w.cutCause, "sent", seq)
	return status.Errorf(codes.ResourceExhausted, "%s (--watch-buffer %d); resubscribe: the near cache resynchronizes", w.cutCause, n.cfg.WatchBuffer)
}

// cutAll ends every stream with UNAVAILABLE, saying why, and returns how many it ended.
func (h *watchHub) cutAll(cause string) (cut int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers {
		w.unavailable = true
		w.cutOff(cause)
		delete(h.watchers, w)
		cut++
	}
	h.count.Store(int32(len(h.watchers)))
	return cut
}

// shutdown ends every stream and refuses new ones.
func (h *watchHub) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stopped {
		h.stopped = true
		close(h.stop)
	}
}

// watchMaxBytes bounds the values in one WatchEvents message (one event may exceed it alone):
// a fetch of compressed records can decode to more than a client receives in one message.
const watchMaxBytes = 1 << 20

// watchEvents publishes what L1 just applied from one partition. It runs on the partition's
// goroutine after L1 applied the events and before the subscriber records its new position, so
// a heartbeat that reports the position was queued after them.
func (n *Node) watchEvents(topic string, partition int, events []invalidation.Event) {
	if n.watch.count.Load() == 0 {
		return
	}
	var out []*pb.WatchEvent
	size := 0
	flush := func() {
		if len(out) > 0 {
			n.publishWatch(&pb.WatchResponse{Body: &pb.WatchResponse_Events{Events: &pb.WatchEvents{
				Topic: topic, Partition: int32(partition), Events: out}}})
		}
		out, size = nil, 0
	}
	for i := range events {
		e := &events[i]
		we := &pb.WatchEvent{Key: e.Key, Version: e.Version, Op: pb.Op(e.Op)}
		if e.Op == invalidation.OpUpsert && e.HasValue && n.cfg.Policy != invalidation.EvictOnly {
			we.Value = e.Value
			if we.Value == nil {
				we.Value = []byte{}
			}
		}
		if sz := len(we.Value) + len(we.Key); size+sz > watchMaxBytes && len(out) > 0 {
			flush()
		}
		out = append(out, we)
		size += len(we.Value) + len(we.Key)
	}
	flush()
}

// watchLocal publishes an event this node applied to L1 itself (its own Invalidate and Evict)
// before its subscriber delivers it: near caches must not hold what L1 just dropped.
func (n *Node) watchLocal(e invalidation.Event) {
	parts := n.sub.NumPartitions(n.cfg.InvalidateTopic)
	n.watchEvents(n.cfg.InvalidateTopic, invalidation.PartitionFor(e.Key, parts), []invalidation.Event{e})
}

// watchLearned tells near caches that L1 now holds key at version, learned from the origin,
// Redis or Set rather than from an event (which may come later): they drop anything older, as
// L1 refuses it, and keep that version or a newer one.
func (n *Node) watchLearned(key string, version uint64) {
	if version == 0 || n.watch.count.Load() == 0 {
		return
	}
	n.watchLocal(invalidation.Event{Key: key, Version: version, Op: invalidation.OpInvalidate})
}

// watchReset tells the watchers that L1 was flushed.
func (n *Node) watchReset(topic string, partition int, reason string) {
	n.publishWatch(&pb.WatchResponse{Body: &pb.WatchResponse_Reset_{Reset_: &pb.WatchReset{
		Topic: topic, Partition: int32(partition), Reason: reason}}})
}

func (n *Node) publishWatch(m *pb.WatchResponse) {
	if cut := n.watch.publish(m); cut > 0 {
		n.m.watchCutoffs.Add(float64(cut))
		n.log.Warn("Watch streams cut off: they fell behind the events", "watchers", cut, "watch_buffer", n.cfg.WatchBuffer)
	}
}

// positions is every partition's position, for the start message and heartbeats.
func (n *Node) positions() []*pb.WatchPosition {
	parts := n.sub.Partitions()
	out := make([]*pb.WatchPosition, len(parts))
	meta := map[string]time.Time{}
	for _, topic := range n.cfg.Topics {
		meta[topic] = n.sub.MetadataAt(topic)
	}
	for i, p := range parts {
		out[i] = &pb.WatchPosition{Topic: p.Topic, Partition: int32(p.Partition), Offset: p.Offset}
		if m := meta[p.Topic]; m.Before(p.CaughtUpAt) {
			p.CaughtUpAt = m // a partition added since the last lookup is not read yet
		}
		if !p.CaughtUpAt.IsZero() {
			out[i].CaughtUpAt = timestamppb.New(p.CaughtUpAt)
			out[i].CaughtUpAge = durationpb.New(max(time.Since(p.CaughtUpAt), 0)) // monotonic
		}
	}
	return out
}

func (n *Node) watchStart() *pb.WatchResponse {
	start := &pb.WatchStart{NodeId: n.cfg.NodeID, MaxStaleness: durationpb.New(n.cfg.MaxStaleness)}
	for _, topic := range n.cfg.Topics {
		wt := &pb.WatchTopic{Topic: topic, Partitions: int32(n.sub.NumPartitions(topic)),
			AnyPartition: n.cfg.TopicFormats[topic].Format == invalidation.FormatDebezium}
		for _, c := range n.sub.PartitionCounts(topic) {
			wt.PartitionCounts = append(wt.PartitionCounts, int32(c))
		}
		start.Topics = append(start.Topics, wt)
	}
	start.Uptime, start.Now = durationpb.New(time.Since(n.born)), timestamppb.Now()
	start.Positions = n.positions()
	return &pb.WatchResponse{Body: &pb.WatchResponse_Start{Start: start}}
}

// heartbeats sends every partition's position to the watchers every WatchHeartbeat, while
// there are any. Owned by the node: it stops when the node does.
func (n *Node) heartbeats() {
	t := time.NewTicker(n.cfg.WatchHeartbeat)
	defer t.Stop()
	counts := map[string]int{}
	for {
		select {
		case <-t.C:
		case <-n.ctx.Done():
			return
		}
		// A near cache maps keys to partitions with the counts its stream started with: when
		// partitions are added, every stream ends so that each resubscribes with the new ones.
		for _, topic := range n.cfg.Topics {
			c := n.sub.NumPartitions(topic)
			if was, ok := counts[topic]; ok && was != c {
				if cut := n.watch.cutAll(fmt.Sprintf("topic %s now has %d partitions (had %d)", topic, c, was)); cut > 0 {
					n.log.Info("Watch streams ended: the topic's partitions changed; near caches resubscribe", "topic", topic, "partitions", c, "was", was, "watchers", cut)
				}
			}
			counts[topic] = c
		}
		if n.watch.count.Load() == 0 {
			continue
		}
		// The clocks before the positions: the ages are read after them, so they can only be
		// longer than at that moment (the client can only think the node staler).
		uptime, now := durationpb.New(time.Since(n.born)), timestamppb.Now()
		n.publishWatch(&pb.WatchResponse{Body: &pb.WatchResponse_Heartbeat{Heartbeat: &pb.WatchHeartbeat{
			Now: now, Uptime: uptime, Positions: n.positions()}}})
	}
}

// Watch serves one Watch stream (see CacheService.Watch in the proto).
func (s *service) Watch(_ *pb.WatchRequest, stream pb.CacheService_WatchServer) error {
	n := s.n
	if !n.ready.Load() {
		return toStatus(errNotReady)
	}
	w, start, err := n.watch.add(n.cfg.MaxWatchers, n.cfg.WatchBuffer, n.watchStart)
	if err != nil {
		return toStatus(err)
	}
	defer n.watch.remove(w)
	n.m.watchers.Inc()
	defer n.m.watchers.Dec()
	ctx := stream.Context()
	client := serving.ClientName(ctx)
	n.log.Debug("Watch stream opened", "client", client)
	seq := uint64(1)
	start.Seq = seq
	if err := stream.Send(start); err != nil {
		return err
	}
	for {
		// A cut-off or a shutdown first: after either, nothing more is sent.
		select {
		case <-w.cut:
			return n.watchCut(w, client, seq)
		case <-n.watch.stop:
			return status.Error(codes.Unavailable, "node is shutting down; resubscribe to another node, or to this one once it is back")
		default:
		}
		select {
		case m := <-w.ch:
			seq++
			if err := stream.Send(&pb.WatchResponse{Seq: seq, Body: m.Body}); err != nil {
				return err
			}
		case <-w.cut:
			return n.watchCut(w, client, seq)
		case <-n.watch.stop:
			return status.Error(codes.Unavailable, "node is shutting down; resubscribe to another node, or to this one once it is back")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
