package lru

import (
	"math/rand/v2"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/cachewire/cachewire/invalidation"
)

// EntryOverhead is the number of bytes each value entry is charged beyond its key and value, an
// estimate of the LRU element, map slot and entry header it costs.
const EntryOverhead = 160

// Eviction reasons, the keys of Stats.Evictions.
const (
	ReasonCapacity    = "capacity"    // the entry count limit was reached
	ReasonBytes       = "bytes"       // the byte limit was reached
	ReasonExpired     = "expired"     // the entry outlived its TTL
	ReasonInvalidated = "invalidated" // an event evicted it (a tombstone replaced it)
	ReasonFlushed     = "flushed"     // the whole tier was flushed
)

var reasons = [...]string{ReasonCapacity, ReasonBytes, ReasonExpired, ReasonInvalidated, ReasonFlushed}

type reason int8

const (
	rCapacity reason = iota
	rBytes
	rExpired
	rInvalidated
	rFlushed
	rReplaced // not an eviction: the entry was overwritten or became a tombstone of its own
)

type entry struct {
	value    []byte
	version  uint64
	storedAt int64 // nanoseconds since core.base
	expires  int64 // nanoseconds since core.base
	negative bool  // the origin said the key does not exist at version
	// leased: a versionless answer, stored at a version it is at least as new as (see Lease). An
	// event at a higher version may be older than what it holds: it evicts it, never refreshes.
	leased bool
	gen    uint64
}

type tomb struct {
	version  uint64
	storedAt int64
	gen      uint64
	// leased: left by an event that evicted a versionless answer (or replaced such a tombstone).
	// That answer may have been newer than this version, so while the tombstone lives an event's
	// value is not written for the key (refresh-all), lest it be older than what was served.
	leased bool
}

// mark records an EVICT of a key: count is the tier's evicts once it was applied. A load whose
// token predates it (tok.evicts < count) may carry the value the EVICT dropped, at any version
// (Redis, or the origin before it was repaired, may have held a version this tier never saw),
// so its fills of the key are refused until the mark is older than TombstoneTTL. The mark is
// kept apart from the key's value and tombstone, so that neither a later fill (of the repaired
// value, by a load begun after the EVICT) nor an eviction for room takes it away.
type mark struct {
	count    uint64
	storedAt int64
}

// core is the unsynchronised tier: both LRUs, the version rules and the accounting. Cache adds the
// lock.
type core struct {
	cfg    Config
	base   time.Time
	values *simplelru.LRU[string, entry]
	tombs  *simplelru.LRU[string, tomb]
	marks  *simplelru.LRU[string, mark] // EVICTs younger than TombstoneTTL
	bytes  int64
	fence  uint64
	evicts uint64 // EVICT events applied: a fill begun before one may not bring back what it dropped
	gens   uint64 // numbers every value and tombstone stored, so a lease sees any change of a key

	why reason // why the LRU callback is running

	hits, misses, fills, staleFills, tooLarge, youngDrops, tombsExpired uint64
	evictions                                                           [len(reasons)]uint64
	_                                                                   [64]byte // the counters above share no cache line with another core
}

func newCore(cfg Config) *core {
	c := &core{cfg: cfg, base: cfg.Now(), why: rCapacity}
	// The sizes are validated, so NewLRU cannot fail.
	c.values, _ = simplelru.NewLRU(cfg.MaxEntries, c.onValueEvicted)
	c.tombs, _ = simplelru.NewLRU(cfg.MaxTombstones, c.onTombEvicted)
	c.marks, _ = simplelru.NewLRU(cfg.MaxTombstones, c.onMarkEvicted)
	return c
}

func (c *core) now() int64 { return int64(c.cfg.Now().Sub(c.base)) }

func entrySize(key string, value []byte) int64 {
	return int64(len(key) + len(value) + EntryOverhead)
}

func (c *core) young(storedAt, now int64) bool {
	return now-storedAt < int64(c.cfg.TombstoneTTL)
}

// onValueEvicted runs for every value leaving the values LRU, with c.why saying why.
func (c *core) onValueEvicted(key string, e entry) {
	c.bytes -= entrySize(key, e.value)
	if c.why == rReplaced {
		return
	}
	c.evictions[c.why]++
	switch c.why {
	case rCapacity, rBytes, rExpired:
		// Forgetting a version learned recently could let a slow fill of an older version in:
		// keep the version as a tombstone until it is old.
		if now := c.now(); c.young(e.storedAt, now) {
			c.putTomb(key, tomb{version: e.version, storedAt: e.storedAt, leased: e.leased})
		}
	}
}

// onTombEvicted runs for every tombstone leaving the tombstone LRU.
func (c *core) onTombEvicted(_ string, t tomb) {
	if c.why == rReplaced || c.why == rFlushed || c.why == rExpired {
		return
	}
	if c.young(t.storedAt, c.now()) {
		// A version younger than the loader timeout is forgotten: reject every fill in flight.
		c.fence++
		c.youngDrops++
	}
}

// onMarkEvicted runs for every EVICT mark leaving its LRU. Forgetting a young one (more EVICTs
// than MaxTombstones within TombstoneTTL) raises the fence, as a young tombstone does.
func (c *core) onMarkEvicted(_ string, m mark) {
	if c.why == rReplaced || c.why == rFlushed || c.why == rExpired {
		return
	}
	if c.young(m.storedAt, c.now()) {
		c.fence++
		c.youngDrops++
	}
}

// putMark records an EVICT of key, first dropping up to tombSweep marks older than TombstoneTTL.
func (c *core) putMark(key string, m mark) {
	why := c.why
	c.why = rExpired
	for range tombSweep {
		k, old, ok := c.marks.GetOldest()
		if !ok || c.young(old.storedAt, m.storedAt) {
			break
		}
		c.marks.Remove(k)
	}
	c.why = rCapacity
	c.marks.Add(key, m)
	c.why = why
}

// evictedSince reports whether an EVICT of key younger than TombstoneTTL was applied after tok
// was taken.
func (c *core) evictedSince(key string, tok FillToken) bool {
	m, ok := c.marks.Peek(key)
	if !ok {
		return false
	}
	if !c.young(m.storedAt, c.now()) {
		c.why = rExpired
		c.marks.Remove(key)
		c.why = rCapacity
		return false
	}
	return m.count > tok.evicts
}

func (c *core) putTomb(key string, t tomb) {
	c.gens++
	t.gen = c.gens
	why := c.why
	c.sweepTombs(c.now())
	c.why = rCapacity
	c.tombs.Add(key, t)
	c.why = why
}

func (c *core) removeValue(key string, why reason) {
	c.why = why
	c.values.Remove(key)
	c.why = rCapacity
}

func (c *core) removeTomb(key string) {
	c.why = rReplaced
	c.tombs.Remove(key)
	c.why = rCapacity
}

// get returns the value entry for key when it is present and not expired.
func (c *core) get(key string) (entry, bool) { return c.getAt(key, c.now(), false) }

// touchEvery is how often a sampled read (getAt with sampled) marks its key recently used.
const touchEvery = 8

// getAt is get at now (nanoseconds since base). With sampled, only one read in touchEvery marks
// the key recently used: a hot key still does, often, and the other reads write nothing to the
// recency list, whose cache lines concurrent readers would otherwise pass back and forth.
func (c *core) getAt(key string, now int64, sampled bool) (entry, bool) {
	var e entry
	var ok bool
	if sampled {
		// A random one in touchEvery, not a counter: reads that cycle through a few keys would
		// make a counter touch the same key every time.
		if rand.Uint32()%touchEvery == 0 {
			e, ok = c.values.Get(key)
		} else {
			e, ok = c.values.Peek(key)
		}
	} else {
		e, ok = c.values.Get(key)
	}
	if !ok {
		c.misses++
		return entry{}, false
	}
	if now >= e.expires {
		c.removeValue(key, rExpired)
		c.misses++
		return entry{}, false
	}
	c.hits++
	return e, true
}

// state is what the tier knows about key, for the version rules. It does not touch recency. A
// tombstone older than TombstoneTTL is dropped here, and the tier forgets the version: no load
// that began before it was stored can still be running (LoaderTimeout < TombstoneTTL), so
// forgetting it moves no fence. This is what lets a mistaken version (an INVALIDATE from another
// version space, a typo) stop blocking fills once its TTL has passed.
func (c *core) state(key string) invalidation.State {
	if e, ok := c.values.Peek(key); ok {
		return invalidation.State{Known: true, Version: e.version}
	}
	if t, ok := c.tombs.Peek(key); ok {
		if !c.young(t.storedAt, c.now()) {
			c.expireTomb(key)
			return invalidation.State{}
		}
		return invalidation.State{Known: true, Version: t.version, Tombstone: true}
	}
	return invalidation.State{}
}

// held is what the tier holds for key, for a lease: its state, and the number of the value or
// tombstone that holds it (0 when the tier does not know the key). Any change to the key stores
// a new value or tombstone, or forgets it, and so changes gen.
func (c *core) held(key string) (invalidation.State, uint64) {
	st := c.state(key)
	if !st.Known {
		return st, 0
	}
	if e, ok := c.values.Peek(key); ok {
		return st, e.gen
	}
	t, _ := c.tombs.Peek(key)
	return st, t.gen
}

// leased reports whether the tier holds exactly what it held when l was taken, and has forgotten
// nothing and applied no EVICT of key since.
func (c *core) leased(key string, l Lease) bool {
	if l.tok.fence != c.fence || c.evictedSince(key, l.tok) {
		return false
	}
	st, gen := c.held(key)
	return st == l.state && gen == l.gen
}

// fillLeased stores an answer from a versionless origin at the lease's version, if the lease
// still holds, and returns the lease on what it stored (a tombstone at that version when the
// answer is too large to hold).
func (c *core) fillLeased(key string, l Lease, value []byte, negative bool) (Lease, bool) {
	if !c.leased(key, l) {
		c.staleFills++
		return Lease{}, false
	}
	if c.store(key, l.state.Version, value, negative, true) {
		c.fills++
	} // else too large to hold: kept as a tombstone at the version, and may be served
	st, gen := c.held(key)
	return Lease{tok: l.tok, state: st, gen: gen}, true
}

// leasedHeld reports whether key holds a versionless answer, or a young tombstone it left: a
// value read from a slower tier at its version or above (an event's value, written there) may be
// older than the answer that was served, so only another versionless answer may fill the key.
func (c *core) leasedHeld(key string) bool {
	if e, ok := c.values.Peek(key); ok {
		return e.leased
	}
	t, ok := c.tombs.Peek(key)
	return ok && t.leased && c.young(t.storedAt, c.now())
}

// tombSweep bounds the expired tombstones one write removes from the old end of the LRU, so a
// tier that is never full still lets go of old tombstones without a timer.
const tombSweep = 4

// sweepTombs drops up to tombSweep tombstones older than TombstoneTTL from the least recently
// stored end.
func (c *core) sweepTombs(now int64) {
	for range tombSweep {
		key, t, ok := c.tombs.GetOldest()
		if !ok || c.young(t.storedAt, now) {
			return
		}
		c.expireTomb(key)
	}
}

// expireTomb removes a tombstone that outlived TombstoneTTL: an expiry, not a drop of a young
// version, so it raises no fence.
func (c *core) expireTomb(key string) {
	c.why = rExpired
	c.tombs.Remove(key)
	c.why = rCapacity
	c.tombsExpired++
}

func (c *core) expiry(now int64, ttl time.Duration) int64 {
	d := float64(ttl)
	if j := c.cfg.TTLJitter; j > 0 {
		d *= 1 + j*(2*rand.Float64()-1)
	}
	return now + int64(d)
}

// set stores a value entry, replacing whatever the tier holds for key, and enforces the byte
// limit. It reports false when the entry alone is larger than MaxBytes.
func (c *core) set(key string, version uint64, value []byte, negative, leased bool, ttl time.Duration) bool {
	size := entrySize(key, value)
	if size > c.cfg.MaxBytes {
		c.tooLarge++
		return false
	}
	now := c.now()
	c.removeTomb(key)
	c.removeValue(key, rReplaced)
	c.why = rCapacity
	c.gens++
	c.values.Add(key, entry{value: value, version: version, storedAt: now, expires: c.expiry(now, ttl), negative: negative, leased: leased, gen: c.gens})
	c.bytes += size
	c.why = rBytes
	for c.bytes > c.cfg.MaxBytes {
		if _, _, ok := c.values.RemoveOldest(); !ok {
			break
		}
	}
	c.why = rCapacity
	return true
}

// admits reports whether an answer at version, read by a load that began at tok, is at least as
// new as everything the tier knows of key (the version rule), and the tier has forgotten nothing
// since tok (the fence). The fence holds even for a key the tier knows: after a flush or a
// dropped young tombstone it may have relearned only an older version of the key from a late
// event, and the load may have read an answer older than what it forgot.
//
// A value dropped by an EVICT keeps its version, which a fill may equal; so a fill of the key
// whose load began before the EVICT is refused too, whatever its version and whatever the tier
// held when the EVICT came: it may carry the dropped value (see mark).
//
// An answer from a versionless origin held for the key (or the tombstone it left) is at least
// its version, maybe much newer, so an answer whose load began before it was stored is refused
// too: it may be older than what was served.
func (c *core) admits(key string, version uint64, tok FillToken) bool {
	return tok.fence == c.fence && invalidation.AcceptFill(c.state(key), version) && !c.evictedSince(key, tok) && !c.leasedSince(key, tok)
}

// leasedSince reports whether key's value, or its young tombstone, came from a versionless
// answer stored after tok was taken.
func (c *core) leasedSince(key string, tok FillToken) bool {
	if e, ok := c.values.Peek(key); ok {
		return e.leased && e.gen > tok.gens
	}
	t, ok := c.tombs.Peek(key)
	return ok && t.leased && t.gen > tok.gens && c.young(t.storedAt, c.now())
}

// keep stores an answer about to be served, as fill does, and reports whether it may be served:
// false when the tier has seen a newer version or forgot one since tok. An answer too large to
// hold is kept as a tombstone at its version, and may be served.
func (c *core) keep(key string, version uint64, value []byte, negative bool, tok FillToken) bool {
	if !c.admits(key, version, tok) {
		return false
	}
	if e, ok := c.values.Peek(key); ok && e.version == version && e.negative == negative {
		return true // already held
	}
	c.store(key, version, value, negative, false)
	return true
}

func (c *core) fill(key string, version uint64, value []byte, negative, leased bool, tok FillToken) bool {
	if !c.admits(key, version, tok) || (!leased && c.leasedHeld(key)) {
		c.staleFills++
		return false
	}
	if !c.store(key, version, value, negative, leased) {
		return false
	}
	c.fills++
	return true
}

// store holds an admitted value (or not-found) under its TTL. One too large to hold is kept as a
// tombstone at its version, so that nothing older can follow it; store then reports false.
func (c *core) store(key string, version uint64, value []byte, negative, leased bool) bool {
	ttl := c.cfg.TTL
	if negative {
		ttl = c.cfg.NegativeTTL
	}
	if c.set(key, version, value, negative, leased, ttl) {
		return true
	}
	c.removeValue(key, rInvalidated)
	c.putTomb(key, tomb{version: version, storedAt: c.now(), leased: leased})
	return false
}

func (c *core) apply(e *invalidation.Event, p invalidation.Policy) invalidation.Action {
	st := c.state(e.Key)
	a := invalidation.Decide(st, e, p)
	leased := false
	if held, ok := c.values.Peek(e.Key); ok {
		leased = held.leased
	} else if t, ok := c.tombs.Peek(e.Key); ok {
		leased = t.leased
	}
	if leased && a == invalidation.Refresh {
		a = invalidation.Evict // the event's value may be older than the versionless answer served
	}
	if e.Op == invalidation.OpEvict {
		// Marked even when the tier holds no value for the key: a load in flight may still
		// carry the value the other tiers dropped.
		c.evicts++
		c.putMark(e.Key, mark{count: c.evicts, storedAt: c.now()})
	}
	switch {
	case a == invalidation.Evict && e.Op == invalidation.OpEvict:
		c.removeValue(e.Key, rInvalidated)
		c.putTomb(e.Key, tomb{version: st.Version, storedAt: c.now(), leased: leased})
	case a == invalidation.Evict:
		c.removeValue(e.Key, rInvalidated)
		c.putTomb(e.Key, tomb{version: e.Version, storedAt: c.now(), leased: leased})
	case a == invalidation.Refresh:
		if !c.set(e.Key, e.Version, e.Value, false, false, c.cfg.TTL) {
			// Too large for the tier: keep the version as a tombstone instead.
			c.removeValue(e.Key, rInvalidated)
			c.putTomb(e.Key, tomb{version: e.Version, storedAt: c.now()})
			a = invalidation.Evict
		}
	}
	return a
}

func (c *core) flush() {
	c.why = rFlushed
	c.values.Purge()
	c.tombs.Purge()
	c.marks.Purge()
	c.why = rCapacity
	c.fence++
}
