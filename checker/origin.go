package checker

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachewire/cachewire/node"
)

// slowOrigin is the fault "a slow database behind the writer": it counts the nodes' loads and
// delays each by a random time up to a bound drawn from a seeded source.
type slowOrigin struct {
	loads atomic.Int64
	bound atomic.Int64 // the bound of each load's random delay, in nanoseconds
	mu    sync.Mutex
	rand  *rand.Rand
}

func newSlowOrigin(seed uint64, bound time.Duration) *slowOrigin {
	o := &slowOrigin{rand: rand.New(rand.NewPCG(seed, 0x0de1a7))}
	o.bound.Store(int64(bound))
	return o
}

// wait returns a random delay up to the bound.
func (o *slowOrigin) wait() time.Duration {
	bound := o.bound.Load()
	if bound <= 0 {
		return 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return time.Duration(o.rand.Int64N(bound + 1))
}

// wrap returns l counted and slowed.
func (o *slowOrigin) wrap(l node.Loader) node.Loader {
	return node.LoaderFunc(func(ctx context.Context, key string) (node.Loaded, error) {
		o.loads.Add(1)
		if d := o.wait(); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return node.Loaded{}, ctx.Err()
			}
		}
		return l.Load(ctx, key)
	})
}
