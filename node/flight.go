package node

import (
	"context"
	"sync"
)

// flight makes concurrent loads of one key share a single call (groupcache's singleflight), with
// one difference: the call runs on its own context, which is cancelled when every caller waiting
// on it has given up. A cancelled request thus stops its origin load unless another request
// shares it.
type flight struct {
	base context.Context // the node's lifetime: cancelled on Close
	wg   *sync.WaitGroup // the node waits for running calls on Close

	mu    sync.Mutex
	calls map[string]*call
}

type call struct {
	done    chan struct{}
	res     loaded
	err     error
	waiters int
	cancel  context.CancelFunc
}

func newFlight(base context.Context, wg *sync.WaitGroup) *flight {
	return &flight{base: base, wg: wg, calls: make(map[string]*call)}
}

// do runs fn once for concurrent callers of key and returns its result, or ctx's error if ctx
// ends first. shared reports whether the result came from a call another caller started.
func (g *flight) do(ctx context.Context, key string, fn func(ctx context.Context) (loaded, error)) (res loaded, shared bool, err error) {
	g.mu.Lock()
	c, ok := g.calls[key]
	if ok {
		c.waiters++
	} else {
		lctx, cancel := context.WithCancel(g.base)
		c = &call{done: make(chan struct{}), waiters: 1, cancel: cancel}
		g.calls[key] = c
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer cancel()
			c.res, c.err = fn(lctx)
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
		return c.res, ok, c.err
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
		return loaded{}, ok, ctx.Err()
	}
}
