package node

import "sync"

// maxL2Gaps bounds the keys l2gaps tracks; past it the node stops using L2 altogether.
const maxL2Gaps = 65536

// l2gaps remembers, per key, a version this node served (read from the origin) that Redis may
// not hold, because the fill failed (Redis down, a timeout) or was refused for an older epoch.
// While the origin is ahead of the event log, such a version exists only in L1 and at the
// origin; once L1 forgets it, a Redis still holding an older version would send a reader back in
// time. So the node does not read a key from L2 while it has a gap there, until an event at
// that version or newer reaches L1 (the shared group then writes it to Redis too, and L1 covers
// the group's lag). If more than maxL2Gaps keys have gaps, the node cannot keep track and stops
// using L2 until it restarts: reads go to the origin, which is always safe.
//
// It also remembers keys this node evicted through the Evict RPC while Redis refused the EVICT:
// Redis keeps the value at the version L1 kept, which L1 would accept back, until this node's
// subscriber delivers the EVICT (and holds L2 until the group has applied it).
type l2gaps struct {
	mu       sync.Mutex
	m        map[string]uint64
	evicting map[string]struct{}
	overflow bool
}

// add records that Redis may lack version of key.
func (g *l2gaps) add(key string, version uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]uint64{}
	}
	if v, ok := g.m[key]; ok {
		g.m[key] = max(v, version)
		return
	}
	if len(g.m)+len(g.evicting) >= maxL2Gaps {
		g.overflow = true
		return
	}
	g.m[key] = version
}

// evictPending records that Redis may still hold the value of key that this node evicted.
func (g *l2gaps) evictPending(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.evicting == nil {
		g.evicting = map[string]struct{}{}
	}
	if _, ok := g.evicting[key]; ok {
		return
	}
	if len(g.m)+len(g.evicting) >= maxL2Gaps {
		g.overflow = true
		return
	}
	g.evicting[key] = struct{}{}
}

// evictApplied is told of an EVICT of key that L1 applied from the event stream (after the
// partition's L2 hold was raised for it).
func (g *l2gaps) evictApplied(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.evicting, key)
}

// applied is told of an event L1 applied: it closes the key's gap when the event is that new.
func (g *l2gaps) applied(key string, version uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if v, ok := g.m[key]; ok && version >= v {
		delete(g.m, key)
	}
}

// blocks reports whether L2 must not serve key.
func (g *l2gaps) blocks(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.overflow {
		return true
	}
	if _, ok := g.evicting[key]; ok {
		return true
	}
	_, ok := g.m[key]
	return ok
}

func (g *l2gaps) len() (n int, overflow bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.m) + len(g.evicting), g.overflow
}
