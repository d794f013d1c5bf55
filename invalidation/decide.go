package invalidation

import "fmt"

// State is what a cache tier knows about one key before an event is applied.
type State struct {
	// Known is false when the tier holds neither a value nor a tombstone for the key.
	Known bool
	// Version is the highest version the tier has seen for the key (value or tombstone).
	Version uint64
	// Tombstone is true when what the tier holds is a tombstone, not a value.
	Tombstone bool
}

// Action is what a tier does with an event.
type Action int8

const (
	// Ignore: the event is a duplicate or older than what the tier holds; nothing changes.
	Ignore Action = iota
	// Evict: replace whatever the tier holds with a tombstone at the event's version, so that no
	// fill older than it can be accepted later.
	Evict
	// Refresh: replace whatever the tier holds with the event's value at the event's version.
	Refresh
)

// String returns the action's name.
func (a Action) String() string {
	switch a {
	case Ignore:
		return "ignore"
	case Evict:
		return "evict"
	case Refresh:
		return "refresh"
	}
	return fmt.Sprintf("action(%d)", int8(a))
}

// Policy says when an UPSERT that carries its value refreshes a tier instead of evicting.
type Policy int8

const (
	// RefreshHeld refreshes keys the tier holds a value for, and writes a tombstone otherwise,
	// so events for keys nobody reads do not fill the cache. The default.
	RefreshHeld Policy = iota
	// RefreshAll stores the value of every UPSERT that carries one, held or not.
	RefreshAll
	// EvictOnly never refreshes: every event writes a tombstone and the next read loads.
	EvictOnly
)

// String returns the policy's flag name.
func (p Policy) String() string {
	switch p {
	case RefreshHeld:
		return "refresh-held"
	case RefreshAll:
		return "refresh-all"
	case EvictOnly:
		return "evict-only"
	}
	return fmt.Sprintf("policy(%d)", int8(p))
}

// ParsePolicy parses a policy's flag name.
func ParsePolicy(s string) (Policy, error) {
	for _, p := range []Policy{RefreshHeld, RefreshAll, EvictOnly} {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("invalidation: unknown refresh policy %q (want refresh-held, refresh-all or evict-only)", s)
}

// Decide is the apply rule every tier follows (docs/design.md, invariants 3 and 4). An event
// changes a tier only when its version is newer than everything the tier has seen for the key,
// so applying an event twice, or an older one after a newer one, changes nothing. A newer
// DELETE or INVALIDATE, or an UPSERT without its value, evicts (writes a tombstone); a newer
// UPSERT with its value refreshes or evicts as the policy says. An EVICT, which has no version,
// turns a held value into a tombstone at the value's version and leaves anything else alone.
// e must be valid.
func Decide(cur State, e *Event, p Policy) Action {
	if e.Op == OpEvict { // drop a held value, keep its version
		if cur.Known && !cur.Tombstone {
			return Evict
		}
		return Ignore
	}
	if cur.Known && e.Version <= cur.Version {
		return Ignore
	}
	if e.Op != OpUpsert || !e.HasValue {
		return Evict
	}
	switch p {
	case RefreshAll:
		return Refresh
	case RefreshHeld:
		if cur.Known && !cur.Tombstone {
			return Refresh
		}
	}
	return Evict
}

// AcceptFill is the fill rule (invariant 3): a tier accepts a value read from a slower tier or
// the origin only when its version is at least the highest version the tier has seen for the key.
// An equal version is accepted: it is the value an invalidation at that version announced.
func AcceptFill(cur State, version uint64) bool {
	return !cur.Known || version >= cur.Version
}
