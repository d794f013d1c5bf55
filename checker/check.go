package checker

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/cachewire/cachewire/client"
)

// Final is what the tiers hold for a key once the workload is quiet.
type Final struct {
	Key string
	// Origin is the version the system of record holds (writes whose call was cut short by the
	// end of the run may have committed without being recorded).
	Origin uint64
	// Nodes[i] is the version node i serves (Get without min_version), or 0 for none.
	Nodes []uint64
	// Redis is the version Redis holds (0: nothing or a tombstone at or above the latest), and
	// RedisValue whether it is a value rather than a tombstone.
	Redis      uint64
	RedisValue bool
}

// Result is what the checker found. Every slice holds human-readable descriptions.
type Result struct {
	Ops, Puts, Gets, Failed int
	Faults                  int
	// MinVersionViolations: a Get with min_version returned an older version. Must be empty.
	MinVersionViolations []string
	// StaleReads: a Get returned a version older than a write acked more than the bound before
	// it was invoked, while no fault was active, without saying stale=true. Must be empty.
	StaleReads []string
	// FlaggedStale counts Gets the node marked stale=true (honest, not violations).
	FlaggedStale int
	// NonMonotonic: a session, or a node, returned an older version of a key after a newer one
	// (the reads not overlapping in time).
	NonMonotonicSession, NonMonotonicNode []string
	// LostWrites: an acked write whose version (or a newer one) never became visible.
	LostWrites []string
	// NotConverged: once quiet, a node or Redis holds something other than the latest version.
	NotConverged []string
	// OriginGets counts the Gets the origin answered (tier ORIGIN), and OriginLoads the loads the
	// nodes made during the workload (set by Run; Check alone leaves it 0). Fewer loads than
	// origin answers means concurrent misses shared loads.
	OriginGets, OriginLoads int
	// NearGets counts the Gets a near cache answered in process (tier NEAR).
	NearGets int
	// Errors samples the errors of failed operations (at most 10).
	Errors []string
	// Staleness is, per acked write and node, the time from the ack until the first Get through
	// that node returned it or newer (an upper bound: it depends on how often keys are read).
	Staleness    []time.Duration
	MaxStaleness time.Duration
}

// OK reports whether the invariants held.
func (r *Result) OK() bool {
	return len(r.MinVersionViolations) == 0 && len(r.StaleReads) == 0 && len(r.LostWrites) == 0 &&
		len(r.NotConverged) == 0 && len(r.NonMonotonicSession) == 0 && len(r.NonMonotonicNode) == 0
}

// Summary is a one-line description of r.
func (r *Result) Summary() string {
	return fmt.Sprintf("%d ops (%d puts, %d gets, %d failed), %d faults: %d min_version violations, %d stale reads "+
		"(%d flagged stale), %d non-monotonic (session %d, node %d), %d lost writes, %d not converged, max staleness %v, "+
		"%d gets answered by the origin from %d origin loads, %d by near caches",
		r.Ops, r.Puts, r.Gets, r.Failed, r.Faults, len(r.MinVersionViolations), len(r.StaleReads), r.FlaggedStale,
		len(r.NonMonotonicSession)+len(r.NonMonotonicNode), len(r.NonMonotonicSession), len(r.NonMonotonicNode),
		len(r.LostWrites), len(r.NotConverged), r.MaxStaleness, r.OriginGets, r.OriginLoads, r.NearGets)
}

// Check analyses a history. bound is the staleness a node may show while healthy (its
// max_staleness plus the event path's latency); finals are the tiers' contents once quiet.
func Check(ops []Op, faults []Fault, bound time.Duration, finals []Final) *Result {
	r := &Result{Ops: len(ops), Faults: len(faults)}
	var puts, gets []Op
	for _, op := range ops {
		switch {
		case op.Err != "":
			r.Failed++
			if len(r.Errors) < 10 {
				r.Errors = append(r.Errors, fmt.Sprintf("%s %s via node %d: %s", op.Kind, op.Key, op.Node, op.Err))
			}
		case op.Kind == Put:
			puts = append(puts, op)
		case op.Kind == Get:
			gets = append(gets, op)
		}
	}
	r.Puts, r.Gets = len(puts), len(gets)
	sort.Slice(puts, func(i, j int) bool { return puts[i].Complete.Before(puts[j].Complete) })
	sort.Slice(gets, func(i, j int) bool { return gets[i].Invoke.Before(gets[j].Invoke) })

	faultDuring := func(from, to time.Time) bool {
		for _, f := range faults {
			if f.Start.Before(to) && f.End.After(from) {
				return true
			}
		}
		return false
	}
	putsByKey := map[string][]Op{}
	for _, p := range puts {
		putsByKey[p.Key] = append(putsByKey[p.Key], p)
	}

	for _, g := range gets {
		if g.Stale {
			r.FlaggedStale++
		}
		if g.Tier == string(client.TierNear) {
			r.NearGets++
		}
		if g.Tier == string(client.TierOrigin) {
			r.OriginGets++
		}
		if g.MinVersion > 0 && g.Version < g.MinVersion {
			r.MinVersionViolations = append(r.MinVersionViolations, fmt.Sprintf(
				"session %d node %d: %s min_version %d returned version %d from %s", g.Session, g.Node, g.Key, g.MinVersion, g.Version, g.Tier))
		}
		if g.Stale {
			continue
		}
		// The newest write acked at least bound before this read began.
		var newest *Op
		for i := range putsByKey[g.Key] {
			p := &putsByKey[g.Key][i]
			if p.Complete.Add(bound).After(g.Invoke) {
				break
			}
			if newest == nil || p.Version > newest.Version {
				newest = p
			}
		}
		if newest != nil && g.Version < newest.Version && !faultDuring(newest.Complete, g.Complete) {
			r.StaleReads = append(r.StaleReads, fmt.Sprintf(
				"session %d node %d: %s returned version %d from %s, %v after version %d was acked",
				g.Session, g.Node, g.Key, g.Version, g.Tier, g.Invoke.Sub(newest.Complete).Round(time.Millisecond), newest.Version))
		}
	}

	var sessionGets []Op
	for _, g := range gets {
		if g.Session >= 0 {
			sessionGets = append(sessionGets, g)
		}
	}
	r.NonMonotonicSession = monotonic(sessionGets, func(o Op) string { return fmt.Sprintf("session %d", o.Session) })
	r.NonMonotonicNode = monotonic(gets, func(o Op) string { return fmt.Sprintf("node %d", o.Node) })

	// Staleness: per acked write and node, time until a read through that node saw it.
	nodes := map[int]bool{}
	for _, g := range gets {
		nodes[g.Node] = true
	}
	for _, p := range puts {
		for n := range nodes {
			for _, g := range gets {
				if g.Node == n && g.Key == p.Key && g.Complete.After(p.Complete) && g.Version >= p.Version {
					d := max(g.Complete.Sub(p.Complete), 0)
					r.Staleness = append(r.Staleness, d)
					r.MaxStaleness = max(r.MaxStaleness, d)
					break
				}
			}
		}
	}
	slices.Sort(r.Staleness)

	// Lost writes and convergence, from the final state.
	latest := map[string]uint64{}
	for _, p := range puts {
		latest[p.Key] = max(latest[p.Key], p.Version)
	}
	for _, f := range finals {
		latest[f.Key] = max(latest[f.Key], f.Origin)
	}
	seen := map[string]uint64{}
	for _, f := range finals {
		for _, v := range f.Nodes {
			seen[f.Key] = max(seen[f.Key], v)
		}
	}
	for _, g := range gets {
		seen[g.Key] = max(seen[g.Key], g.Version)
	}
	acked := map[string]uint64{}
	for _, p := range puts {
		acked[p.Key] = max(acked[p.Key], p.Version)
	}
	for key, v := range acked {
		if seen[key] < v {
			r.LostWrites = append(r.LostWrites, fmt.Sprintf("%s: version %d was acked but never served (newest seen %d)", key, v, seen[key]))
		}
	}
	for _, f := range finals {
		want := latest[f.Key]
		for i, v := range f.Nodes {
			if v != want {
				r.NotConverged = append(r.NotConverged, fmt.Sprintf("node %d serves %s@%d, latest is %d", i, f.Key, v, want))
			}
		}
		if f.RedisValue && f.Redis != want {
			r.NotConverged = append(r.NotConverged, fmt.Sprintf("Redis holds %s@%d, latest is %d", f.Key, f.Redis, want))
		}
	}
	sort.Strings(r.LostWrites)
	sort.Strings(r.NotConverged)
	return r
}

// monotonic finds, per group (session or node) and key, a read that returned an older version
// than a read that completed before it began. Reads marked stale=true are left out on both sides:
// such an answer may go back (invariant 10), and the node vouches for nothing a later read would
// have to keep up with.
func monotonic(gets []Op, group func(Op) string) []string {
	type gk struct{ g, k string }
	last := map[gk]Op{}
	var out []string
	// gets are sorted by invocation; a read is compared with the newest one that completed
	// before it was invoked.
	pending := map[gk][]Op{}
	for _, g := range gets {
		if g.Stale {
			continue
		}
		id := gk{group(g), g.Key}
		// Fold in earlier reads of this group and key that completed before g began.
		rest := pending[id][:0]
		for _, p := range pending[id] {
			if !p.Complete.After(g.Invoke) {
				if l, ok := last[id]; !ok || p.Version > l.Version {
					last[id] = p
				}
			} else {
				rest = append(rest, p)
			}
		}
		pending[id] = rest
		if l, ok := last[id]; ok && g.Version < l.Version {
			out = append(out, fmt.Sprintf("%s: %s went back from version %d (%s) to %d (%s)", id.g, g.Key, l.Version, l.Tier, g.Version, g.Tier))
		}
		pending[id] = append(pending[id], g)
	}
	return out
}
