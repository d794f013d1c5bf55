package checker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cachewire/cachewire/client"
)

// Putter is where a workload's Puts go: the reference writer (*client.Writer), or an adapter for
// a service's own write API (it returns the version it committed; WriteOptions it cannot honour
// are ignored).
type Putter interface {
	Put(ctx context.Context, key string, value []byte, opts ...client.WriteOption) (client.Write, error)
}

// Workload is a concurrent mix of Puts through the writer and Gets through the nodes.
type Workload struct {
	// Sessions run concurrently; each is a client.Session that reads through a random node per
	// Get. If zero, 6.
	Sessions int
	// Keys is the number of keys written and read. If zero, 8.
	Keys int
	// KeyPrefix starts every key's name, followed by its number. If empty, "key-".
	KeyPrefix string
	// PutRatio is the share of operations that are Puts. If zero, 0.3.
	PutRatio float64
	// MinVersionRatio is the share of Gets that carry the session's min_version (the rest are
	// plain reads). If zero, 0.5.
	MinVersionRatio float64
	// Pause is how long each session waits between operations. If zero, 2 ms.
	Pause time.Duration
	// MaxOps bounds the operations per session. If zero, 100,000.
	MaxOps int
	// Herd, when set, makes the sessions move through the keys together: at any moment most
	// operations pick one of the same Herd keys, and every HerdStep the sessions move on to Herd
	// keys nobody has touched yet (wrapping around after Keys). So reads mostly miss the caches,
	// and concurrent misses of one key through one node can share an origin load. One operation in
	// five picks any key the herd has passed (cached by some nodes, cold on others). If zero,
	// every operation picks any of the Keys.
	Herd int
	// HerdStep is how long the herd stays on one group of keys. If zero, 25 ms.
	HerdStep time.Duration
	// Seed seeds the sessions' choices (keys, operations, nodes). If zero, one is taken from the
	// clock. The same seed makes the same choices; the interleaving still depends on timing.
	Seed uint64
	// Near, when set, returns clients with a near cache, one per node in the order of Run's
	// nodes: every other session (the odd-numbered ones) reads through them. A near cache is
	// recorded as a node of its own, number len(nodes)+n for node n's, so that monotonic reads
	// are checked per near cache (per application process), as per node. If nil, every session
	// reads through the nodes.
	Near func() []*client.Cache
}

func (w *Workload) defaults() {
	if w.Sessions == 0 {
		w.Sessions = 6
	}
	if w.Keys == 0 {
		w.Keys = 8
	}
	if w.KeyPrefix == "" {
		w.KeyPrefix = "key-"
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
	if w.HerdStep == 0 {
		w.HerdStep = 25 * time.Millisecond
	}
	if w.Seed == 0 {
		w.Seed = clockSeed()
	}
}

// clockSeed returns a non-zero seed from the clock.
func clockSeed() uint64 { return uint64(time.Now().UnixNano()) | 1 }

// key picks the key of the next operation, elapsed into the run.
func (w Workload) key(rng *rand.Rand, elapsed time.Duration) string {
	if w.Herd == 0 {
		return fmt.Sprintf("%s%d", w.KeyPrefix, rng.IntN(w.Keys))
	}
	step := int(elapsed / w.HerdStep)
	if rng.IntN(5) == 0 {
		return fmt.Sprintf("%s%d", w.KeyPrefix, rng.IntN(min(w.Keys, (step+1)*w.Herd)))
	}
	return fmt.Sprintf("%s%d", w.KeyPrefix, (step*w.Herd+rng.IntN(w.Herd))%w.Keys)
}

// Run drives the workload against the writer and the nodes until ctx ends, recording every
// operation in h. Failed operations (a node being restarted, say) are recorded and the session
// goes on. nodes returns the current clients (nodes may be replaced while it runs).
func (w Workload) Run(ctx context.Context, h *History, writer Putter, nodes func() []*client.Cache) {
	w.defaults()
	start := time.Now()
	var wg sync.WaitGroup
	for s := range w.Sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.Seed, uint64(s)+1))
			readers := nodes
			near := w.Near != nil && s%2 == 1
			if near {
				readers = w.Near
			}
			cs := readers()
			sess := client.NewSession(cs[0], nil) // writes go through writer, and the session Observes them
			for i := 0; i < w.MaxOps && ctx.Err() == nil; i++ {
				key := w.key(rng, time.Since(start))
				if rng.Float64() < w.PutRatio {
					w.put(ctx, h, writer, sess, s, key, rng)
				} else {
					cs = readers()
					n := rng.IntN(len(cs))
					id := n
					if near {
						id = len(cs) + n // a near cache is a reader of its own
					}
					w.get(ctx, h, sess.Via(cs[n]), cs[n], s, id, key, rng.Float64() < w.MinVersionRatio)
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

func (w Workload) put(ctx context.Context, h *History, writer Putter, sess *client.Session, s int, key string, rng *rand.Rand) {
	var opts []client.WriteOption
	if rng.IntN(2) == 0 {
		opts = append(opts, client.NoWait())
	}
	op := Op{Kind: Put, Session: s, Node: -1, Key: key, Invoke: time.Now()}
	res, err := writer.Put(ctx, key, []byte(fmt.Sprintf("s%d@%s", s, op.Invoke.Format(time.RFC3339Nano))), opts...)
	if err == nil {
		sess.Observe(key, res.Version)
	}
	op.Complete = time.Now()
	if err != nil {
		if ending(ctx) {
			h.Cut(key) // the run ended mid-call: unknown outcome, not a failure
			return
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
			h.Cut(key)
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
