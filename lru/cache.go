package lru

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cachewire/cachewire/invalidation"
)

// Config configures a Cache. The zero value is usable: every field documents its default.
type Config struct {
	// MaxEntries bounds the number of values held. If zero, it defaults to 100,000.
	MaxEntries int
	// MaxBytes bounds the bytes held by values, counting key, value and EntryOverhead per entry.
	// If zero, it defaults to 256 MiB.
	MaxBytes int64
	// TTL is a safety net: a value is dropped this long after it was stored even if no event
	// evicted it. If zero, it defaults to 10 minutes.
	TTL time.Duration
	// TTLJitter spreads expiries by up to this fraction of TTL either way, so entries filled
	// together do not expire together. If zero, it defaults to 0.1; negative disables jitter.
	TTLJitter float64
	// NegativeTTL is how long a "not found" answer from the origin is cached. If zero, it
	// defaults to 5 seconds.
	NegativeTTL time.Duration
	// MaxTombstones bounds the number of tombstones held. If zero, it defaults to MaxEntries.
	MaxTombstones int
	// TombstoneTTL is how long a tombstone is kept, and how long a version the tier learned
	// counts as young: forgetting a young version (the tombstone LRU is full) raises the fence
	// (see BeginFill). A tombstone expires after TombstoneTTL, and then the tier no longer knows
	// the key: a mistaken version stops blocking fills, but a load that took longer than
	// TombstoneTTL could fill an older value. It must be longer than the longest origin load.
	// If zero, it defaults to 30 seconds.
	TombstoneTTL time.Duration
	// Now returns the current time. If nil, it defaults to time.Now. For tests.
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.MaxEntries == 0 {
		c.MaxEntries = 100_000
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 256 << 20
	}
	if c.TTL == 0 {
		c.TTL = 10 * time.Minute
	}
	if c.TTLJitter == 0 {
		c.TTLJitter = 0.1
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = 5 * time.Second
	}
	if c.MaxTombstones == 0 {
		c.MaxTombstones = c.MaxEntries
	}
	if c.TombstoneTTL == 0 {
		c.TombstoneTTL = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.MaxEntries < 0:
		return fmt.Errorf("lru: MaxEntries is %d, want > 0", c.MaxEntries)
	case c.MaxBytes < 0:
		return fmt.Errorf("lru: MaxBytes is %d, want > 0", c.MaxBytes)
	case c.TTL < 0 || c.NegativeTTL < 0 || c.TombstoneTTL < 0:
		return errors.New("lru: TTL, NegativeTTL and TombstoneTTL must not be negative")
	case c.TTLJitter >= 1:
		return fmt.Errorf("lru: TTLJitter is %v, want less than 1", c.TTLJitter)
	case c.MaxTombstones < 0:
		return fmt.Errorf("lru: MaxTombstones is %d, want > 0", c.MaxTombstones)
	}
	return nil
}

// Item is a cached value and the version it was written at.
type Item struct {
	// Value is shared with the cache: callers must not modify it.
	Value []byte
	// Version is the version of Value.
	Version uint64
	// Missing is true for a cached "not found" from the origin (Value is nil; Version is the
	// deletion's version, or 0 for a key never written).
	Missing bool
	// Leased is true for an answer from a versionless origin, stored under a lease at the
	// version the tier knew (FillLeased, FillVersionless).
	Leased bool
}

// FillToken is taken before a load begins (BeginFill) and handed to Fill, which rejects the fill
// if the tier forgot a young version, or was flushed, in between, or if an EVICT of the key was
// applied in between (the load may carry the value it dropped).
type FillToken struct{ fence, evicts, gens uint64 }

// Lease is what the tier held for a key when a load from a versionless origin began (Meta's
// leases): an origin that cannot say which version it returned. Taken before the origin is read,
// it lets FillLeased store the answer only if nothing about the key changed meanwhile, at the
// version the tier knew then. The answer is at least that new (the origin reads from the primary,
// and every event the tier applied was committed before the lease was taken), and any later
// event, at a higher version, evicts it.
type Lease struct {
	tok   FillToken
	state invalidation.State
	gen   uint64
}

// Version is the version a fill under the lease is stored at: the highest version the tier knew
// of the key when the lease was taken (0 when it knew none).
func (l Lease) Version() uint64 { return l.state.Version }

// Stats are a Cache's counters.
type Stats struct {
	Hits, Misses uint64
	// Fills counts accepted fills; StaleFillsRejected counts fills refused by the version rule or
	// the fence; TooLarge counts values larger than MaxBytes that were not stored.
	Fills, StaleFillsRejected, TooLarge uint64
	// Evictions counts values that left the tier, by reason (the Reason* constants).
	Evictions map[string]uint64
	// YoungTombstonesDropped counts tombstones forgotten while younger than TombstoneTTL, each of
	// which raised the fence.
	YoungTombstonesDropped uint64
	// TombstonesExpired counts tombstones dropped because they outlived TombstoneTTL.
	TombstonesExpired   uint64
	Entries, Tombstones int
	Bytes               int64
}

// Cache is the versioned in-process tier. It is safe for concurrent use.
type Cache struct {
	mu sync.Mutex
	c  *core
	_  [48]byte // a cache line of its own: several Caches side by side (shards) do not contend
}

// New returns an empty Cache.
func New(cfg Config) (*Cache, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Cache{c: newCore(cfg)}, nil
}

// Get returns the value held for key, if any and not expired, and marks it recently used.
func (c *Cache) Get(key string) (Item, bool) {
	c.mu.Lock()
	e, ok := c.c.get(key)
	c.mu.Unlock()
	if !ok {
		return Item{}, false
	}
	return Item{Value: e.value, Version: e.version, Missing: e.negative, Leased: e.leased}, true
}

// GetSampled is Get for a hot path read by many goroutines: now is the current time, read from
// the clock Config.Now reads (time.Now by default) by a caller that has read it already, and only
// one hit in eight marks the key recently used, so the eviction order is approximate (a hot key
// still stays near the front) while most hits write nothing the others read.
func (c *Cache) GetSampled(key string, now time.Time) (Item, bool) {
	c.mu.Lock()
	e, ok := c.c.getAt(key, int64(now.Sub(c.c.base)), true)
	c.mu.Unlock()
	if !ok {
		return Item{}, false
	}
	return Item{Value: e.value, Version: e.version, Missing: e.negative, Leased: e.leased}, true
}

// Peek reports what the tier holds for key without marking it used or counting a read: the
// value, when one is held (ok), and the tier's state (a value or a tombstone). A value past its
// TTL is reported as nothing, as Get would find it. It is for inspection (the node's Explain);
// reads use Get.
func (c *Cache) Peek(key string) (it Item, ok bool, st invalidation.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, found := c.c.values.Peek(key); found {
		if c.c.now() >= e.expires {
			return Item{}, false, invalidation.State{} // Get drops it, and its version with it
		}
		return Item{Value: e.value, Version: e.version, Missing: e.negative, Leased: e.leased}, true, c.c.state(key)
	}
	return Item{}, false, c.c.state(key)
}

// State reports the highest version the tier has seen for key, from a value or a tombstone.
func (c *Cache) State(key string) invalidation.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.state(key)
}

// BeginFill returns the token to pass to Fill for a load that starts now.
func (c *Cache) BeginFill() FillToken {
	c.mu.Lock()
	defer c.mu.Unlock()
	return FillToken{fence: c.c.fence, evicts: c.c.evicts, gens: c.c.gens}
}

// Fill stores value at version for key, as read from a slower tier by a load that began when tok
// was taken. It reports whether the fill was accepted: it is rejected when the tier has seen a
// newer version of key, or when it forgot a young version (or was flushed) since tok, and while
// the key holds an answer from a versionless origin (or the young tombstone it left), which may be
// newer than any version says. A value too large for the tier is not stored, but its version is
// kept as a tombstone. An answer read from the origin is recorded with Keep.
func (c *Cache) Fill(key string, version uint64, value []byte, tok FillToken) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.fill(key, version, value, false, false, tok)
}

// BeginLease returns a lease on key for a load from a versionless origin that reads the origin
// after this call, and began when tok was taken.
func (c *Cache) BeginLease(key string, tok FillToken) Lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, gen := c.c.held(key)
	return Lease{tok: tok, state: st, gen: gen}
}

// FillLeased stores an answer from a versionless origin (a value, or with missing a not-found)
// at l.Version(), if the tier holds exactly what it held when l was taken: no event, fill, expiry
// or eviction touched the key, no EVICT of it was applied, and the tier forgot no young version
// and was not flushed. It returns a lease on what it stored, for Leased: an answer may be served
// only while the tier still holds it. An answer too large to hold is kept as a tombstone at the
// version, as Keep does, and may be served.
func (c *Cache) FillLeased(key string, l Lease, value []byte, missing bool) (Lease, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.fillLeased(key, l, value, missing)
}

// Leased reports whether the tier still holds exactly what it held when l was taken (or what
// FillLeased stored under it), and forgot nothing since. The node checks it just before it
// serves a versionless answer: another versionless answer may have replaced it at the same
// version, and could be newer.
func (c *Cache) Leased(key string, l Lease) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.leased(key, l)
}

// Admits reports whether an answer at version, read by a load that began when tok was taken, may
// still be served as fresh: the tier has seen no newer version of key, and it has not forgotten a
// young version (or been flushed) since tok. It is Fill's rule
// without the store; the node checks it just before it answers, so that an answer never goes
// back behind a version the tier learned while the load was running.
func (c *Cache) Admits(key string, version uint64, tok FillToken) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.admits(key, version, tok)
}

// Keep records an answer the caller is about to serve, read by a load that began when tok was
// taken: it stores it (a value, or with missing a not-found) as Fill does, and reports whether it
// may be served. It is false when the tier has seen a newer version of key, or when it forgot a
// young version (or was flushed) since tok. An answer too large to
// hold is kept as a tombstone at its version. Keeping every answer before it goes out is what
// lets the tier refuse, later, anything older than what was served.
func (c *Cache) Keep(key string, version uint64, value []byte, missing bool, tok FillToken) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.keep(key, version, value, missing, tok)
}

// FillMissing caches, for NegativeTTL, that the origin has no value for key at version (0 for a
// key never written), under the same rules as Fill.
func (c *Cache) FillMissing(key string, version uint64, tok FillToken) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.fill(key, version, nil, true, false, tok)
}

// FillVersionless is Fill (or with missing, FillMissing) for an answer a versionless origin gave,
// read from a slower tier that stored it under a lease at version: it is at least that new, so a
// later event evicts it rather than refreshing it with the event's value, which may be older. It
// may replace a versionless answer stored before tok was taken, never one stored after. It
// returns a lease on what it stored, for Leased.
func (c *Cache) FillVersionless(key string, version uint64, value []byte, missing bool, tok FillToken) (Lease, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if missing {
		value = nil
	}
	if !c.c.fill(key, version, value, missing, true, tok) {
		return Lease{}, false
	}
	st, gen := c.c.held(key)
	return Lease{tok: tok, state: st, gen: gen}, true
}

// Apply applies one change event under policy p and returns what it did. e must be valid
// (invalidation.Limits.Validate).
func (c *Cache) Apply(e *invalidation.Event, p invalidation.Policy) invalidation.Action {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.apply(e, p)
}

// ApplyBatch applies events in order under one lock and reports how many changed the tier and how
// many were ignored as duplicates or older than what it holds.
func (c *Cache) ApplyBatch(events []invalidation.Event, p invalidation.Policy) (applied, ignored int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range events {
		if c.c.apply(&events[i], p) == invalidation.Ignore {
			ignored++
		} else {
			applied++
		}
	}
	return applied, ignored
}

// Flush drops every value and tombstone and raises the fence, so fills that began before it are
// rejected. A node flushes when it finds a gap in the event stream it cannot repair.
func (c *Cache) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c.flush()
}

// Fence returns a counter that grows each time the tier forgets a version younger than
// TombstoneTTL or is flushed: whoever relies on the tier remembering recent versions (the node,
// before it trusts a slower tier that may lag) must start over when it changes.
func (c *Cache) Fence() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.fence
}

// Len returns the number of values held (tombstones not included).
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.values.Len()
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{
		Hits: c.c.hits, Misses: c.c.misses, Fills: c.c.fills, StaleFillsRejected: c.c.staleFills,
		TooLarge: c.c.tooLarge, YoungTombstonesDropped: c.c.youngDrops, TombstonesExpired: c.c.tombsExpired,
		Entries: c.c.values.Len(), Tombstones: c.c.tombs.Len(), Bytes: c.c.bytes,
		Evictions: make(map[string]uint64, len(reasons)),
	}
	for i, r := range reasons {
		s.Evictions[r] = c.c.evictions[i]
	}
	return s
}
