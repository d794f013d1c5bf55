package client

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cachewire/cachewire/internal/retry"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TierNear is the Tier of an answer from the near cache in this process (WithNearCache).
const TierNear Tier = "NEAR"

// NearCacheConfig configures the near cache (WithNearCache). The zero value is usable: every
// field documents its default.
type NearCacheConfig struct {
	// MaxEntries bounds the values held. If zero, it defaults to 10,000.
	MaxEntries int
	// MaxBytes bounds the bytes held, counting key, value and about 200 bytes of overhead per
	// entry. If zero, it defaults to 64 MiB. Both bounds are split evenly over the near cache's
	// shards (up to 16, one per 64 entries), so a value larger than MaxBytes divided by the
	// shards is not kept.
	MaxBytes int64
	// TTL is a safety net: a value is dropped this long after it was stored even if no event
	// evicted it. If zero, it defaults to 10 minutes.
	TTL time.Duration
	// Logger receives a line when the stream breaks and when it is resynchronized. If nil, it
	// defaults to slog.Default().
	Logger *slog.Logger
}

// WithNearCache keeps hot entries in this process, kept coherent by the node: the client opens
// the node's Watch stream, applies every event the node applies, and answers a Get in process
// when it holds a version at least the read's MinVersion and the key's partition was caught
// up within the node's max_staleness. Otherwise the Get goes to the node, and its answer fills
// the near cache under the same version rules as the node's L1. A broken stream or a gap in it
// means no near-cache answers until the client has resubscribed and flushed. See
// docs/near-cache.md. Close stops the stream.
//
// A value answered from the near cache (Tier TierNear) is shared with it: callers must not
// modify Item.Value.
func WithNearCache(cfg NearCacheConfig) Option {
	return func(o *options) { o.near = &cfg }
}

// NearStats are a near cache's counters.
type NearStats struct {
	// Hits counts Gets answered in process; Misses counts Gets sent to the node (the near cache
	// held no version new enough, could not vouch for the key's freshness, or was not in sync).
	Hits, Misses uint64
	// Fills counts node answers stored; StaleFillsRejected counts answers refused by the version
	// rule or because the stream changed while they were read.
	Fills, StaleFillsRejected uint64
	// Evictions counts values that left the near cache, by reason (event, capacity, expired,
	// flush, ...).
	Evictions map[string]uint64
	// Resyncs counts streams opened and synchronized after the first; Breaks counts streams that
	// ended (the node restarted or drained, cut the watcher off, the network failed); Gaps
	// counts sequence gaps, each of which broke its stream.
	Resyncs, Breaks, Gaps uint64
	// Messages counts stream messages applied (start, events, heartbeats, resets).
	Messages uint64
	Entries  int
	Bytes    int64
	// Synced is true while the stream is up and synchronized: only then are Gets answered in
	// process.
	Synced bool
}

// nearCache is the client's near cache: lru.Cache shards fed by the node's Watch stream.
type nearCache struct {
	shards []nearShard // a power of two of them, so that hits on different keys seldom contend
	seed   maphash.Seed
	api    pb.CacheServiceClient
	log    *slog.Logger
	base   time.Time // freshness is kept in monotonic nanoseconds since base

	synced atomic.Bool
	gen    atomic.Uint64 // grows whenever the stream breaks or is resynchronized
	view   atomic.Pointer[nearView]

	misses, old, fills, rejected    atomic.Uint64 // old: held, but below min_version (lru counted a hit)
	resyncs, breaks, gaps, messages atomic.Uint64
	starts                          uint64 // streams synchronized; owned by run

	applied func(seq uint64) // for tests: after each message is applied; nil otherwise

	cancel context.CancelFunc
	done   chan struct{}
}

// nearShard is one lock's worth of the near cache. Its lru.Cache counts the hits (under the lock
// it takes anyway), so a hit writes to no memory another shard's hit reads.
type nearShard struct{ l *lru.Cache }

// nearView is what one stream said about the node: its bound and each partition's freshness.
type nearView struct {
	maxStale int64 // nanoseconds
	topics   []nearTopic
	index    map[string]int
	// offset turns the node's monotonic clock (uptime) into this client's (nanoseconds since
	// base): the least, over the stream's messages, of arrival here minus uptime, which is the
	// true offset plus the quickest message's transit. A message that waited on its way gives a
	// larger one, and does not count. Zero until a message carried uptime; only the stream's
	// goroutine reads and writes it.
	offset    int64
	hasOffset bool
}

type nearTopic struct {
	any   bool           // a key may be on any partition (Debezium)
	fresh []atomic.Int64 // per partition: caught up as of (nanoseconds since base); 0: never
	// counts are the partition counts a key's events may be placed under (WatchTopic's
	// partition_counts, or its partitions alone): the key is as fresh as the stalest of its
	// partitions under each.
	counts []int
}

func newNearCache(cfg NearCacheConfig, api pb.CacheServiceClient, applied func(uint64)) (*nearCache, error) {
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = 10_000
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 64 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxEntries < 0 || cfg.MaxBytes < 0 || cfg.TTL < 0 {
		return nil, errors.New("client: near cache: MaxEntries, MaxBytes and TTL must not be negative")
	}
	n := 1 << (bits.Len(uint(min(max(cfg.MaxEntries/64, 1), 16))) - 1) // a power of two, 1 to 16
	shards := make([]nearShard, n)
	for i := range shards {
		l, err := lru.New(lru.Config{MaxEntries: (cfg.MaxEntries + n - 1) / n, MaxBytes: (cfg.MaxBytes + int64(n) - 1) / int64(n), TTL: cfg.TTL})
		if err != nil {
			return nil, fmt.Errorf("client: near cache: %w", err)
		}
		shards[i].l = l
	}
	nc := &nearCache{shards: shards, seed: maphash.MakeSeed(), api: api, log: cfg.Logger.With("component", "cachewire near cache"), base: time.Now().Add(-nearEpoch), done: make(chan struct{}), applied: applied}
	return nc, nil
}

// open starts the goroutine that keeps the Watch stream open; close stops it and waits.
func (nc *nearCache) open() {
	var ctx context.Context
	ctx, nc.cancel = context.WithCancel(context.Background())
	go nc.run(ctx)
}

func (nc *nearCache) close() {
	if nc.cancel != nil {
		nc.cancel()
		<-nc.done
	}
}

// nearEpoch sets base this far in the past, so that a caught-up time from before the near cache
// started is still a positive offset from it (0 means never).
const nearEpoch = 365 * 24 * time.Hour

func (nc *nearCache) now() int64 { return int64(time.Since(nc.base)) }

func (nc *nearCache) shard(key string) *nearShard {
	return &nc.shards[maphash.String(nc.seed, key)&uint64(len(nc.shards)-1)]
}

func (nc *nearCache) flush() {
	for i := range nc.shards {
		nc.shards[i].l.Flush()
	}
}

// freshAsOf returns when the key's partitions were last caught up (as nanoseconds since base),
// or 0 when one never was: the oldest over the node's topics.
func (v *nearView) freshAsOf(key string) int64 {
	oldest := int64(0)
	for i := range v.topics {
		t := &v.topics[i]
		if len(t.fresh) == 0 {
			return 0
		}
		if t.any {
			for p := range t.fresh {
				f := t.fresh[p].Load()
				if f == 0 {
					return 0
				}
				if oldest == 0 || f < oldest {
					oldest = f
				}
			}
			continue
		}
		for _, c := range t.counts {
			f := t.fresh[invalidation.PartitionFor(key, c)].Load()
			if f == 0 {
				return 0
			}
			if oldest == 0 || f < oldest {
				oldest = f
			}
		}
	}
	return oldest
}

// get answers key in process when it may: synchronized, the key's partitions fresh within the
// node's bound, and a version at least minVersion held. It allocates nothing.
func (nc *nearCache) get(key string, minVersion uint64) (Item, bool) {
	v := nc.view.Load()
	if !nc.synced.Load() || v == nil {
		nc.misses.Add(1)
		return Item{}, false
	}
	fresh := v.freshAsOf(key)
	t := time.Now() // the one clock read of a hit
	if fresh == 0 || int64(t.Sub(nc.base))-fresh > v.maxStale {
		nc.misses.Add(1)
		return Item{}, false
	}
	sh := nc.shard(key)
	it, ok := sh.l.GetSampled(key, t)
	if !ok || it.Version < minVersion {
		if ok {
			nc.old.Add(1)
		}
		nc.misses.Add(1)
		return Item{}, false
	}
	return Item{Key: key, Value: it.Value, Version: it.Version, Found: !it.Missing, Tier: TierNear,
		FreshAsOf: nc.base.Add(time.Duration(fresh))}, true
}

// fillTicket is taken before a Get goes to the node: its answer may fill the near cache only if
// the stream it was taken under is still the one in sync.
type fillTicket struct {
	tok lru.FillToken
	gen uint64
	ok  bool
}

func (nc *nearCache) begin(key string) fillTicket {
	gen := nc.gen.Load()
	if !nc.synced.Load() {
		return fillTicket{}
	}
	return fillTicket{tok: nc.shard(key).l.BeginFill(), gen: gen, ok: true}
}

// fill stores the node's answer r, read under t, under L1's rules: not a stale answer, not a
// cache-aside miss, not older than a version the near cache has seen, and not when the stream
// broke or was resynchronized since t.
func (nc *nearCache) fill(t fillTicket, r *pb.GetResponse) {
	if !t.ok || r.GetFreshness().GetStale() || r.GetVersionless() || (!r.GetFound() && r.GetTier() == pb.Tier_TIER_UNSPECIFIED) {
		return // the node could not vouch for it; an origin without versions; not cached
	}
	if nc.gen.Load() != t.gen || !nc.synced.Load() {
		nc.rejected.Add(1)
		return
	}
	var ok bool
	l := nc.shard(r.GetKey()).l
	if r.GetFound() {
		value := r.GetValue()
		if value == nil {
			value = []byte{}
		}
		ok = l.Fill(r.GetKey(), r.GetVersion(), value, t.tok)
	} else {
		ok = l.FillMissing(r.GetKey(), r.GetVersion(), t.tok)
	}
	if ok {
		nc.fills.Add(1)
	} else {
		nc.rejected.Add(1)
	}
}

// apply applies an event this client published through the node (Invalidate, Evict), so that
// its own next read sees it before the stream brings it.
func (nc *nearCache) apply(e invalidation.Event) {
	nc.shard(e.Key).l.Apply(&e, invalidation.RefreshHeld)
}

func (nc *nearCache) stats() NearStats {
	st := NearStats{Misses: nc.misses.Load(), Fills: nc.fills.Load(), StaleFillsRejected: nc.rejected.Load(),
		Evictions: map[string]uint64{}, Resyncs: nc.resyncs.Load(), Breaks: nc.breaks.Load(), Gaps: nc.gaps.Load(),
		Messages: nc.messages.Load(), Synced: nc.synced.Load()}
	for i := range nc.shards {
		ls := nc.shards[i].l.Stats()
		st.Hits += ls.Hits
		st.Entries += ls.Entries
		st.Bytes += ls.Bytes
		for why, n := range ls.Evictions {
			st.Evictions[why] += n
		}
	}
	st.Hits -= min(nc.old.Load(), st.Hits) // lru counted them as hits; they went to the node
	return st
}

// unsync stops answering in process until the next stream is synchronized.
func (nc *nearCache) unsync() {
	nc.synced.Store(false)
	nc.gen.Add(1)
}

// errGap is a stream that skipped a sequence number.
var errGap = errors.New("client: near cache: gap in the Watch stream")

// run keeps a Watch stream open, resubscribing with back-off whenever it breaks, until close.
func (nc *nearCache) run(ctx context.Context) {
	defer close(nc.done)
	b := retry.NewBackoff(50*time.Millisecond, 2*time.Second)
	for {
		synced, err := nc.watch(ctx)
		nc.unsync()
		if ctx.Err() != nil {
			return
		}
		nc.breaks.Add(1)
		if synced {
			b.Reset()
			nc.log.Warn("Watch stream broke; answering from the node until it is resynchronized", "err", err)
		} else {
			nc.log.Debug("cannot open the Watch stream; retrying", "err", err)
		}
		if !retry.Sleep(ctx, b.Next()) {
			return
		}
	}
}

// watch runs one Watch stream until it breaks, and reports whether it got synchronized.
func (nc *nearCache) watch(ctx context.Context) (synced bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// One message holds at most about 1 MiB of values, or one event: as large as the node's
	// --max-value-bytes allows.
	stream, err := nc.api.Watch(ctx, &pb.WatchRequest{}, grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		return false, err
	}
	var last uint64
	var events []invalidation.Event
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return synced, errors.New("client: near cache: the node ended the Watch stream")
		}
		if err != nil {
			return synced, wrap("Watch", err)
		}
		at := nc.now()
		if m.GetSeq() != last+1 {
			nc.gaps.Add(1)
			return synced, fmt.Errorf("%w: message %d after %d", errGap, m.GetSeq(), last)
		}
		last = m.GetSeq()
		if _, isStart := m.GetBody().(*pb.WatchResponse_Start); isStart != (last == 1) {
			return synced, fmt.Errorf("client: near cache: message %d of the Watch stream: start must come first, and only first", last)
		}
		switch b := m.GetBody().(type) {
		case *pb.WatchResponse_Start:
			err = nc.start(b.Start, at)
			synced = err == nil
		case *pb.WatchResponse_Heartbeat:
			err = nc.heartbeat(nc.view.Load(), b.Heartbeat.GetNow().AsTime(), b.Heartbeat.GetUptime(), b.Heartbeat.GetPositions(), at)
		case *pb.WatchResponse_Events:
			events, err = nc.events(events[:0], b.Events)
		case *pb.WatchResponse_Reset_:
			nc.log.Warn("the node flushed L1 after a gap in its event stream; flushing the near cache", "topic", b.Reset_.GetTopic(),
				"partition", b.Reset_.GetPartition(), "reason", b.Reset_.GetReason())
			nc.flush()
			nc.gen.Add(1)
		default:
			err = fmt.Errorf("client: near cache: message %d of the Watch stream has no body this client knows", last)
		}
		if err != nil {
			return synced, err
		}
		nc.messages.Add(1)
		if nc.applied != nil {
			nc.applied(last)
		}
	}
}

// start synchronizes with a new stream: flush (so that no entry, and no fill begun, from before
// the stream remains: events the node applied meanwhile were never seen here), then take the
// node's view, then answer in process again.
func (nc *nearCache) start(s *pb.WatchStart, at int64) error {
	v := &nearView{maxStale: int64(s.GetMaxStaleness().AsDuration()), index: map[string]int{}}
	for _, t := range s.GetTopics() {
		if t.GetPartitions() < 0 || t.GetPartitions() > 1<<20 {
			return fmt.Errorf("client: near cache: topic %q has %d partitions", t.GetTopic(), t.GetPartitions())
		}
		nt := nearTopic{any: t.GetAnyPartition(), fresh: make([]atomic.Int64, t.GetPartitions())}
		for _, c := range t.GetPartitionCounts() {
			if c <= 0 || c > t.GetPartitions() {
				return fmt.Errorf("client: near cache: topic %q has partition count %d in its history, %d partitions now", t.GetTopic(), c, t.GetPartitions())
			}
			nt.counts = append(nt.counts, int(c))
		}
		if len(nt.counts) == 0 && t.GetPartitions() > 0 {
			nt.counts = []int{int(t.GetPartitions())}
		}
		v.index[t.GetTopic()] = len(v.topics)
		v.topics = append(v.topics, nt)
	}
	if v.maxStale <= 0 {
		return errors.New("client: near cache: the node's max_staleness is not positive")
	}
	nc.flush()
	nc.gen.Add(1)
	if err := nc.heartbeat(v, s.GetNow().AsTime(), s.GetUptime(), s.GetPositions(), at); err != nil {
		return err
	}
	nc.view.Store(v)
	nc.synced.Store(true)
	if nc.starts++; nc.starts > 1 {
		nc.resyncs.Add(1)
		nc.log.Info("Watch stream resynchronized: near cache flushed and answering again", "node", s.GetNodeId())
	}
	return nil
}

// heartbeat records each partition's freshness. A node sends its monotonic clock (uptime) and
// each partition's age on it (caught_up_age): the partition was caught up at uptime - age on the
// node's clock, which the offset turns into this client's, so that neither a step of either wall
// clock, nor skew, nor a message that waited on its way (in the node's queue, in flow control)
// makes it look fresher than it is. From a node that sends no uptime, the age (caught_up_age, or
// now - caught_up_at on the node's wall clock) is counted back from the message's arrival (at).
func (nc *nearCache) heartbeat(v *nearView, now time.Time, uptime *durationpb.Duration, positions []*pb.WatchPosition, at int64) error {
	if uptime != nil {
		if off := at - int64(uptime.AsDuration()); !v.hasOffset || off < v.offset {
			v.offset, v.hasOffset = off, true
		}
	}
	for _, p := range positions {
		i, ok := v.index[p.GetTopic()]
		if !ok {
			continue // a topic this stream did not announce: nothing reads it
		}
		t := &v.topics[i]
		if p.GetPartition() < 0 || int(p.GetPartition()) >= len(t.fresh) {
			// The topic grew: keys moved partitions. Resynchronize with the node's new view.
			return fmt.Errorf("client: near cache: topic %q has partition %d, the stream started with %d", p.GetTopic(), p.GetPartition(), len(t.fresh))
		}
		if p.GetCaughtUpAt() == nil {
			continue
		}
		age := now.Sub(p.GetCaughtUpAt().AsTime())
		if p.GetCaughtUpAge() != nil {
			age = p.GetCaughtUpAge().AsDuration()
		}
		age = max(age, 0)
		fresh := at - int64(age)
		if uptime != nil && p.GetCaughtUpAge() != nil {
			fresh = min(fresh, int64(uptime.AsDuration()-age)+v.offset)
		}
		fresh = max(fresh, 1)
		if f := &t.fresh[p.GetPartition()]; fresh > f.Load() {
			f.Store(fresh) // only this goroutine stores
		}
	}
	return nil
}

// events applies one partition's events as L1 does.
func (nc *nearCache) events(buf []invalidation.Event, we *pb.WatchEvents) ([]invalidation.Event, error) {
	for _, e := range we.GetEvents() {
		ev := invalidation.Event{Key: e.GetKey(), Version: e.GetVersion(), Op: invalidation.Op(e.GetOp()), Value: e.Value, HasValue: e.Value != nil}
		if err := (invalidation.Limits{MaxKeyBytes: 1 << 20, MaxValueBytes: 1 << 30}).Validate(&ev); err != nil {
			return buf, fmt.Errorf("client: near cache: event on %s/%d: %w", we.GetTopic(), we.GetPartition(), err)
		}
		buf = append(buf, ev)
	}
	for i := range buf {
		nc.shard(buf[i].Key).l.Apply(&buf[i], invalidation.RefreshHeld)
	}
	return buf, nil
}
