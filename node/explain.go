package node

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// recentSlots is how many keys one partition's table of recent events remembers.
const recentSlots = 256

// recentEvent is the last event L1 applied for one key, as Explain reports it.
type recentEvent struct {
	key         string
	offset      int64
	version     uint64
	op          invalidation.Op
	source      string
	committedAt time.Time
	traceparent string
	appliedAt   time.Time
}

// recentTable is one partition's direct-mapped table of recent events: a key's slot is its
// hash, and a later key with the same slot takes it. Memory is bounded (recentSlots entries per
// partition) and the apply path pays one hash and one copy per event, under a lock that only
// the partition's goroutine and Explain take.
type recentTable struct {
	mu    sync.Mutex
	slots [recentSlots]recentEvent
}

// recent holds the tables of every partition the node's L1 reads.
type recent struct {
	seed   maphash.Seed
	mu     sync.RWMutex
	tables map[tp]*recentTable
}

func newRecent() *recent { return &recent{seed: maphash.MakeSeed(), tables: map[tp]*recentTable{}} }

func (r *recent) table(topic string, partition int, create bool) *recentTable {
	k := tp{topic, partition}
	r.mu.RLock()
	t := r.tables[k]
	r.mu.RUnlock()
	if t != nil || !create {
		return t
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t = r.tables[k]; t == nil {
		t = new(recentTable)
		r.tables[k] = t
	}
	return t
}

// record remembers events (one partition's batch, in offset order) as applied at now.
func (r *recent) record(topic string, partition int, events []invalidation.Event, now time.Time) {
	t := r.table(topic, partition, true)
	t.mu.Lock()
	for i := range events {
		e := &events[i]
		t.slots[hashSlot(r, e.Key)] = recentEvent{key: e.Key, offset: e.Offset, version: e.Version, op: e.Op,
			source: e.Source, committedAt: e.CommittedAt, traceparent: e.Trace["traceparent"], appliedAt: now}
	}
	t.mu.Unlock()
}

// hashSlot is key's slot in r's tables.
func hashSlot(r *recent, key string) uint64 { return maphash.String(r.seed, key) % recentSlots }

// last returns the last event recorded for key on the partition, if its slot still holds it.
func (r *recent) last(topic string, partition int, key string) (recentEvent, bool) {
	t := r.table(topic, partition, false)
	if t == nil {
		return recentEvent{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.slots[hashSlot(r, key)]
	return e, e.key == key && !e.appliedAt.IsZero()
}

// keyPartitions returns, per topic, the partitions that can hold key (see freshAsOf).
func (n *Node) keyPartitions(key string) []tp {
	var out []tp
	var buf [4]int
	for _, topic := range n.cfg.Topics {
		ps := n.sub.KeyPartitions(topic, key, buf[:0])
		if n.cfg.TopicFormats[topic].Format == invalidation.FormatDebezium {
			ps = ps[:0]
			for p := range n.sub.NumPartitions(topic) {
				ps = append(ps, p)
			}
		}
		for _, p := range ps {
			out = append(out, tp{topic, p})
		}
	}
	return out
}

// Explain reports what the node knows about one key (see CacheService.Explain).
func (s *service) Explain(ctx context.Context, req *pb.ExplainRequest) (*pb.ExplainResponse, error) {
	n := s.n
	key := req.GetKey()
	if err := n.checkKey(key); err != nil {
		return nil, toStatus(err)
	}
	now := time.Now()
	resp := &pb.ExplainResponse{NodeId: n.cfg.NodeID, Key: key, Ready: n.Ready(), Now: timestamppb.New(now),
		MaxStaleness: durationpb.New(n.cfg.MaxStaleness)}
	asOf := n.freshAt(key)
	if !asOf.IsZero() {
		resp.FreshAsOf = timestamppb.New(asOf)
	}
	var stalest *pb.PartitionFreshness
	n.l2mu.Lock()
	for _, p := range n.keyPartitions(key) {
		st, _ := n.sub.Partition(p.topic, p.partition)
		pf := partitionFreshness(st, p)
		if l2, ok := n.l2parts[p]; ok {
			pf.L2CommittedOffset = l2.committed
			if !l2.caughtUpAt.IsZero() {
				pf.L2CaughtUpAt = timestamppb.New(l2.caughtUpAt)
			}
		}
		// The stalest partition: one never caught up, else the one caught up longest ago.
		if stalest == nil || (stalest.GetCaughtUpAt() != nil && (st.CaughtUpAt.IsZero() || st.CaughtUpAt.Before(stalest.GetCaughtUpAt().AsTime()))) {
			stalest = pf
		}
		resp.Partitions = append(resp.Partitions, pf)
	}
	n.l2mu.Unlock()
	resp.Vouching, resp.NotVouching = n.vouching(resp.Ready, asOf, now, stalest)

	it, hasValue, st := n.l1.Peek(key)
	resp.L1 = &pb.TierEntry{Present: st.Known, Version: st.Version, Tombstone: st.Tombstone}
	if hasValue {
		resp.L1.Missing, resp.L1.Leased, resp.L1.ValueBytes = it.Missing, it.Leased, uint32(len(it.Value))
	}
	if n.l2 != nil {
		resp.L2 = n.peekL2(ctx, key)
		// As fromL2: the L2 group caught up, and no version this node served is missing there.
		resp.L2Trusted = resp.Vouching && n.l2Trusted(key) && !n.gaps.blocks(key)
	}
	for _, p := range n.keyPartitions(key) {
		e, ok := n.recent.last(p.topic, p.partition, key)
		if !ok || (resp.LastEvent != nil && !e.appliedAt.After(resp.LastEvent.GetAppliedAt().AsTime())) {
			continue
		}
		resp.LastEvent = &pb.AppliedEvent{Topic: p.topic, Partition: int32(p.partition), Offset: e.offset, Version: e.version,
			Op: pb.Op(e.op), Source: e.source, TraceId: traceID(e.traceparent), AppliedAt: timestamppb.New(e.appliedAt)}
		if !e.committedAt.IsZero() {
			resp.LastEvent.CommittedAt = timestamppb.New(e.committedAt)
		}
	}
	if req.GetOrigin() {
		resp.Origin = n.explainOrigin(ctx, key)
	}
	return resp, nil
}

// partitionFreshness is the PartitionFreshness of one partition's subscriber state.
func partitionFreshness(st invalidation.PartitionState, p tp) *pb.PartitionFreshness {
	pf := &pb.PartitionFreshness{Topic: p.topic, Partition: int32(p.partition), Offset: st.Offset, HighWatermark: st.HighWatermark,
		LastError: st.LastError}
	if !st.CaughtUpAt.IsZero() {
		pf.CaughtUpAt = timestamppb.New(st.CaughtUpAt)
	}
	if !st.LastErrorAt.IsZero() {
		pf.LastErrorAt = timestamppb.New(st.LastErrorAt)
	}
	return pf
}

// vouching says whether the node serves a key from its tiers, and if not, why: stalest is the
// partition of the key that was caught up longest ago (or never).
func (n *Node) vouching(ready bool, asOf, now time.Time, stalest *pb.PartitionFreshness) (bool, string) {
	switch {
	case n.closed.Load():
		return false, "the node is shutting down"
	case !ready:
		return false, "the node is not ready: it has not positioned its subscriber on every partition yet"
	case asOf.IsZero() && stalest == nil:
		return false, "the node does not know the key's partitions yet (no topic metadata)"
	}
	age := now.Sub(asOf)
	if !asOf.IsZero() && age <= n.cfg.MaxStaleness {
		return true, ""
	}
	beyond := fmt.Sprintf(", beyond max staleness %s", n.cfg.MaxStaleness)
	var why string
	partStale := stalest != nil && (stalest.GetCaughtUpAt() == nil || now.Sub(stalest.GetCaughtUpAt().AsTime()) > n.cfg.MaxStaleness)
	if partStale {
		part := fmt.Sprintf("%s/%d", stalest.GetTopic(), stalest.GetPartition())
		if stalest.GetCaughtUpAt() == nil {
			why = "partition " + part + " was never caught up with its log end"
		} else {
			why = fmt.Sprintf("partition %s was last caught up with its log end %s ago", part, now.Sub(stalest.GetCaughtUpAt().AsTime()).Round(time.Millisecond)) + beyond
		}
		if behind := stalest.GetHighWatermark() - stalest.GetOffset(); behind > 0 {
			why += fmt.Sprintf(" (%d record(s) behind the last known log end)", behind)
		}
		if e := stalest.GetLastError(); e != "" {
			why += "; last Kafka error: " + e
		} else if e := n.sub.MetadataError(); e != "" {
			why += "; last Kafka error: " + e
		}
	} else {
		// Every partition is fresh: the bound is the topic metadata (a partition added since it
		// was read would not be read yet).
		why = fmt.Sprintf("the topic metadata (which partitions exist) was last read %s ago", age.Round(time.Millisecond)) + beyond
		if e := n.sub.MetadataError(); e != "" {
			why += "; last Kafka error: " + e
		}
	}
	return false, why + "; reads of the key go to the origin (or answer stale=true without one)"
}

// peekL2 reads what Redis holds for key, bounded by the loader timeout.
func (n *Node) peekL2(ctx context.Context, key string) *pb.TierEntry {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.LoaderTimeout)
	defer cancel()
	e, found, err := n.l2.Peek(ctx, key)
	if err != nil {
		return &pb.TierEntry{Error: err.Error()}
	}
	if !found {
		return &pb.TierEntry{}
	}
	return &pb.TierEntry{Present: true, Version: e.Version, Tombstone: e.Tombstone, Missing: e.Missing, Leased: e.Leased,
		OldEpoch: e.OldEpoch, ValueBytes: uint32(len(e.Value))}
}

// explainOrigin reads key from the origin for Explain, storing the answer nowhere.
func (n *Node) explainOrigin(ctx context.Context, key string) *pb.OriginVersion {
	if n.cfg.Loader == nil {
		return &pb.OriginVersion{Error: "the node has no origin (cache-aside)"}
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.LoaderTimeout)
	defer cancel()
	res, err := n.cfg.Loader.Load(ctx, key)
	if err != nil {
		return &pb.OriginVersion{Error: err.Error()}
	}
	return &pb.OriginVersion{Found: res.Found, Version: res.Version, Versionless: res.Versionless}
}

// traceID returns the trace id of a W3C traceparent ("00-TRACEID-SPANID-FLAGS"), or "" when tp
// is not one.
func traceID(tp string) string {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' {
		return ""
	}
	id := tp[3:35]
	for i := range len(id) {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "" // not lower-case hex: not a W3C trace id (and maybe not UTF-8)
		}
	}
	return id
}
