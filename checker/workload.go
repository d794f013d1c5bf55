package checker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cachewire/cachewire/client"
)

// Workload is a concurrent mix of Puts through the writer and Gets through the nodes.
type Workload struct {
	// Sessions run concurrently; each is a client.Session that reads through a random node per
	// Get. If zero, 6.
	Sessions int
	// Keys is the number of keys written and read. If zero, 8.
	Keys int
	// PutRatio is the share of operations that are Puts. If zero, 0.3.
	PutRatio float64
	// MinVersionRatio is the share of Gets that carry the session's min_version (the rest are
	// plain reads). If zero, 0.5.
	MinVersionRatio float64
	// Pause is how long each session waits between operations. If zero, 2 ms.
	Pause time.Duration
	// MaxOps bounds the operations per session. If zero, 100,000.
	MaxOps int
}

func (w *Workload) defaults() {
	if w.Sessions == 0 {
		w.Sessions = 6
	}
	if w.Keys == 0 {
		w.Keys = 8
	}
	if w.PutRatio == 0 {
		w.PutRatio = 0.3
	}
	if w.MinVersionRatio == 0 {
		w.MinVersionRatio = 0.5
	}
	if w.Pause == 0 {
		w.Pause = 2 * time.Millisecond
	}
	if w.MaxOps == 0 {
		w.MaxOps = 100_000
	}
}

// Run drives the workload against the writer and the nodes until ctx ends, recording every
// operation in h. Failed operations (a node being restarted, say) are recorded and the session
// goes on. nodes returns the current clients (nodes may be replaced while it runs).
func (w Workload) Run(ctx context.Context, h *History, writer *client.Writer, nodes func() []*client.Cache) {
	w.defaults()
	var wg sync.WaitGroup
	for s := range w.Sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(s)+1, uint64(time.Now().UnixNano())))
			cs := nodes()
			sess := client.NewSession(cs[0], writer)
			for i := 0; i < w.MaxOps && ctx.Err() == nil; i++ {
				key := fmt.Sprintf("key-%d", rng.IntN(w.Keys))
				if rng.Float64() < w.PutRatio {
					w.put(ctx, h, sess, s, key, rng)
				} else {
					cs = nodes()
					n := rng.IntN(len(cs))
					w.get(ctx, h, sess.Via(cs[n]), cs[n], s, n, key, rng.Float64() < w.MinVersionRatio)
				}
				select {
				case <-ctx.Done():
				case <-time.After(w.Pause):
				}
			}
		}()
	}
	wg.Wait()
}

func (w Workload) put(ctx context.Context, h *History, sess *client.Session, s int, key string, rng *rand.Rand) {
	var opts []client.WriteOption
	if rng.IntN(2) == 0 {
		opts = append(opts, client.NoWait())
	}
	op := Op{Kind: Put, Session: s, Node: -1, Key: key, Invoke: time.Now()}
	res, err := sess.Put(ctx, key, []byte(fmt.Sprintf("s%d@%s", s, op.Invoke.Format(time.RFC3339Nano))), opts...)
	op.Complete = time.Now()
	if err != nil {
		if ending(ctx) {
			return // the run ended mid-call: unknown outcome, not a failure
		}
		op.Err = err.Error()
	} else {
		op.Version, op.Published = res.Version, res.Published
	}
	h.Add(op)
}

// get reads key through node n: with the session's floor (min_version) when withMin, else as a
// plain read outside the session (recorded with Session -1: no session guarantee applies).
func (w Workload) get(ctx context.Context, h *History, sess *client.Session, node *client.Cache, s, n int, key string, withMin bool) {
	op := Op{Kind: Get, Session: s, Node: n, Key: key, Invoke: time.Now()}
	var it client.Item
	var err error
	if withMin {
		op.MinVersion = sess.Version(key)
		it, err = sess.Get(ctx, key)
	} else {
		op.Session = -1
		it, err = node.Get(ctx, key)
	}
	op.Complete = time.Now()
	if err != nil {
		if ending(ctx) {
			return
		}
		op.Err = err.Error()
		h.Add(op)
		return
	}
	op.Version, op.Found, op.Tier, op.Stale = it.Version, it.Found, string(it.Tier), it.Stale
	h.Add(op)
}

// ending reports whether the run's context has ended or is about to: a call cut short by the
// end of the run has an unknown outcome, not a failure. (gRPC can fail a call on its deadline a
// moment before the context reports it.)
func ending(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < 100*time.Millisecond
}
