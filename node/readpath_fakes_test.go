package node

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

// Fakes for the read-path tests that run in a testing/synctest bubble: no network, every wait a
// channel, so synctest.Wait returns exactly when every request is blocked on a load the test
// holds (or on a shared load).

// gatedOrigin is an origin whose loads the test releases one by one.
type gatedOrigin struct {
	mu      sync.Mutex
	data    map[string]Loaded
	pending []*gatedLoad
	calls   int
	// readAtRelease: a load reads the origin when released, not when it starts.
	readAtRelease bool
	// down: loads fail at once.
	down bool
	// versionless: answers carry no version (the value still names it, for the checks).
	versionless bool
}

type gatedLoad struct {
	key     string
	snap    Loaded
	release chan struct{}
}

func newGatedOrigin() *gatedOrigin { return &gatedOrigin{data: map[string]Loaded{}} }

func (o *gatedOrigin) put(key string, version uint64, value string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.data[key] = Loaded{Value: []byte(value), Version: version, Found: true}
}

func (o *gatedOrigin) del(key string, version uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.data[key] = Loaded{Version: version}
}

func (o *gatedOrigin) state(key string) Loaded {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.data[key]
}

func (o *gatedOrigin) Load(ctx context.Context, key string) (Loaded, error) {
	o.mu.Lock()
	if o.down {
		o.mu.Unlock()
		return Loaded{}, errors.New("origin down (test)")
	}
	l := &gatedLoad{key: key, snap: o.data[key], release: make(chan struct{})}
	o.pending = append(o.pending, l)
	o.calls++
	o.mu.Unlock()
	select {
	case <-l.release:
	case <-ctx.Done():
		return Loaded{}, ctx.Err()
	}
	res := l.snap
	if o.readAtRelease {
		res = o.state(key)
	}
	o.mu.Lock()
	if o.versionless {
		res = Loaded{Value: res.Value, Found: res.Found, Versionless: true}
	}
	o.mu.Unlock()
	return res, nil
}

// releaseAt lets the i-th pending load return.
func (o *gatedOrigin) releaseAt(i int) {
	o.mu.Lock()
	l := o.pending[i]
	o.pending = append(o.pending[:i], o.pending[i+1:]...)
	o.mu.Unlock()
	close(l.release)
}

func (o *gatedOrigin) numPending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending)
}

func (o *gatedOrigin) numCalls() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.calls
}

// memL2 is an in-memory L2 under the tier's rules: invalidation.AcceptFill and Decide, epochs,
// and entries of an older epoch that bound versions but are not served (redistier's tests check
// the Lua script against the same rules).
type memL2 struct {
	mu      sync.Mutex
	gens    int
	epoch   int
	entries map[string]memEntry
	onEpoch func()
	// failFills: fills fail (a Redis blip) instead of being applied.
	failFills bool
}

type memEntry struct {
	gen     int // numbers every write, for leases
	version uint64
	kind    byte // V, N, T
	value   []byte
	epoch   int
	evicted bool // a T written by an EVICT: every fill is refused while it lives (as the script)
	leased  bool // a V or N from a versionless origin (the script's w and u), or a T it left (l)
}

func newMemL2() *memL2 { return &memL2{entries: map[string]memEntry{}} }

func (m *memL2) state(key string) invalidation.State {
	e, ok := m.entries[key]
	if !ok {
		return invalidation.State{}
	}
	// An entry of an older epoch bounds versions but is not held (the script does the same).
	return invalidation.State{Known: true, Version: e.version, Tombstone: e.kind == 'T' || e.epoch != m.epoch}
}

func (m *memL2) Get(_ context.Context, key string) (redistier.Entry, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	switch {
	case !ok:
		return redistier.Entry{}, false, nil
	case e.epoch != m.epoch:
		return redistier.Entry{Version: e.version, OldEpoch: true}, false, nil
	case e.kind == 'T':
		return redistier.Entry{Version: e.version, Tombstone: true}, false, nil
	}
	return redistier.Entry{Version: e.version, Value: e.value, Missing: e.kind == 'N', Leased: e.leased}, true, nil
}

// Peek is Get for inspection: whatever the entry is, found when there is one.
func (m *memL2) Peek(ctx context.Context, key string) (redistier.Entry, bool, error) {
	e, _, err := m.Get(ctx, key)
	m.mu.Lock()
	_, ok := m.entries[key]
	m.mu.Unlock()
	return e, ok && err == nil, err
}

func (m *memL2) BeginFill(context.Context, string) redistier.FillToken {
	m.mu.Lock()
	defer m.mu.Unlock()
	return redistier.FillToken{Epoch: strconv.Itoa(m.epoch)}
}

func (m *memL2) fill(tok redistier.FillToken, key string, version uint64, kind byte, value []byte) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failFills {
		return false, redistier.ErrUnavailable
	}
	if tok.Epoch != strconv.Itoa(m.epoch) {
		return false, redistier.ErrEpochChanged
	}
	if !invalidation.AcceptFill(m.state(key), version) {
		return false, nil
	}
	if e := m.entries[key]; e.kind == 'T' && e.evicted {
		return false, nil
	}
	m.put(key, memEntry{version: version, kind: kind, value: value, epoch: m.epoch})
	return true, nil
}

func (m *memL2) Fill(_ context.Context, tok redistier.FillToken, key string, version uint64, value []byte) (bool, error) {
	return m.fill(tok, key, version, 'V', value)
}

// BeginLease and FillLeased follow the script's "lease" mode: a compare-and-set of the whole
// entry, stored at its version. The script compares the entry's bytes, this fake a number every
// write renews; they differ only when a write puts back the very same bytes (the same data), as
// drops cannot (their nonce).
func (m *memL2) BeginLease(_ context.Context, key string) (redistier.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := redistier.Lease{Epoch: strconv.Itoa(m.epoch), Held: "none"}
	if e, ok := m.entries[key]; ok {
		l.Version, l.Held = e.version, strconv.Itoa(e.gen)
	}
	return l, nil
}

func (m *memL2) FillLeased(_ context.Context, l redistier.Lease, key string, value []byte, missing bool) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failFills {
		return false, redistier.ErrUnavailable
	}
	if l.Epoch != strconv.Itoa(m.epoch) {
		return false, redistier.ErrEpochChanged
	}
	held := "none"
	e, ok := m.entries[key]
	if ok {
		held = strconv.Itoa(e.gen)
	}
	if held != l.Held || (ok && e.kind == 'T' && e.evicted) {
		return false, nil
	}
	kind := byte('V')
	if missing {
		kind, value = 'N', nil
	}
	m.put(key, memEntry{version: l.Version, kind: kind, value: value, epoch: m.epoch, leased: true})
	return true, nil
}

// Drop follows the script's "drop" mode.
func (m *memL2) Drop(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failFills {
		return redistier.ErrUnavailable
	}
	cur, ok := m.entries[key]
	m.put(key, memEntry{version: cur.version, kind: 'T', epoch: m.epoch, leased: true, evicted: ok && cur.kind == 'T' && cur.evicted})
	return nil
}

// put stores e under a new generation.
func (m *memL2) put(key string, e memEntry) {
	m.gens++
	e.gen = m.gens
	m.entries[key] = e
}

func (m *memL2) FillMissing(_ context.Context, tok redistier.FillToken, key string, version uint64) (bool, error) {
	return m.fill(tok, key, version, 'N', nil)
}

func (m *memL2) Apply(_ context.Context, e *invalidation.Event, p invalidation.Policy) (invalidation.Action, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state(e.Key)
	if e.Op == invalidation.OpEvict {
		// As the script: a value of any epoch becomes a tombstone at its own version, and the
		// marked tombstone is written whatever was there (at version 0 over nothing).
		cur, ok := m.entries[e.Key]
		m.put(e.Key, memEntry{version: cur.version, kind: 'T', epoch: m.epoch, evicted: true, leased: cur.leased})
		if ok && cur.kind != 'T' {
			return invalidation.Evict, nil
		}
		return invalidation.Ignore, nil
	}
	a := invalidation.Decide(st, e, p)
	cur, ok := m.entries[e.Key]
	leased := ok && cur.leased
	if leased && a == invalidation.Refresh {
		a = invalidation.Evict // as the script: the event's value may be older
	}
	switch {
	case a == invalidation.Evict:
		m.put(e.Key, memEntry{version: e.Version, kind: 'T', epoch: m.epoch, leased: leased})
	case a == invalidation.Refresh:
		m.put(e.Key, memEntry{version: e.Version, kind: 'V', value: e.Value, epoch: m.epoch})
	}
	return a, nil
}

func (m *memL2) ApplyBatch(ctx context.Context, events []invalidation.Event, p invalidation.Policy) (applied, ignored int, err error) {
	for i := range events {
		if a, _ := m.Apply(ctx, &events[i], p); a == invalidation.Ignore {
			ignored++
		} else {
			applied++
		}
	}
	return applied, ignored, nil
}

// wipe is a Redis restart without persistence, or FLUSHALL: everything is lost, a new epoch begins.
func (m *memL2) wipe() {
	m.mu.Lock()
	m.entries = map[string]memEntry{}
	m.epoch++
	m.mu.Unlock()
	if m.onEpoch != nil {
		m.onEpoch()
	}
}

// failover is a promotion of a replica that missed the newest writes: entries stay (some older
// than what was written), a new epoch begins.
func (m *memL2) failover(rollback map[string]memEntry) {
	m.mu.Lock()
	for k, e := range rollback {
		m.put(k, e)
	}
	m.epoch++
	m.mu.Unlock()
	if m.onEpoch != nil {
		m.onEpoch()
	}
}

func (m *memL2) Stats() redistier.Stats { return redistier.Stats{} }
func (m *memL2) Close() error           { return nil }

// bareNode is a node with no Kafka or Redis: its L2 is a memL2, it is ready, and the test decides
// its freshness. It must be built inside the synctest bubble.
type bareNode struct {
	*Node
	origin *gatedOrigin
	l2     *memL2
	// trusted decides whether L2 may serve (the node's L2 gating); nil: always.
	trusted func(key string) bool
	fresh   bool
}

func newBareNode(t *testing.T, l1 lru.Config) *bareNode {
	t.Helper()
	b := &bareNode{origin: newGatedOrigin(), l2: newMemL2(), fresh: true}
	n, err := New(Config{
		NodeID: "bare", GRPCAddr: "127.0.0.1:0", HTTPAddr: "-",
		Brokers: []string{"127.0.0.1:1"}, Topics: []string{"t"},
		Loader: b.origin, L1: l1,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Node = n
	n.l2 = b.l2
	n.ready.Store(true)
	n.freshAt = func(string) time.Time {
		if b.fresh {
			return time.Now()
		}
		return time.Time{}
	}
	n.l2Trusted = func(key string) bool { return b.trusted == nil || b.trusted(key) }
	t.Cleanup(func() { _ = n.Close() })
	return b
}

// applyL1 applies events to L1 as the node's subscriber does.
func (b *bareNode) applyL1(events ...invalidation.Event) { b.applyEvents("t", 0, events) }

// result of one Get.
type result struct {
	r   loaded
	err error
}

func (res result) String() string {
	if res.err != nil {
		return "error: " + res.err.Error()
	}
	s := "not found"
	if res.r.found {
		s = "found"
	}
	return s + "@" + strconv.FormatUint(res.r.version, 10) + " from " + res.r.tier.String()
}

// startGet runs a Get in the background; the channel receives its result.
func (b *bareNode) startGet(key string, minVersion uint64) chan result {
	ch := make(chan result, 1)
	go func() {
		r, err := b.get(context.Background(), key, minVersion)
		ch <- result{r, err}
	}()
	return ch
}

func recv(t *testing.T, ch chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatal("the request has not finished: it waits on something the test does not release")
		return result{}
	}
}

func isBehind(err error) bool { return errors.Is(err, errOriginBehind) }

var _ = pb.Tier_TIER_ORIGIN
