package node

import (
	"context"
	"sync"
	"sync/atomic"
)

// loadSpec is what a shared load promises the requests that join it.
type loadSpec struct {
	// floor: tier entries below it are skipped, so that the load goes on to the origin.
	floor uint64
	// tiers: the load may answer from L1 and L2 (the node can vouch for them). A request that
	// cannot vouch for its tiers only joins loads that read the origin.
	tiers bool
}

// serves reports whether a load made to s can answer a request that needs want.
func (s loadSpec) serves(want loadSpec) bool {
	return s.floor >= want.floor && (!s.tiers || want.tiers)
}

// flight makes concurrent loads of one key share a single call (groupcache's singleflight), with
// three differences. The call runs on its own context, cancelled when every caller waiting on it
// has given up, so a cancelled request stops its origin load unless another request shares it.
// A request joins only a call whose spec serves it. And calls are numbered as they start, so a
// request can ask for a call that started after some point (after it arrived, say): a result
// read before a write was acknowledged cannot prove that write is visible.
type flight struct {
	base context.Context // the node's lifetime: cancelled on Close
	wg   *sync.WaitGroup // the node waits for running calls on Close

	mu    sync.Mutex
	seq   uint64
	calls map[string]*call // the newest call per key

	joined atomic.Uint64 // requests that joined a call another request started
}

type call struct {
	done    chan struct{}
	res     loaded
	err     error
	waiters int
	cancel  context.CancelFunc
	spec    loadSpec
	seq     uint64
}

func newFlight(base context.Context, wg *sync.WaitGroup) *flight {
	return &flight{base: base, wg: wg, calls: make(map[string]*call)}
}

// now returns the number of the last call started: a call numbered above it starts later.
func (g *flight) now() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seq
}

// do returns the result of a call of fn for key made to a spec that serves want and numbered
// above after: it joins the newest call of key if that one qualifies, else starts one. It
// returns ctx's error if ctx ends first, and the number of the call that answered.
func (g *flight) do(ctx context.Context, key string, want loadSpec, after uint64, fn func(ctx context.Context, spec loadSpec) (loaded, error)) (res loaded, seq uint64, err error) {
	g.mu.Lock()
	c, ok := g.calls[key]
	if ok && c.seq > after && c.spec.serves(want) {
		c.waiters++
		g.joined.Add(1)
	} else {
		lctx, cancel := context.WithCancel(g.base)
		g.seq++
		c = &call{done: make(chan struct{}), waiters: 1, cancel: cancel, spec: want, seq: g.seq}
		g.calls[key] = c
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer cancel()
			c.res, c.err = fn(lctx, c.spec)
			g.mu.Lock()
			if g.calls[key] == c {
				delete(g.calls, key)
			}
			g.mu.Unlock()
			close(c.done)
		}()
	}
	g.mu.Unlock()

	select {
	case <-c.done:
		return c.res, c.seq, c.err
	case <-ctx.Done():
		g.mu.Lock()
		c.waiters--
		if c.waiters == 0 {
			// Nobody wants this load any more: stop it, and let the next caller start afresh.
			c.cancel()
			if g.calls[key] == c {
				delete(g.calls, key)
			}
		}
		g.mu.Unlock()
		return loaded{}, c.seq, ctx.Err()
	}
}
