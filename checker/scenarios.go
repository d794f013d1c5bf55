package checker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"
)

// Scenario is a fault injected while the workload runs.
type Scenario struct {
	Name string
	// Inject runs once the workload is warm, injects the fault, heals it, and marks its window
	// in h. It returns how many faults it injected.
	Inject func(ctx context.Context, c *Cluster, h *History, o Options) (int, error)
	// Skip, when set, says why the scenario cannot run on env (then it is reported as skipped).
	Skip func(c *Cluster) string
	// Shape, when set, adjusts the run's options before their defaults apply (a workload or an
	// origin the scenario needs).
	Shape func(o *Options)
	// Exercised, when set, checks after the run that it did what the scenario is for (say, that
	// loads were shared); its error fails the run, like an injection's.
	Exercised func(r *Result) error
}

// Options shape a run.
type Options struct {
	// Duration of the workload. If zero, 6 seconds.
	Duration time.Duration
	// Outage is how long a fault lasts. If zero, 2 seconds (the 10 s for Redis is the
	// soak's: cachecheck --outage 10s).
	Outage time.Duration
	// MaxStaleness of the nodes. If zero, 1 second.
	MaxStaleness time.Duration
	// Nodes in the cluster. If zero, 3.
	Nodes int
	// Workload mix; zero fields take Workload's defaults.
	Workload Workload
	// Logger receives the cluster's logs. If nil, they are discarded.
	Logger *slog.Logger
	// OriginDelay slows the origin: each load waits a random time up to it. If zero, loads are
	// not delayed (the cold-key scenarios then use 30 ms).
	OriginDelay time.Duration
	// NoNearCaches makes every session read through the nodes. By default, half of them read
	// through near caches in the application (client.WithNearCache, one per node), each checked
	// as a reader of its own.
	NoNearCaches bool
	// Seed seeds every random choice of the run: the workload's keys, operations and nodes, the
	// origin's delays, and the combined faults' order, delays and outage lengths. If zero, one is
	// taken from the clock; Outcome.Seed says which, so a run can be replayed with it (the
	// interleaving still depends on timing).
	Seed uint64
}

func (o *Options) defaults() {
	if o.Duration == 0 {
		o.Duration = 6 * time.Second
	}
	if o.Outage == 0 {
		o.Outage = 2 * time.Second
	}
	if o.MaxStaleness == 0 {
		o.MaxStaleness = time.Second
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Seed == 0 {
		o.Seed = clockSeed()
	}
	if o.Workload.Seed == 0 {
		o.Workload.Seed = o.Seed
	}
	o.Workload.defaults()
}

const partitions = 3

// window runs f as fault name, marking its window in h from the start of f until settle after f
// returned (the time the system is allowed to take to recover).
func window(h *History, name string, settle time.Duration, f func() error) error {
	h.FaultStart(name)
	err := f()
	time.Sleep(settle)
	h.FaultEnd(name)
	return err
}

// Scenarios are the fault scenarios, in the order the report lists them.
var Scenarios = []Scenario{
	{Name: "no fault", Inject: func(context.Context, *Cluster, *History, Options) (int, error) { return 0, nil }},
	{Name: "cache node SIGKILLed and restarted", Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
		return 1, window(h, "node crash", o.MaxStaleness, func() error {
			c.KillNode(1)
			time.Sleep(o.Outage / 2)
			return c.RestartNode(ctx, 1)
		})
	}},
	{Name: "writer killed between commit and publish", Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
		return 1, window(h, "writer crash", o.MaxStaleness, func() error {
			// With Kafka paused, writes commit but stay in the outbox; the writer dies with them.
			if err := c.PauseKafka(); err != nil {
				return err
			}
			time.Sleep(o.Outage / 2)
			unpublished := c.KillWriter()
			if err := c.ResumeKafka(); err != nil {
				return err
			}
			if unpublished == 0 {
				return fmt.Errorf("the writer had nothing unpublished when killed: the fault did not happen")
			}
			return c.RestartWriter()
		})
	}},
	{Name: "Kafka broker restart", Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
		return 1, window(h, "broker restart", 2*o.MaxStaleness, c.RestartKafka)
	}, Skip: needsCtl(func(c *Cluster) (bool, string) { return c.kfake != nil, c.env.KafkaCtl })},
	{Name: "Redis restarted", Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
		return 1, window(h, "redis restart", o.MaxStaleness, func() error { return c.RestartRedis(0) })
	}, Skip: needsCtl(func(c *Cluster) (bool, string) { return c.mini != nil, c.env.RedisCtl })},
	{Name: "Redis flushed (FLUSHALL)", Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
		return 1, window(h, "redis flush", o.MaxStaleness, func() error { return c.FlushRedis(ctx) })
	}},
	{Name: "Redis unreachable", Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
		return 1, window(h, "redis down", o.MaxStaleness, func() error {
			if err := c.StopRedis(); err != nil {
				return err
			}
			time.Sleep(o.Outage)
			return c.StartRedis()
		})
	}, Skip: needsCtl(func(c *Cluster) (bool, string) { return c.mini != nil, c.env.RedisCtl })},
	{Name: "one node cut off from Kafka beyond max_staleness", Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
		return 1, window(h, "network cut", 2*o.MaxStaleness, func() error {
			c.CutNode(0)
			time.Sleep(max(o.Outage, 2*o.MaxStaleness))
			c.HealNode(0)
			return nil
		})
	}},
	{Name: "L2 consumer-group rebalance", Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
		n := 0
		err := window(h, "rebalance", o.MaxStaleness, func() error {
			for range 3 {
				leave, err := c.AddGroupMember(ctx)
				if err != nil {
					return err
				}
				n++
				time.Sleep(o.Outage / 3)
				leave()
			}
			return nil
		})
		return n, err
	}},
	{Name: "node offsets out of retention", Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
		return 1, window(h, "offset out of range", 2*o.MaxStaleness, func() error {
			c.CutNode(0)
			time.Sleep(o.Outage / 2) // the others keep consuming the workload's events
			if err := c.DeleteRecords(ctx, partitions); err != nil {
				return err
			}
			c.HealNode(0)
			// The node must find its offset out of range and flush L1, or the fault did not happen.
			deadline := time.Now().Add(30 * time.Second)
			for c.Resets(0) == 0 {
				if time.Now().After(deadline) {
					return fmt.Errorf("node 0 never found its offset out of range")
				}
				time.Sleep(20 * time.Millisecond)
			}
			return nil
		})
	}},
	{Name: "combined faults", Inject: combinedFaults, Skip: combinedSkip},
	{Name: "cold keys with a slow origin (shared loads)", Shape: coldKeys, Exercised: sharedLoads,
		Inject: func(context.Context, *Cluster, *History, Options) (int, error) { return 0, nil }},
	{Name: "cold keys with a slow origin under combined faults", Shape: coldKeys, Exercised: sharedLoads,
		Inject: combinedFaults, Skip: combinedSkip},
}

// combinedFaults restarts a node, restarts Redis (it comes back empty), rebalances the L2 group
// (a member joins, then leaves) and pauses Kafka, all in one run: the order, the delay before each
// one starts (up to half an outage, so they may overlap) and each outage's length (up to
// o.Outage) are drawn from o.Seed. Each fault marks its own window.
func combinedFaults(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
	rng := rand.New(rand.NewPCG(o.Seed, 0xfa175))
	victim := rng.IntN(o.Nodes)
	type fault struct {
		name   string
		settle time.Duration
		inject func(outage time.Duration) error
	}
	faults := []fault{
		{"node restart", o.MaxStaleness, func(d time.Duration) error {
			c.KillNode(victim)
			time.Sleep(d)
			return c.RestartNode(ctx, victim)
		}},
		{"redis restart", o.MaxStaleness, c.RestartRedis},
		{"rebalance", o.MaxStaleness, func(d time.Duration) error {
			leave, err := c.AddGroupMember(ctx)
			if err != nil {
				return err
			}
			time.Sleep(d)
			leave()
			return nil
		}},
		{"kafka pause", 2 * o.MaxStaleness, func(d time.Duration) error {
			if err := c.PauseKafka(); err != nil {
				return err
			}
			time.Sleep(d)
			return c.ResumeKafka()
		}},
	}
	rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
	// The whole plan is drawn before anything starts, so it depends on the seed alone.
	gaps, outages := make([]time.Duration, len(faults)), make([]time.Duration, len(faults))
	for i := range faults {
		gaps[i] = time.Duration(rng.Int64N(int64(o.Outage/2) + 1))
		outages[i] = o.Outage/10 + time.Duration(rng.Int64N(int64(o.Outage-o.Outage/10)+1))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(faults))
	for i, f := range faults {
		time.Sleep(gaps[i])
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := window(h, f.name, f.settle, func() error { return f.inject(outages[i]) }); err != nil {
				errs[i] = fmt.Errorf("%s: %w", f.name, err)
			}
		}()
	}
	wg.Wait()
	return len(faults), errors.Join(errs...)
}

// combinedSkip skips the combined faults on real servers without both control scripts (Kafka
// pause, Redis restart).
func combinedSkip(c *Cluster) string {
	if why := needsCtl(func(c *Cluster) (bool, string) { return c.kfake != nil, c.env.KafkaCtl })(c); why != "" {
		return why
	}
	return needsCtl(func(c *Cluster) (bool, string) { return c.mini != nil, c.env.RedisCtl })(c)
}

// coldKeys shapes a run in which most reads miss every cache and wait on a slow origin: many
// keys, which the sessions visit as a herd (see Workload.Herd), so that concurrent misses of a key
// through a node share one origin load.
func coldKeys(o *Options) {
	o.Workload.Keys = max(o.Workload.Keys, 2000)
	o.Workload.Sessions = max(o.Workload.Sessions, 12)
	if o.Workload.Herd == 0 {
		o.Workload.Herd = 4
	}
	if o.OriginDelay == 0 {
		o.OriginDelay = 30 * time.Millisecond
	}
}

// sharedLoads requires that requests shared origin loads: more Gets answered by the origin than
// loads made.
func sharedLoads(r *Result) error {
	if r.OriginGets <= r.OriginLoads {
		return fmt.Errorf("no origin load was shared: %d gets answered by the origin from %d loads", r.OriginGets, r.OriginLoads)
	}
	return nil
}

func needsCtl(f func(*Cluster) (bool, string)) func(*Cluster) string {
	return func(c *Cluster) string {
		if inProcess, ctl := f(c); !inProcess && ctl == "" {
			return "needs the server's control script on real servers (CACHEWIRE_TEST_KAFKA_CTL / CACHEWIRE_TEST_REDIS_CTL)"
		}
		return ""
	}
}

// Outcome is one scenario's result.
type Outcome struct {
	Scenario string
	// Seed is the run's seed (Options.Seed, or the one taken from the clock): pass it back in
	// Options.Seed (cachecheck --seed) to replay the run's choices.
	Seed    uint64
	Skipped string
	Faults  int
	// Started is when the workload started, and Windows the faults' windows.
	Started time.Time
	Windows []Fault
	Result  *Result
	Err     error
	// Diagnostics, when the tiers did not converge: each node's L2 group member, as it stood.
	Diagnostics []string
}

// Timeline describes the fault windows relative to the start of the workload, in order.
func (o Outcome) Timeline() string {
	ws := append([]Fault(nil), o.Windows...)
	sort.Slice(ws, func(i, j int) bool { return ws[i].Start.Before(ws[j].Start) })
	var b strings.Builder
	for i, w := range ws {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s %v..%v", w.Name, w.Start.Sub(o.Started).Round(10*time.Millisecond), w.End.Sub(o.Started).Round(10*time.Millisecond))
	}
	return b.String()
}

// Run runs one scenario on a fresh cluster: the workload for o.Duration (shaped by sc.Shape) with
// the fault injected after a quarter of it, then quiet, then the final reads and the check. The
// outcome names the seed the run used.
func Run(ctx context.Context, env Env, sc Scenario, o Options) Outcome {
	if sc.Shape != nil {
		sc.Shape(&o)
	}
	o.defaults()
	out := Outcome{Scenario: sc.Name, Seed: o.Seed}
	c, err := StartCluster(ctx, env, ClusterConfig{Nodes: o.Nodes, Partitions: partitions, MaxStaleness: o.MaxStaleness, Logger: o.Logger,
		OriginDelay: o.OriginDelay, Seed: o.Seed})
	if err != nil {
		out.Err = err
		return out
	}
	defer c.Close()
	if sc.Skip != nil {
		if why := sc.Skip(c); why != "" {
			out.Skipped = why
			return out
		}
	}
	h := NewHistory(1_000_000)
	wctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	done := make(chan struct{})
	out.Started = time.Now()
	if !o.NoNearCaches {
		o.Workload.Near = c.NearCaches
	}
	go func() {
		defer close(done)
		o.Workload.Run(wctx, h, c.Writer(), c.Caches)
	}()
	select {
	case <-time.After(o.Duration / 4):
	case <-ctx.Done():
	}
	out.Faults, err = sc.Inject(ctx, c, h, o)
	<-done
	loads := c.OriginLoads()
	c.SetOriginDelay(0) // the final reads need not wait
	if err != nil {
		out.Err = fmt.Errorf("inject: %w", err)
		return out
	}
	if err := c.Quiesce(ctx); err != nil {
		out.Err = err
		return out
	}
	// Once quiet, the tiers must converge on every key the workload touched (a key nobody
	// touched holds nothing); the L2 group may need a rebalance's worth of time.
	finals, err := c.Converged(ctx, h.Keys(), 30*time.Second)
	if err != nil {
		out.Err = err
		return out
	}
	if !agree(finals) {
		for i := range c.emb.NodeAddrs {
			if n := c.emb.Node(i); n != nil {
				out.Diagnostics = append(out.Diagnostics, fmt.Sprintf("node %d L2 group member: %+v", i, n.L2GroupStats()))
			}
		}
	}
	ops, faults := h.Snapshot()
	out.Windows = faults
	// A healthy node may lag by its max_staleness plus the time to fetch and apply.
	out.Result = Check(ops, faults, o.MaxStaleness+500*time.Millisecond, finals)
	out.Result.OriginLoads = int(loads)
	if !o.NoNearCaches && o.Workload.Herd == 0 && out.Result.NearGets == 0 { // a herd reads mostly cold keys
		out.Err = errors.New("the near caches answered no Get in process: their sessions only tested the nodes")
	}
	if sc.Exercised != nil {
		if err := sc.Exercised(out.Result); err != nil {
			out.Err = fmt.Errorf("the scenario did not happen: %w", err)
		}
	}
	return out
}
