package lru

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cachewire/cachewire/invalidation"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTest(t *testing.T, cfg Config) (*Cache, *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1000, 0)}
	cfg.Now = clk.now
	if cfg.TTLJitter == 0 {
		cfg.TTLJitter = -1
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

func upsert(key string, v uint64, val string) *invalidation.Event {
	return &invalidation.Event{Key: key, Version: v, Op: invalidation.OpUpsert, Value: []byte(val), HasValue: true}
}

func invalidate(key string, v uint64) *invalidation.Event {
	return &invalidation.Event{Key: key, Version: v, Op: invalidation.OpInvalidate}
}

func mustGet(t *testing.T, c *Cache, key string, wantVersion uint64, wantValue string) {
	t.Helper()
	it, ok := c.Get(key)
	if !ok || it.Version != wantVersion || string(it.Value) != wantValue {
		t.Fatalf("Get(%q) = %q@%d, %v; want %q@%d", key, it.Value, it.Version, ok, wantValue, wantVersion)
	}
}

func mustMiss(t *testing.T, c *Cache, key string) {
	t.Helper()
	if it, ok := c.Get(key); ok {
		t.Fatalf("Get(%q) = %q@%d, want a miss", key, it.Value, it.Version)
	}
}

// TestStaleFillRace is Meta's stale-set race, made deterministic: a loader reads version 1 from
// the origin, the invalidation to version 2 arrives, and then the loader's fill must be rejected.
func TestStaleFillRace(t *testing.T) {
	c, _ := newTest(t, Config{})
	tok := c.BeginFill()                                  // loader starts, reads v1 from the origin...
	c.Apply(invalidate("k", 2), invalidation.RefreshHeld) // ...the invalidation for v2 arrives...
	if c.Fill("k", 1, []byte("old"), tok) {               // ...and the slow fill lands.
		t.Fatal("fill of version 1 was accepted after the invalidation to version 2")
	}
	mustMiss(t, c, "k")
	if got := c.Stats().StaleFillsRejected; got != 1 {
		t.Fatalf("StaleFillsRejected = %d, want 1", got)
	}
	// A loader that read version 2 may fill.
	if !c.Fill("k", 2, []byte("new"), c.BeginFill()) {
		t.Fatal("fill of version 2 rejected after the invalidation to version 2")
	}
	mustGet(t, c, "k", 2, "new")
}

func TestApplyAndFillRules(t *testing.T) {
	type step struct {
		event *invalidation.Event // or a fill:
		fill  uint64
		want  string // "key@version=value" of Get afterwards, or "miss"
	}
	tests := []struct {
		name   string
		policy invalidation.Policy
		steps  []step
	}{
		{"refresh of a held value", invalidation.RefreshHeld, []step{
			{fill: 1, want: "1=f1"}, {event: upsert("k", 2, "e2"), want: "2=e2"}}},
		{"duplicate event changes nothing", invalidation.RefreshHeld, []step{
			{fill: 1, want: "1=f1"}, {event: upsert("k", 2, "e2"), want: "2=e2"}, {event: upsert("k", 2, "other"), want: "2=e2"}}},
		{"older event after a newer one changes nothing", invalidation.RefreshHeld, []step{
			{fill: 3, want: "3=f3"}, {event: upsert("k", 2, "e2"), want: "3=f3"}, {event: invalidate("k", 1), want: "3=f3"}}},
		{"delete evicts and older fills stay out", invalidation.RefreshHeld, []step{
			{fill: 1, want: "1=f1"}, {event: &invalidation.Event{Key: "k", Version: 2, Op: invalidation.OpDelete}, want: "miss"}, {fill: 1, want: "miss"}}},
		{"event for a key not held leaves a tombstone, not a value, under refresh-held", invalidation.RefreshHeld, []step{
			{event: upsert("k", 5, "e5"), want: "miss"}, {fill: 4, want: "miss"}, {fill: 5, want: "5=f5"}}},
		{"event for a key not held is stored under refresh-all", invalidation.RefreshAll, []step{
			{event: upsert("k", 5, "e5"), want: "5=e5"}}},
		{"evict-only never refreshes", invalidation.EvictOnly, []step{
			{fill: 1, want: "1=f1"}, {event: upsert("k", 2, "e2"), want: "miss"}, {fill: 2, want: "2=f2"}}},
		{"a newer fill replaces an older value", invalidation.RefreshHeld, []step{
			{fill: 1, want: "1=f1"}, {fill: 3, want: "3=f3"}, {fill: 2, want: "3=f3"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTest(t, Config{})
			for i, s := range tt.steps {
				if s.event != nil {
					c.Apply(s.event, tt.policy)
				} else {
					c.Fill("k", s.fill, []byte(fmt.Sprintf("f%d", s.fill)), c.BeginFill())
				}
				got := "miss"
				if it, ok := c.Get("k"); ok {
					got = fmt.Sprintf("%d=%s", it.Version, it.Value)
				}
				if got != s.want {
					t.Fatalf("after step %d: Get = %s, want %s", i, got, s.want)
				}
			}
		})
	}
}

func TestBoundedByEntriesAndBytes(t *testing.T) {
	c, _ := newTest(t, Config{MaxEntries: 3, MaxBytes: 3 * (EntryOverhead + 12)})
	for i := range 3 {
		c.Fill(fmt.Sprintf("k%d", i), 1, []byte("0123456789"), c.BeginFill()) // 2+10+overhead bytes
	}
	c.Get("k0") // k1 is now the least recently used
	c.Fill("k3", 1, []byte("0123456789"), c.BeginFill())
	mustMiss(t, c, "k1")
	s := c.Stats()
	if s.Entries != 3 || s.Evictions[ReasonCapacity] != 1 {
		t.Fatalf("after a 4th entry: entries=%d capacity evictions=%d, want 3 and 1", s.Entries, s.Evictions[ReasonCapacity])
	}
	// A large value pushes out older entries until the bytes fit.
	c.Fill("big", 1, []byte(strings.Repeat("x", 2*EntryOverhead)), c.BeginFill())
	s = c.Stats()
	if s.Bytes > 3*(EntryOverhead+12) || s.Evictions[ReasonBytes] == 0 {
		t.Fatalf("bytes=%d (limit %d), byte evictions=%d", s.Bytes, 3*(EntryOverhead+12), s.Evictions[ReasonBytes])
	}
	mustGet(t, c, "big", 1, strings.Repeat("x", 2*EntryOverhead))
	// A value larger than the whole tier is refused.
	if c.Fill("huge", 1, make([]byte, 4*EntryOverhead), c.BeginFill()) {
		t.Fatal("a value larger than MaxBytes was accepted")
	}
	if c.Stats().TooLarge != 1 {
		t.Fatal("TooLarge not counted")
	}
	// ... but its version is remembered: an older fill cannot follow it.
	if c.Fill("huge", 0, []byte("old"), c.BeginFill()) || c.Admits("huge", 0, c.BeginFill()) {
		t.Fatal("after a too-large fill at version 1, an older fill was accepted")
	}
}

// TestAdmits: an answer may be served only while the tier has seen nothing newer for the key and,
// whatever it knows of the key, has not flushed or forgotten a young version since the load began.
func TestAdmits(t *testing.T) {
	c, _ := newTest(t, Config{})
	tok := c.BeginFill()
	if !c.Admits("k", 0, tok) {
		t.Fatal("an unknown key refused a not-found at version 0")
	}
	c.Apply(&invalidation.Event{Key: "k", Version: 5, Op: invalidation.OpDelete}, invalidation.RefreshHeld)
	if c.Admits("k", 4, tok) {
		t.Fatal("an answer older than a tombstone the tier holds was admitted")
	}
	if !c.Admits("k", 5, tok) || !c.Admits("k", 6, tok) {
		t.Fatal("an answer at or above the tombstone was refused")
	}
	c.Flush()
	if c.Admits("k", 9, tok) {
		t.Fatal("an answer read before a flush was admitted for a key the tier no longer knows")
	}
	// After the flush a late event teaches it an older version: an answer read before the
	// flush is still not admitted (the flush may have taken a newer version with it).
	c.Apply(&invalidation.Event{Key: "k", Version: 2, Op: invalidation.OpDelete}, invalidation.RefreshHeld)
	if c.Admits("k", 3, tok) {
		t.Fatal("an answer read before a flush was admitted because the tier relearned an older version")
	}
	if !c.Admits("k", 2, c.BeginFill()) {
		t.Fatal("an answer read after the flush was refused")
	}
}

func TestTTLExpiresValues(t *testing.T) {
	c, clk := newTest(t, Config{TTL: time.Minute, TombstoneTTL: 10 * time.Second})
	c.Fill("k", 1, []byte("v"), c.BeginFill())
	clk.advance(59 * time.Second)
	mustGet(t, c, "k", 1, "v")
	clk.advance(time.Second)
	mustMiss(t, c, "k")
	if got := c.Stats().Evictions[ReasonExpired]; got != 1 {
		t.Fatalf("expired evictions = %d, want 1", got)
	}
}

func TestTTLJitterStaysInBounds(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	c, err := New(Config{TTL: 100 * time.Second, TTLJitter: 0.2, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		c.Fill(fmt.Sprint(i), 1, nil, c.BeginFill())
	}
	clk.advance(79 * time.Second)
	if n := countHits(c, 200); n != 200 {
		t.Fatalf("%d of 200 entries expired before TTL*(1-jitter)", 200-n)
	}
	clk.advance(42 * time.Second)
	if n := countHits(c, 200); n != 0 {
		t.Fatalf("%d of 200 entries outlived TTL*(1+jitter)", n)
	}
}

func countHits(c *Cache, n int) int {
	hits := 0
	for i := range n {
		if _, ok := c.Get(fmt.Sprint(i)); ok {
			hits++
		}
	}
	return hits
}

// TestYoungTombstoneDropRaisesFence: when the tombstone budget forces out a tombstone younger
// than TombstoneTTL, a fill that began before that drop must be rejected, since the tier no longer
// remembers which version the key had reached.
func TestYoungTombstoneDropRaisesFence(t *testing.T) {
	c, clk := newTest(t, Config{MaxTombstones: 2, TombstoneTTL: 30 * time.Second})
	tok := c.BeginFill() // a loader starts and reads k@1
	c.Apply(invalidate("k", 2), invalidation.RefreshHeld)
	c.Apply(invalidate("a", 2), invalidation.RefreshHeld)
	c.Apply(invalidate("b", 2), invalidation.RefreshHeld) // pushes k's young tombstone out
	if st := c.State("k"); st.Known {
		t.Fatalf("k's tombstone should have been dropped, state %+v", st)
	}
	if c.Fill("k", 1, []byte("old"), tok) {
		t.Fatal("a fill that began before a young tombstone was dropped was accepted")
	}
	if c.Stats().YoungTombstonesDropped != 1 {
		t.Fatal("young tombstone drop not counted")
	}
	// A load that begins after the drop is fine.
	if !c.Fill("k", 2, []byte("new"), c.BeginFill()) {
		t.Fatal("fill after the drop rejected")
	}
	// Old tombstones can be dropped without raising the fence.
	tok = c.BeginFill()
	clk.advance(31 * time.Second)
	c.Apply(invalidate("c", 2), invalidation.RefreshHeld)
	c.Apply(invalidate("d", 2), invalidation.RefreshHeld)
	if !c.Fill("e", 1, []byte("v"), tok) {
		t.Fatal("dropping old tombstones raised the fence")
	}
}

// TestEvictedYoungValueKeepsItsVersion: a value pushed out by capacity right after it arrived
// leaves its version behind, so a slow fill of an older version still cannot get in.
func TestEvictedYoungValueKeepsItsVersion(t *testing.T) {
	c, _ := newTest(t, Config{MaxEntries: 1})
	tok := c.BeginFill()
	c.Apply(upsert("k", 1, "x"), invalidation.RefreshAll)
	c.Apply(upsert("k", 5, "v5"), invalidation.RefreshAll)
	c.Fill("other", 1, []byte("o"), c.BeginFill()) // pushes k out
	mustMiss(t, c, "k")
	if c.Fill("k", 3, []byte("v3"), tok) {
		t.Fatal("fill of version 3 accepted after version 5 was evicted by capacity")
	}
}

func TestFlushDropsEverythingAndFencesFills(t *testing.T) {
	c, _ := newTest(t, Config{})
	c.Fill("k", 1, []byte("v"), c.BeginFill())
	tok := c.BeginFill()
	c.Flush()
	mustMiss(t, c, "k")
	if c.Fill("k", 1, []byte("v"), tok) {
		t.Fatal("fill that began before a flush was accepted")
	}
	if s := c.Stats(); s.Entries != 0 || s.Bytes != 0 || s.Evictions[ReasonFlushed] != 1 {
		t.Fatalf("after flush: %+v", s)
	}
}

func TestNegativeEntries(t *testing.T) {
	c, clk := newTest(t, Config{NegativeTTL: 5 * time.Second})
	if !c.FillMissing("k", 0, c.BeginFill()) {
		t.Fatal("FillMissing rejected")
	}
	it, ok := c.Get("k")
	if !ok || !it.Missing {
		t.Fatalf("Get = %+v, %v; want a cached miss", it, ok)
	}
	clk.advance(5 * time.Second)
	mustMiss(t, c, "k")
	// A write makes a cached miss go away.
	c.FillMissing("k", 0, c.BeginFill())
	c.Apply(upsert("k", 1, "v"), invalidation.RefreshHeld)
	mustGet(t, c, "k", 1, "v")
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{{MaxEntries: -1}, {MaxBytes: -1}, {TTL: -time.Second}, {TTLJitter: 1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted a bad config", cfg)
		}
	}
}

// TestTombstoneExpiresByTTL: a tombstone at a mistaken high version blocks fills only until
// TombstoneTTL has passed, even when the tier is far from full; its expiry raises no fence.
func TestTombstoneExpiresByTTL(t *testing.T) {
	c, clk := newTest(t, Config{TombstoneTTL: 30 * time.Second})
	c.Apply(invalidate("k", 1_000_000), invalidation.RefreshHeld) // a typo in the version
	if c.Fill("k", 5, []byte("v5"), c.BeginFill()) {
		t.Fatal("a fill below a young tombstone was accepted")
	}
	fence := c.Fence()
	clk.advance(30*time.Second + time.Nanosecond)
	if st := c.State("k"); st.Known {
		t.Fatalf("State after TombstoneTTL = %+v, want unknown", st)
	}
	if !c.Fill("k", 5, []byte("v5"), c.BeginFill()) {
		t.Fatal("a fill was refused after the tombstone's TTL")
	}
	mustGet(t, c, "k", 5, "v5")
	s := c.Stats()
	if c.Fence() != fence || s.YoungTombstonesDropped != 0 {
		t.Fatalf("expiry moved the fence (%d -> %d) or counted a young drop (%d)", fence, c.Fence(), s.YoungTombstonesDropped)
	}
	if s.TombstonesExpired != 1 {
		t.Fatalf("TombstonesExpired = %d, want 1", s.TombstonesExpired)
	}
}

// TestTombstonesSweptWithoutReads: old tombstones of keys nobody reads again leave the tier as
// new ones are written, so Stats shows what is really held.
func TestTombstonesSweptWithoutReads(t *testing.T) {
	c, clk := newTest(t, Config{TombstoneTTL: time.Second})
	for i := range 10 {
		c.Apply(invalidate(fmt.Sprint("old", i), 3), invalidation.RefreshHeld)
	}
	clk.advance(2 * time.Second)
	for i := range 3 { // each write sweeps up to tombSweep expired tombstones
		c.Apply(invalidate(fmt.Sprint("new", i), 3), invalidation.RefreshHeld)
	}
	if s := c.Stats(); s.Tombstones != 3 || s.TombstonesExpired != 10 {
		t.Fatalf("tombstones = %d (expired %d), want 3 (10)", s.Tombstones, s.TombstonesExpired)
	}
}

// TestEvictKeepsTheVersion: an EVICT drops the held value and keeps its version; a fill at that
// version is refused when its load began before the EVICT (it may carry the dropped value) and
// accepted when it began after; older fills stay refused.
func TestEvictKeepsTheVersion(t *testing.T) {
	c, _ := newTest(t, Config{})
	evict := &invalidation.Event{Key: "k", Op: invalidation.OpEvict}
	if a := c.Apply(evict, invalidation.RefreshHeld); a != invalidation.Ignore {
		t.Fatalf("EVICT of an unknown key did %s, want ignore", a)
	}
	c.Apply(upsert("k", 5, "suspect"), invalidation.RefreshAll)
	before := c.BeginFill()
	if a := c.Apply(evict, invalidation.RefreshHeld); a != invalidation.Evict {
		t.Fatalf("EVICT of a held value did %s, want evict", a)
	}
	mustMiss(t, c, "k")
	if st := c.State("k"); !st.Known || !st.Tombstone || st.Version != 5 {
		t.Fatalf("State after EVICT = %+v, want tombstone@5", st)
	}
	if c.Fill("k", 5, []byte("suspect"), before) {
		t.Fatal("a fill begun before the EVICT brought the dropped value back")
	}
	if c.Fill("k", 4, []byte("old"), c.BeginFill()) {
		t.Fatal("a fill older than the kept version was accepted")
	}
	if a := c.Apply(evict, invalidation.RefreshHeld); a != invalidation.Ignore {
		t.Fatalf("EVICT of a tombstone did %s, want ignore", a)
	}
	if !c.Fill("k", 5, []byte("fresh"), c.BeginFill()) {
		t.Fatal("a fill at the kept version, begun after the EVICT, was refused")
	}
	mustGet(t, c, "k", 5, "fresh")
}
