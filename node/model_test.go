package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TestReadPathModel runs random schedules of writes (committed at the origin, published to the
// log later: the relay lags), event deliveries (to L1 and, separately and later, to L2), origin
// loads returning in any order, reads with and without min_version, time passing (L1 forgets old
// versions silently, loads time out), the node losing and regaining freshness, the origin going
// down (stale answers), Redis fills failing, L1 resets, L1 forgetting young tombstones, Redis
// losing everything, and Redis failing over to a replica that missed writes. Every answer is
// checked against a model of the invariants:
//
//   - read-your-writes (7): a read with min_version gets a version at least that (found or not);
//   - monotonic reads per node (10): an answer not marked stale is never older than an answer
//     the node gave before the read began, nor than an event it applied before the read began;
//   - EVICT (4): schedules also repair a key's value in place at the origin (same version) and
//     publish an EVICT; once L1 has applied it (or a reset skipped it), a read that begins later
//     never gets the dropped value, unless marked stale.
//
// The node's L2 gating is modelled as the node does it: L2 is used only while the group caught
// up with L1 within max_staleness, and after an L1 reset, a Redis epoch change, or L1 forgetting
// a young version, not until the group has applied everything L1 had. refresh-all is only
// combined with schedules in which neither tier forgets anything (no resets, no time passing, no
// Redis loss, room for every key): it writes an event's value for a key a tier does not hold, so
// after a tier forgot a newer version read from an origin ahead of the log, a late event would
// send readers back (docs/consistency.md, "what is left").
//
// CACHEWIRE_MODEL_SEED replays one schedule; CACHEWIRE_MODEL_SCHEDULES sets how many run.
func TestReadPathModel(t *testing.T) { runModel(t, false, 3000) }

// TestReadPathModelVersionless runs the same schedules against an origin that answers without
// versions (invariant 12: leases). Versions are then labels the node gives, a lower bound of
// what an answer holds, so the checks use the version the value names: an answer is never older
// than one the node served or an event it applied before the read began, its label never
// overstates it, a read with min_version is served only from a tier whose label proves it (else
// Unavailable), and once every event is applied, every key reads as the origin holds it.
func TestReadPathModelVersionless(t *testing.T) { runModel(t, true, 2000) }

func runModel(t *testing.T, versionless bool, schedules int) {
	name := "TestReadPathModel"
	if versionless {
		name += "Versionless"
	}
	if testing.Short() {
		schedules = 300
	}
	if s := os.Getenv("CACHEWIRE_MODEL_SCHEDULES"); s != "" {
		schedules, _ = strconv.Atoi(s)
	}
	seeds := make([]uint64, schedules)
	base := uint64(time.Now().UnixNano())
	for i := range seeds {
		seeds[i] = base + uint64(i)
	}
	if s := os.Getenv("CACHEWIRE_MODEL_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CACHEWIRE_MODEL_SEED: %v", err)
		}
		seeds = []uint64{seed}
	}
	stats := map[string]int{}
	for _, seed := range seeds {
		var failure string
		synctest.Test(t, func(t *testing.T) {
			failure = runSchedule(t, seed, stats, versionless)
		})
		if failure != "" {
			t.Fatalf("schedule with seed %d broke an invariant (replay: CACHEWIRE_MODEL_SEED=%d go test -race -run '%s$' ./node/):\n%s",
				seed, seed, name, failure)
		}
	}
	t.Logf("%d schedules: %v", len(seeds), stats)
	behind := "origin-behind"
	if versionless {
		behind = "versionless min_version"
	}
	if len(seeds) > 100 && (stats["served from ORIGIN"] == 0 || stats["served from L2"] == 0 || stats[behind] == 0 || stats["origin-behind while it was not"] != 0 || stats["shared loads"] == 0 || stats["converged keys"] == 0) {
		t.Fatalf("the schedules did not exercise the read path as intended: %v", stats)
	}
}

// droppedValue is a value an EVICT dropped (the origin now holds another at the same version).
type droppedValue struct {
	key     string
	version uint64
	value   string
	step    int // when L1 applied the EVICT (or a reset skipped it)
}

type modelGet struct {
	key        string
	minVersion uint64
	floor      uint64 // the highest version served or applied before the read began
	// satisfiable: the origin held min_version or newer when the read began.
	satisfiable bool
	ch          chan result
	step        int
}

// truthOf is the version a value names: "v5", or "v5r" ("v5rr", ...) once repaired in place at 5.
func truthOf(value []byte) (uint64, bool) {
	s := strings.TrimRight(strings.TrimPrefix(string(value), "v"), "r")
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

func runSchedule(t *testing.T, seed uint64, stats map[string]int, versionless bool) string {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	policy := []invalidation.Policy{invalidation.RefreshHeld, invalidation.RefreshAll, invalidation.EvictOnly}[rng.IntN(3)]
	forgets := policy != invalidation.RefreshAll // whether the tiers may forget (see above)
	l1cfg := lru.Config{MaxEntries: 1 + rng.IntN(3), MaxTombstones: 1 + rng.IntN(3), TTLJitter: -1}
	if !forgets {
		l1cfg.MaxEntries, l1cfg.MaxTombstones = 100, 100
	}
	b := newBareNode(t, l1cfg)
	b.origin.readAtRelease = rng.IntN(2) == 0
	b.origin.versionless = versionless
	b.cfg.Policy = policy
	redisLoses := forgets
	const maxStaleness = 5 * time.Second // the node's default, which the bare node keeps

	keys := []string{"a", "b", "c"}[:1+rng.IntN(3)]
	var (
		pending  []invalidation.Event // committed at the origin, not yet published
		log      []invalidation.Event
		l1Pos    int // events applied to L1
		l2Pos    int // events applied to L2 by the group
		need     = 0 // L2 is used only once l2Pos >= need
		hold     = 0 // and l2Pos >= hold: past every EVICT L1 applied (holdL2)
		caughtUp = time.Now()
		fence    = b.l1.Fence()
		version  uint64
		served   = map[string]uint64{}   // highest version answered (not stale) or applied
		deleted  = map[string][]uint64{} // versionless: the versions at which each key was deleted
		gets     []*modelGet
		dropped  []droppedValue           // values EVICTs dropped, once L1 applied (or skipped) the EVICT
		evicts   = map[int]droppedValue{} // log index of an EVICT -> the value it drops
		trace    []string
		failures []string
	)
	var mu sync.Mutex // the node's goroutines read the gating state
	b.trusted = func(string) bool {
		mu.Lock()
		defer mu.Unlock()
		if f := b.l1.Fence(); f != fence { // L1 forgot a young version or was flushed
			fence, need = f, l1Pos
			return false
		}
		return l2Pos >= need && l2Pos >= hold && time.Since(caughtUp) <= maxStaleness
	}
	b.l2.onEpoch = func() { mu.Lock(); need = l1Pos; mu.Unlock() }
	note := func(format string, args ...any) { trace = append(trace, fmt.Sprintf(format, args...)) }

	settle := func(step int) {
		synctest.Wait()
		rest := gets[:0]
		for _, g := range gets {
			select {
			case r := <-g.ch:
				note("step %d: get(%s, min %d) started at step %d -> %v", step, g.key, g.minVersion, g.step, r)
				if r.err != nil {
					if versionless && errors.Is(r.err, errVersionless) {
						if g.minVersion == 0 {
							failures = append(failures, fmt.Sprintf("get(%s, min 0): %v", g.key, r.err))
						}
						stats["versionless min_version"]++
						continue
					}
					if errors.Is(r.err, errOriginBehind) {
						if g.satisfiable {
							stats["origin-behind while it was not"]++
							failures = append(failures, fmt.Sprintf("get(%s, min %d): %v, but the origin was at least that new when the read began", g.key, g.minVersion, r.err))
						}
						stats["origin-behind"]++
						continue
					} else if !errors.Is(r.err, errChanging) && !errors.Is(r.err, errOriginUnavailable) {
						failures = append(failures, fmt.Sprintf("get(%s, min %d): unexpected error %v", g.key, g.minVersion, r.err))
					}
					stats["errors"]++
					continue
				}
				stats["served from "+strings.TrimPrefix(r.r.tier.String(), "TIER_")]++
				if r.r.version < g.minVersion && r.r.tier != pb.Tier_TIER_UNSPECIFIED {
					failures = append(failures, fmt.Sprintf("read-your-writes: get(%s, min %d) -> %v", g.key, g.minVersion, r))
				}
				if versionless && r.r.tier != pb.Tier_TIER_UNSPECIFIED {
					failures = append(failures, checkVersionless(g, r, deleted[g.key])...)
				} else if !r.r.stale && r.r.version < g.floor {
					failures = append(failures, fmt.Sprintf("monotonic: get(%s) started at step %d -> %v, but the node had served or applied version %d before", g.key, g.step, r, g.floor))
				}
				if !r.r.stale {
					served[g.key] = max(served[g.key], r.r.version)
					if truth, ok := truthOf(r.r.value); ok && versionless && r.r.found {
						served[g.key] = max(served[g.key], truth)
					}
					for _, d := range dropped {
						if d.key == g.key && g.step > d.step && r.r.found && (r.r.version == d.version || versionless) && string(r.r.value) == d.value {
							failures = append(failures, fmt.Sprintf("evict: get(%s) started at step %d -> %v %q, the value the EVICT applied at step %d dropped", g.key, g.step, r, r.r.value, d.step))
						}
					}
				}
			default:
				rest = append(rest, g)
			}
		}
		gets = rest
	}

	steps := 20 + rng.IntN(40)
	for step := 0; step < steps; step++ {
		key := keys[rng.IntN(len(keys))]
		switch x := rng.IntN(105); {
		case x < 15: // a write: the origin changes, its event goes to the log
			version++
			e := invalidation.Event{Key: key, Version: version, Op: invalidation.OpUpsert}
			switch rng.IntN(4) {
			case 0:
				e.Op = invalidation.OpDelete
				b.origin.del(key, version)
				deleted[key] = append(deleted[key], version)
			case 1:
				b.origin.put(key, version, "v"+strconv.FormatUint(version, 10))
			default:
				b.origin.put(key, version, "v"+strconv.FormatUint(version, 10))
				e.Value, e.HasValue = []byte("v"+strconv.FormatUint(version, 10)), true
			}
			pending = append(pending, e)
			note("step %d: write %s@%d (%s) committed", step, key, version, e.Op)
		case x < 20: // the relay publishes the oldest committed write
			if len(pending) > 0 {
				log = append(log, pending[0])
				pending = pending[1:]
				note("step %d: published %s@%d", step, log[len(log)-1].Key, log[len(log)-1].Version)
			}
		case x < 32: // the subscriber applies the next event to L1
			if l1Pos < len(log) {
				e := log[l1Pos]
				mu.Lock()
				l1Pos++
				if e.Op == invalidation.OpEvict {
					hold = max(hold, l1Pos)
				}
				mu.Unlock()
				b.applyL1(e)
				served[e.Key] = max(served[e.Key], e.Version)
				if d, ok := evicts[l1Pos-1]; ok {
					d.step = step
					dropped = append(dropped, d)
				}
				note("step %d: L1 applies %s@%d (%s)", step, e.Key, e.Version, e.Op)
			}
		case x < 44: // the group applies the next event to L2
			if l2Pos < len(log) {
				e := log[l2Pos]
				mu.Lock()
				l2Pos++
				mu.Unlock()
				b.l2.Apply(context.Background(), &e, policy)
				note("step %d: L2 applies %s@%d (%s)", step, e.Key, e.Version, e.Op)
			}
		case x < 70: // a read: plain, or with the version last written (read-your-writes)
			var minV uint64
			cur := b.origin.state(key).Version
			switch rng.IntN(10) {
			case 0, 1, 2, 3:
				minV = cur
			case 4: // ahead of the origin: a lagging origin replica, or a caller's mistake
				minV = cur + 1 + uint64(rng.IntN(2))
			}
			g := &modelGet{key: key, minVersion: minV, floor: served[key], step: step, satisfiable: minV <= cur}
			g.ch = b.startGet(key, minV)
			gets = append(gets, g)
			note("step %d: get(%s, min %d) begins (floor %d)", step, key, minV, g.floor)
		case x < 88: // one held origin load returns
			if n := b.origin.numPending(); n > 0 {
				b.origin.releaseAt(rng.IntN(n))
				note("step %d: a load returns", step)
			}
		case x < 89 && forgets: // time passes: loads time out, L1's versions grow old
			d := time.Duration(1+rng.IntN(40)) * time.Second
			time.Sleep(d)
			note("step %d: %v pass", step, d)
		case x < 91: // the node loses or regains its freshness (Kafka unreachable)
			b.fresh = !b.fresh
			note("step %d: fresh=%v", step, b.fresh)
		case x < 92: // the origin goes down or comes back
			b.origin.mu.Lock()
			b.origin.down = !b.origin.down
			note("step %d: origin down=%v", step, b.origin.down)
			b.origin.mu.Unlock()
		case x < 93: // Redis fills start or stop failing
			b.l2.mu.Lock()
			b.l2.failFills = !b.l2.failFills
			note("step %d: Redis fills fail=%v", step, b.l2.failFills)
			b.l2.mu.Unlock()
		case x >= 100: // the origin's value is repaired in place, and an EVICT is published
			unpublished := false
			for _, e := range pending {
				unpublished = unpublished || e.Key == key
			}
			if unpublished { // the log would still carry the value to be dropped
				break
			}
			cur := b.origin.state(key)
			d := droppedValue{key: key, version: cur.Version, value: string(cur.Value)}
			if cur.Found {
				b.origin.put(key, cur.Version, d.value+"r")
				evicts[len(log)] = d
			}
			log = append(log, invalidation.Event{Key: key, Op: invalidation.OpEvict})
			stats["evicts"]++
			note("step %d: %s@%d repaired in place (%v), EVICT published", step, key, cur.Version, cur.Found)
		case x < 95 && forgets: // a gap in the event stream: L1 flushed, resumes at the log end
			b.l1.Flush()
			mu.Lock()
			for i := l1Pos; i < len(log); i++ {
				if d, ok := evicts[i]; ok { // skipped: L2 is not used until the group is past it
					d.step = step
					dropped = append(dropped, d)
				}
			}
			l1Pos = len(log)
			mu.Unlock()
			note("step %d: L1 reset", step)
		case x < 97 && redisLoses: // Redis restarts empty (or FLUSHALL)
			b.l2.wipe()
			note("step %d: Redis wiped", step)
		case redisLoses: // failover to a replica that missed the newest writes: some keys roll back
			rollback := map[string]memEntry{}
			for k, e := range b.l2.entries {
				if e.version > 1 && rng.IntN(2) == 0 {
					rollback[k] = memEntry{version: e.version - 1, kind: 'V', value: []byte("rolled back"), epoch: b.l2.epoch}
				}
			}
			b.l2.failover(rollback)
			note("step %d: Redis failed over (%d keys rolled back)", step, len(rollback))
		}
		settle(step)
		mu.Lock()
		if l2Pos >= l1Pos && l2Pos >= need && l2Pos >= hold {
			caughtUp = time.Now() // what the node's poll of the group's offsets would see
		}
		mu.Unlock()
		if len(failures) > 0 {
			break
		}
	}
	// Drain: let every load return.
	b.origin.mu.Lock()
	b.origin.down = false
	b.origin.mu.Unlock()
	for i := 0; len(gets) > 0 && i < 1000; i++ {
		if b.origin.numPending() > 0 {
			b.origin.releaseAt(0)
		}
		settle(steps + i)
	}
	if len(gets) > 0 {
		failures = append(failures, fmt.Sprintf("%d reads never finished", len(gets)))
	}
	// Converge: every write is published and applied to both tiers, the node is fresh, and
	// every key then reads as the origin holds it (nothing stale was left in a tier).
	if len(failures) == 0 {
		log = append(log, pending...)
		pending = nil
		b.l2.mu.Lock()
		b.l2.failFills = false
		b.l2.mu.Unlock()
		for ; l1Pos < len(log); l1Pos++ {
			b.applyL1(log[l1Pos])
		}
		for ; l2Pos < len(log); l2Pos++ {
			b.l2.Apply(context.Background(), &log[l2Pos], policy)
		}
		mu.Lock()
		caughtUp = time.Now()
		mu.Unlock()
		b.fresh = true
		note("end: every write published and applied")
		for _, key := range keys {
			g := &modelGet{key: key, floor: served[key], step: steps + 1000, ch: b.startGet(key, 0)}
			synctest.Wait()
			for b.origin.numPending() > 0 {
				b.origin.releaseAt(0)
				synctest.Wait()
			}
			r := recv(t, g.ch)
			want := b.origin.state(key)
			note("end: get(%s) -> %v %q; the origin holds %q found=%v", key, r, r.r.value, want.Value, want.Found)
			if r.err != nil || r.r.stale || r.r.found != want.Found || (want.Found && string(r.r.value) != string(want.Value)) {
				failures = append(failures, fmt.Sprintf("converged: get(%s) -> %v %q, but the origin holds %q (found %v) and every event was applied", key, r, r.r.value, want.Value, want.Found))
			} else {
				stats["converged keys"]++
			}
		}
	}
	if calls := b.origin.numCalls(); calls > 0 {
		stats["loads"] += calls
	}
	stats["shared loads"] += int(b.flight.joined.Load())
	if len(failures) == 0 {
		return ""
	}
	return strings.Join(failures, "\n") + "\nschedule:\n  " + strings.Join(trace, "\n  ")
}

// checkVersionless checks an answer served (from any tier) when the origin is versionless, by
// the version its value names (found) or the deletions the key went through (not found).
func checkVersionless(g *modelGet, r result, deletes []uint64) []string {
	var fails []string
	if r.r.found {
		truth, ok := truthOf(r.r.value)
		switch {
		case !ok:
			fails = append(fails, fmt.Sprintf("get(%s) -> %v %q: a value the origin never held", g.key, r, r.r.value))
		case r.r.version > truth:
			fails = append(fails, fmt.Sprintf("label: get(%s) -> %v %q: labelled above the version it holds", g.key, r, r.r.value))
		case !r.r.stale && truth < g.floor:
			fails = append(fails, fmt.Sprintf("monotonic: get(%s) started at step %d -> %v %q, but the node had served or applied version %d before", g.key, g.step, r, r.r.value, g.floor))
		case truth < g.minVersion:
			fails = append(fails, fmt.Sprintf("read-your-writes: get(%s, min %d) -> %v %q", g.key, g.minVersion, r, r.r.value))
		}
		return fails
	}
	// Not found: the key was deleted at a version at least the label (and, unless stale, at least
	// the floor), or never written at all.
	need := r.r.version
	if !r.r.stale {
		need = max(need, g.floor)
	}
	if need == 0 {
		return nil
	}
	for _, d := range deletes {
		if d >= need {
			return nil
		}
	}
	return append(fails, fmt.Sprintf("get(%s) started at step %d -> %v, but the key was not deleted at or after version %d (deletes %v)", g.key, g.step, r, need, deletes))
}
