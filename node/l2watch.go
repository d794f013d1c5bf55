package node

import (
	"context"
	"math"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/invalidation"
)

// L2 freshness. Redis is updated by the shared consumer group, which may lag behind this node's
// own subscriber (a slow or restarting group member, a rebalance). Serving an L2 value older than
// a version L1 has already applied would send a reader back in time, so the node watches the
// group's committed offsets and uses L2 for a partition only while the group has applied
// everything L1 has (within MaxStaleness) and, after L1 was reset or at start, everything up to
// L1's position then.

const needNext = math.MaxInt64 // "set need to L1's position at the next poll"

type tp struct {
	topic     string
	partition int
}

type l2Part struct {
	committed int64
	need      int64
	// hold: the group must also have committed this far (past an EVICT L1 applied, see holdL2).
	// Unlike need, it survives the resets that set need to needNext: need is then taken from a
	// snapshot of L1's positions that may predate the EVICT.
	hold       int64
	caughtUpAt time.Time
}

// watchL2 polls the group's committed offsets until ctx ends.
func (n *Node) watchL2(ctx context.Context) {
	client, done := n.cfg.Kafka.Client(n.cfg.Brokers, 5*time.Second)
	defer done()
	select { // first poll as soon as L1 is positioned
	case <-n.sub.Ready():
	case <-ctx.Done():
		return
	}
	tick := time.NewTicker(n.cfg.L2WatchInterval)
	defer tick.Stop()
	for {
		n.pollL2(ctx, client)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (n *Node) pollL2(ctx context.Context, client *kafka.Client) {
	n.l2mu.Lock()
	gen := n.l2gen // a reset while this poll runs makes its answer worthless
	n.l2mu.Unlock()
	parts := n.sub.Partitions()
	start := time.Now()
	req := &kafka.OffsetFetchRequest{GroupID: n.cfg.GroupID, Topics: map[string][]int{}}
	for _, p := range parts {
		if p.Positioned {
			req.Topics[p.Topic] = append(req.Topics[p.Topic], p.Partition)
		}
	}
	if len(req.Topics) == 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := client.OffsetFetch(pctx, req)
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		n.log.Debug("cannot read the L2 group's offsets", "err", err)
		return
	}
	committed := map[tp]int64{}
	for topic, ps := range resp.Topics {
		for _, p := range ps {
			if p.Error == nil {
				committed[tp{topic, p.Partition}] = p.CommittedOffset
			}
		}
	}
	n.l2mu.Lock()
	defer n.l2mu.Unlock()
	if n.l2gen != gen {
		return
	}
	for _, p := range parts {
		if !p.Positioned {
			continue
		}
		id := tp{p.Topic, p.Partition}
		st, ok := n.l2parts[id]
		if !ok || st.need == needNext {
			st.need = p.Offset
		}
		c, ok := committed[id]
		if !ok {
			continue
		}
		// No commit yet (-1) means nothing applied: the same as a commit at offset 0.
		c = max(c, 0)
		st.committed = c
		if c >= st.need && c >= p.Offset && c >= st.hold {
			st.caughtUpAt = start
		}
		n.l2parts[id] = st
	}
}

// resetL2 is called when L1 is reset for a partition: L2 is not used for it until the group has
// applied everything up to L1's new position. That position is past every EVICT L1 applied
// before the reset (or in a new offset space, if the topic was recreated), so holds are dropped.
func (n *Node) resetL2(topic string, partition int) {
	n.l2mu.Lock()
	n.l2gen++
	n.l2parts[tp{topic, partition}] = l2Part{need: needNext}
	n.l2mu.Unlock()
}

// holdL2 stops L2 use for a partition until the group has committed offset: until it has
// applied an event that L1 has and that Redis must have before it may serve the partition again
// (an EVICT, which leaves a version L1 would accept back from Redis).
func (n *Node) holdL2(topic string, partition int, offset int64) {
	n.l2mu.Lock()
	defer n.l2mu.Unlock()
	id := tp{topic, partition}
	st := n.l2parts[id]
	if st.committed < offset {
		st.hold = max(st.hold, offset)
		st.caughtUpAt = time.Time{}
		n.l2parts[id] = st
	}
}

// newL2Epoch is called when Redis is in a new epoch (it lost what it held, or is another server
// process now). Entries of the old epoch are no longer served by the tier; as after an L1 reset,
// L2 is not used for any partition until the group has applied everything up to L1's position.
func (n *Node) newL2Epoch() {
	n.m.l2Epochs.Inc()
	n.l2mu.Lock()
	n.l2gen++
	for id, st := range n.l2parts {
		n.l2parts[id] = l2Part{need: needNext, hold: st.hold}
	}
	n.l2mu.Unlock()
}

// l2Fresh reports whether L2 may serve key: for every partition that can hold it, the group has
// caught up with L1 within MaxStaleness. L1's memory of recent versions is what keeps a lagging
// L2 from sending a reader back in time, so when L1 forgets a young version (its tombstones
// overflow) or is flushed, L2 is not used until the group has caught up with L1's position then.
func (n *Node) l2Fresh(key string) bool {
	now := time.Now()
	fence := n.l1.Fence()
	n.l2mu.Lock()
	defer n.l2mu.Unlock()
	if fence != n.l2fence {
		n.l2fence = fence
		n.l2gen++
		for id, st := range n.l2parts {
			n.l2parts[id] = l2Part{need: needNext, hold: st.hold}
		}
		return false
	}
	var buf [4]int
	for _, topic := range n.cfg.Topics {
		ps := n.sub.KeyPartitions(topic, key, buf[:0])
		if n.cfg.TopicFormats[topic].Format == invalidation.FormatDebezium {
			// Debezium places records by its own key: the key's change may be on any partition.
			ps = ps[:0]
			for p := range n.sub.NumPartitions(topic) {
				ps = append(ps, p)
			}
		}
		for _, p := range ps {
			st, ok := n.l2parts[tp{topic, p}]
			if !ok || st.caughtUpAt.IsZero() || now.Sub(st.caughtUpAt) > n.cfg.MaxStaleness {
				return false
			}
		}
		if n.sub.NumPartitions(topic) == 0 {
			return false
		}
	}
	return true
}
