package checker

import (
	"context"
	"fmt"
	"log/slog"
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
		return 1, window(h, "redis restart", o.MaxStaleness, c.RestartRedis)
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
	Skipped  string
	Faults   int
	Result   *Result
	Err      error
}

// Run runs one scenario on a fresh cluster: the workload for o.Duration with the fault injected
// after a quarter of it, then quiet, then the final reads and the check.
func Run(ctx context.Context, env Env, sc Scenario, o Options) Outcome {
	o.defaults()
	out := Outcome{Scenario: sc.Name}
	c, err := StartCluster(ctx, env, ClusterConfig{Nodes: o.Nodes, Partitions: partitions, MaxStaleness: o.MaxStaleness, Logger: o.Logger})
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
	if err != nil {
		out.Err = fmt.Errorf("inject: %w", err)
		return out
	}
	if err := c.Quiesce(ctx); err != nil {
		out.Err = err
		return out
	}
	keys := make([]string, o.Workload.Keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	// Once quiet, the tiers must converge; the L2 group may need a rebalance's worth of time.
	finals, err := c.Converged(ctx, keys, 30*time.Second)
	if err != nil {
		out.Err = err
		return out
	}
	ops, faults := h.Snapshot()
	// A healthy node may lag by its max_staleness plus the time to fetch and apply.
	out.Result = Check(ops, faults, o.MaxStaleness+500*time.Millisecond, finals)
	return out
}
