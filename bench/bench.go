// Package bench measures cachewire beside its anchors, in one run on one machine: cached reads
// against a plain Redis GET, propagation against raw kafka-go produce-to-consume, apply rate
// against a raw kafka-go consume, writer throughput against raw kafka-go produce, L1 memory
// against a Go map, and how each grows. cmd/cachebench runs it and writes JSON and the README's
// Markdown table.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/internal/topics"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/redistier"
)

// Scenarios, in the order they run.
var Scenarios = []string{"read", "propagation", "apply", "writer", "memory", "scaling"}

// Config configures a run. Every field documents its zero-value default.
type Config struct {
	// Brokers, when set, name a real Kafka; otherwise each scenario uses an in-process kfake.
	Brokers []string
	// RedisAddr, when set, names a real Redis; otherwise each scenario uses miniredis.
	RedisAddr string
	// Scenarios to run. If empty, all of Scenarios.
	Scenarios []string
	// Duration of each timed step. If zero, 5 seconds.
	Duration time.Duration
	// Smoke shrinks every count (events, entries, rounds) for a seconds-long run that only
	// proves the tool works; its numbers mean nothing.
	Smoke bool
	// Progress receives progress lines. If nil, they are discarded.
	Progress io.Writer
	// Command is recorded in the report.
	Command string
}

type runner struct {
	cfg    Config
	rep    *Report
	log    *slog.Logger
	prefix string
	seq    atomic.Int64
}

// Run runs the configured scenarios and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Duration == 0 {
		cfg.Duration = 5 * time.Second
	}
	if len(cfg.Scenarios) == 0 {
		cfg.Scenarios = Scenarios
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	for _, s := range cfg.Scenarios {
		if !contains(Scenarios, s) {
			return nil, fmt.Errorf("bench: unknown scenario %q (have %s)", s, strings.Join(Scenarios, ", "))
		}
	}
	mode := "embedded (kfake, miniredis)"
	if len(cfg.Brokers) > 0 || cfg.RedisAddr != "" {
		mode = fmt.Sprintf("real (Kafka %s, Redis %s)", orEmbedded(strings.Join(cfg.Brokers, ",")), orEmbedded(cfg.RedisAddr))
	}
	r := &runner{cfg: cfg, log: slog.New(slog.DiscardHandler), prefix: fmt.Sprintf("cwbench-%d", time.Now().UnixNano()),
		rep: &Report{Date: time.Now(), Mode: mode, Command: cfg.Command, Machine: machine()}}
	start := time.Now()
	steps := map[string]func(context.Context) error{
		"read": r.read, "propagation": r.propagation, "apply": r.apply, "writer": r.writer,
		"memory": r.memory, "scaling": r.scaling,
	}
	for i, s := range cfg.Scenarios {
		r.progress("[%d/%d] %s", i+1, len(cfg.Scenarios), s)
		if err := steps[s](ctx); err != nil {
			return r.rep, fmt.Errorf("bench: %s: %w", s, err)
		}
	}
	r.rep.Duration = time.Since(start).Round(time.Second).String()
	return r.rep, nil
}

func orEmbedded(s string) string {
	if s == "" {
		return "embedded"
	}
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func machine() string {
	return fmt.Sprintf("%d CPU, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(r.cfg.Progress, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (r *runner) n(full, smoke int) int {
	if r.cfg.Smoke {
		return smoke
	}
	return full
}

func (r *runner) name(base string) string {
	return fmt.Sprintf("%s-%s-%d", r.prefix, base, r.seq.Add(1))
}

// cluster starts an embedded cluster on the run's Kafka and Redis with its own topic, group and
// key prefix.
func (r *runner) cluster(ctx context.Context, nodes, partitions int) (*embedded.Cluster, error) {
	topic := r.name("events")
	if len(r.cfg.Brokers) > 0 {
		if err := topics.Create(ctx, r.cfg.Brokers, topics.Spec{Name: topic, Partitions: partitions}); err != nil {
			return nil, err
		}
	}
	return embedded.Start(embedded.Config{
		Nodes: nodes, Brokers: r.cfg.Brokers, RedisAddr: r.cfg.RedisAddr, RedisPrefix: r.name("redis") + ":",
		GroupID: r.name("l2"), Topic: topic, Partitions: partitions, Logger: r.log,
		Node: func(_ int, c *node.Config) { c.L1.MaxEntries = 1 << 20; c.L1.MaxBytes = 1 << 30 },
	})
}

// kafkaFor returns brokers for a raw-Kafka measurement: the run's real ones, or a fresh kfake.
func (r *runner) kafkaFor(partitions int, topic string) (brokers []string, stop func(), err error) {
	if len(r.cfg.Brokers) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return r.cfg.Brokers, func() {}, topics.Create(ctx, r.cfg.Brokers, topics.Spec{Name: topic, Partitions: partitions})
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), topic))
	if err != nil {
		return nil, nil, err
	}
	return c.ListenAddrs(), c.Close, nil
}

// drive runs op from conc workers for d and returns the operations done and their latencies.
func drive(ctx context.Context, conc int, d time.Duration, op func(rng *rand.Rand) error) (int, Latencies, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	lats := make([]Latencies, conc)
	errs := make([]error, conc)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for ctx.Err() == nil && len(lats[w]) < 5_000_000 {
				t := time.Now()
				if err := op(rng); err != nil {
					if ctx.Err() == nil {
						errs[w] = err
					}
					return
				}
				lats[w] = append(lats[w], time.Since(t))
			}
		}()
	}
	wg.Wait()
	var all Latencies
	for _, l := range lats {
		all = append(all, l...)
	}
	return len(all), all, errors.Join(errs...)
}

// read: L1 hits through a node over gRPC, against go-redis GET of the same values from the same
// Redis, at concurrency 1 and 16; and BatchGet of 16 keys against MGET.
func (r *runner) read(ctx context.Context) error {
	c, err := r.cluster(ctx, 1, 3)
	if err != nil {
		return err
	}
	defer c.Close()
	keys := r.n(10_000, 200)
	value := make([]byte, 100)
	cache, err := client.NewCache(c.NodeAddrs[0], client.WithTimeout(10*time.Second))
	if err != nil {
		return err
	}
	defer cache.Close()
	rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr, PoolSize: 64})
	defer rdb.Close()
	anchorKey := func(i int) string { return r.prefix + ":anchor:" + strconv.Itoa(i) }
	for i := range keys {
		if _, err := cache.Set(ctx, "k:"+strconv.Itoa(i), value, 1); err != nil {
			return err
		}
		if err := rdb.Set(ctx, anchorKey(i), value, time.Hour).Err(); err != nil {
			return err
		}
	}
	d := r.cfg.Duration
	for _, conc := range []int{1, 16} {
		n, lat, err := drive(ctx, conc, d, func(rng *rand.Rand) error {
			it, err := cache.Get(ctx, "k:"+strconv.Itoa(rng.IntN(keys)))
			if err == nil && it.Tier != client.TierL1 {
				err = fmt.Errorf("read served from %s, not L1", it.Tier)
			}
			return err
		})
		if err != nil {
			return err
		}
		an, alat, err := drive(ctx, conc, d, func(rng *rand.Rand) error {
			return rdb.Get(ctx, anchorKey(rng.IntN(keys))).Err()
		})
		if err != nil {
			return err
		}
		s, as := lat.Summarize(), alat.Summarize()
		tput, atput := float64(n)/d.Seconds(), float64(an)/d.Seconds()
		caseName := fmt.Sprintf("Get, concurrency %d", conc)
		r.progress("  %s: cachewire %.0f ops/s %v | redis GET %.0f ops/s %v", caseName, tput, s, atput, as)
		r.rep.add(Row{Scenario: "cached read", Case: caseName, Metric: "throughput", Unit: "ops/s", Cachewire: tput,
			Anchor: "go-redis GET", AnchorVal: atput, Goal: "≥ 1.0× Redis", Met: met(tput >= atput)})
		for _, p := range []struct {
			name   string
			v, a   time.Duration
			isGoal bool
		}{{"p50", s.P50, as.P50, false}, {"p99", s.P99, as.P99, true}, {"p999", s.P999, as.P999, false}} {
			row := Row{Scenario: "cached read", Case: caseName, Metric: p.name + " latency", Unit: "ns",
				Cachewire: float64(p.v), Anchor: "go-redis GET", AnchorVal: float64(p.a)}
			if p.isGoal {
				row.Goal, row.Met = "≤ Redis p99", met(p.v <= p.a)
			}
			r.rep.add(row)
		}
	}
	// BatchGet of 16 keys against MGET of 16.
	batch := func(rng *rand.Rand, f func(int) string) []string {
		ks := make([]string, 16)
		for i := range ks {
			ks[i] = f(rng.IntN(keys))
		}
		return ks
	}
	n, lat, err := drive(ctx, 16, d, func(rng *rand.Rand) error {
		_, err := cache.BatchGet(ctx, batch(rng, func(i int) string { return "k:" + strconv.Itoa(i) }))
		return err
	})
	if err != nil {
		return err
	}
	an, alat, err := drive(ctx, 16, d, func(rng *rand.Rand) error {
		return rdb.MGet(ctx, batch(rng, anchorKey)...).Err()
	})
	if err != nil {
		return err
	}
	s, as := lat.Summarize(), alat.Summarize()
	r.progress("  BatchGet 16: cachewire %.0f batches/s %v | redis MGET %.0f/s %v", float64(n)/d.Seconds(), s, float64(an)/d.Seconds(), as)
	r.rep.add(Row{Scenario: "cached read", Case: "BatchGet 16 keys, concurrency 16", Metric: "throughput", Unit: "keys/s",
		Cachewire: 16 * float64(n) / d.Seconds(), Anchor: "go-redis MGET 16", AnchorVal: 16 * float64(an) / d.Seconds()})
	r.rep.add(Row{Scenario: "cached read", Case: "BatchGet 16 keys, concurrency 16", Metric: "p99 latency", Unit: "ns",
		Cachewire: float64(s.P99), Anchor: "go-redis MGET 16", AnchorVal: float64(as.P99)})
	return nil
}

// propagation: from the writer's acked Put until every one of N nodes serves the new version,
// against raw kafka-go produce-to-consume on the same kind of broker.
func (r *runner) propagation(ctx context.Context) error {
	rounds := r.n(300, 20)
	raw, err := r.rawPropagation(ctx, rounds)
	if err != nil {
		return err
	}
	rs := raw.Summarize()
	r.progress("  raw kafka-go produce→consume (from the produce call): %v", rs)
	for _, nodes := range []int{1, 3, 8} {
		c, err := r.cluster(ctx, nodes, 3)
		if err != nil {
			return err
		}
		lat, err := r.propagateRounds(ctx, c, rounds)
		c.Close()
		if err != nil {
			return err
		}
		s := lat.Summarize()
		r.progress("  %d node(s): %v", nodes, s)
		caseName := fmt.Sprintf("%d node(s)", nodes)
		r.rep.add(Row{Scenario: "propagation", Case: caseName, Metric: "p50", Unit: "ns", Cachewire: float64(s.P50),
			Anchor: "kafka-go produce→consume", AnchorVal: float64(rs.P50)})
		r.rep.add(Row{Scenario: "propagation", Case: caseName, Metric: "p99", Unit: "ns", Cachewire: float64(s.P99),
			Anchor: "kafka-go produce→consume", AnchorVal: float64(rs.P99), Goal: "≤ raw p99 + 2 ms", Met: met(s.P99 <= rs.P99+2*time.Millisecond)})
		r.rep.add(Row{Scenario: "propagation", Case: caseName, Metric: "max", Unit: "ns", Cachewire: float64(s.Max),
			Anchor: "kafka-go produce→consume", AnchorVal: float64(rs.Max)})
	}
	return nil
}

func (r *runner) propagateRounds(ctx context.Context, c *embedded.Cluster, rounds int) (Latencies, error) {
	w, err := client.NewWriter(c.WriterAddr, client.WithTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	defer w.Close()
	var caches []*client.Cache
	for _, a := range c.NodeAddrs {
		cc, err := client.NewCache(a, client.WithTimeout(10*time.Second))
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		caches = append(caches, cc)
	}
	const keys = 16
	value := make([]byte, 100)
	// Every node holds every key, so an event refreshes it in place (refresh-held).
	for k := range keys {
		wr, err := w.Put(ctx, "p:"+strconv.Itoa(k), value)
		if err != nil {
			return nil, err
		}
		for _, cc := range caches {
			if _, err := cc.Get(ctx, "p:"+strconv.Itoa(k), client.MinVersion(wr.Version)); err != nil {
				return nil, err
			}
		}
	}
	lat := make(Latencies, 0, rounds)
	last := time.Now()
	for i := range rounds {
		key := "p:" + strconv.Itoa(i%keys)
		wr, err := w.Put(ctx, key, value)
		if err != nil {
			return nil, err
		}
		acked := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, len(caches))
		for j, cc := range caches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					it, err := cc.Get(ctx, key) // no min_version: only the event can make it new
					if err != nil {
						errs[j] = err
						return
					}
					if it.Version >= wr.Version {
						return
					}
					// Poll gently: eight pollers spinning on two cores would measure themselves.
					time.Sleep(50 * time.Microsecond)
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(acked))
		if time.Since(last) > time.Second {
			r.progress("    %d/%d rounds", i+1, rounds)
			last = time.Now()
		}
	}
	return lat, nil
}

// rawPropagation measures kafka-go alone: a Writer with the publisher's settings, a Reader on
// the partition, from the WriteMessages call to the Reader having the message.
func (r *runner) rawPropagation(ctx context.Context, rounds int) (Latencies, error) {
	topic := r.name("raw")
	brokers, stop, err := r.kafkaFor(1, topic)
	if err != nil {
		return nil, err
	}
	defer stop()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	// The writer's relay settings (acks=all, 0.5 ms batch timeout), which is what produces
	// cachewire's events.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 500 * time.Microsecond, Transport: tr}
	defer w.Close()
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MinBytes: 1, MaxBytes: 1 << 20,
		MaxWait: 100 * time.Millisecond, ReadLagInterval: -1})
	defer rd.Close()
	got := make(chan time.Time, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			if _, err := rd.ReadMessage(rctx); err != nil {
				return
			}
			got <- time.Now()
		}
	}()
	value := make([]byte, 100)
	lat := make(Latencies, 0, rounds)
	for range rounds {
		// From the produce call, not its return: the consumer often has the message before the
		// producer hears the ack, which would make from-ack latencies negative.
		sent := time.Now()
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: value}); err != nil {
			return nil, err
		}
		select {
		case t := <-got:
			lat = append(lat, t.Sub(sent))
		case <-time.After(30 * time.Second):
			return nil, errors.New("raw consumer got nothing within 30s")
		}
	}
	return lat, nil
}

// apply: events per second one node's L1 subscriber applies, and the L2 group applies to Redis,
// against a raw kafka-go consume of the same backlog; for 1, 3 and 12 partitions.
func (r *runner) apply(ctx context.Context) error {
	events := r.n(200_000, 2_000)
	for _, partitions := range []int{1, 3, 12} {
		topic := r.name("apply")
		brokers, stop, err := r.kafkaFor(partitions, topic)
		if err != nil {
			return err
		}
		err = r.applyCase(ctx, brokers, topic, partitions, events)
		stop()
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) applyCase(ctx context.Context, brokers []string, topic string, partitions, events int) error {
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 5000, Transport: tr}
	value := make([]byte, 100)
	msgs := make([]kafka.Message, 0, 5000)
	for i := range events {
		e := invalidation.Event{Key: "key-" + strconv.Itoa(i%10_000), Version: uint64(i + 1), Op: invalidation.OpUpsert,
			Value: value, HasValue: true, CommittedAt: time.Now()}
		raw, _ := invalidation.Encode(&e)
		msgs = append(msgs, kafka.Message{Key: []byte(e.Key), Value: raw})
		if len(msgs) == cap(msgs) || i == events-1 {
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				w.Close()
				return err
			}
			msgs = msgs[:0]
		}
	}
	w.Close()
	caseName := fmt.Sprintf("%d partition(s), %d events", partitions, events)

	rawRate, err := rawConsume(ctx, brokers, topic, partitions, events)
	if err != nil {
		return err
	}
	// One node's L1 subscriber.
	cache, _ := lru.New(lru.Config{MaxEntries: 20_000})
	sub, err := invalidation.NewSubscriber(invalidation.SubscriberConfig{Brokers: brokers, Topics: []string{topic},
		FromBeginning: true, Logger: r.log,
		Sink: invalidation.SinkFuncs{
			Apply:     func(_ string, _ int, evs []invalidation.Event) { cache.ApplyBatch(evs, invalidation.RefreshAll) },
			ResetFunc: func(string, int, string) { cache.Flush() },
		}})
	if err != nil {
		return err
	}
	l1Rate, err := timeUntil(ctx, func(ctx context.Context) error { return sub.Run(ctx) }, sub.Close,
		func() bool { return sub.Stats().Events >= uint64(events) }, events)
	if err != nil {
		return fmt.Errorf("L1 subscriber: %w", err)
	}
	// The L2 group applier, into Redis.
	addr, stopRedis, err := r.redisFor()
	if err != nil {
		return err
	}
	defer stopRedis()
	tier, err := redistier.New(redistier.Config{Addrs: []string{addr}, KeyPrefix: r.name("apply") + ":"})
	if err != nil {
		return err
	}
	defer tier.Close()
	g, err := invalidation.NewGroupApplier(invalidation.GroupApplierConfig{Brokers: brokers, Topics: []string{topic},
		GroupID: r.name("group"), Logger: r.log, MaxBatch: 1000,
		Applier: invalidation.BatchApplierFunc(func(ctx context.Context, evs []invalidation.Event) error {
			_, _, err := tier.ApplyBatch(ctx, evs, invalidation.RefreshAll)
			return err
		})})
	if err != nil {
		return err
	}
	l2Rate, err := timeUntil(ctx, func(ctx context.Context) error { return g.Run(ctx) }, g.Close,
		func() bool { return g.Stats().Events >= uint64(events) }, events)
	if err != nil {
		return fmt.Errorf("L2 group applier: %w", err)
	}
	r.progress("  %s: L1 %.0f events/s, L2 %.0f events/s, raw consume %.0f events/s", caseName, l1Rate, l2Rate, rawRate)
	r.rep.add(Row{Scenario: "apply rate", Case: caseName, Metric: "L1 subscriber", Unit: "events/s", Cachewire: l1Rate,
		Anchor: "kafka-go raw consume", AnchorVal: rawRate, Goal: "≥ 50% of raw", Met: met(l1Rate >= rawRate/2)})
	r.rep.add(Row{Scenario: "apply rate", Case: caseName, Metric: "L2 group → Redis", Unit: "events/s", Cachewire: l2Rate,
		Anchor: "kafka-go raw consume", AnchorVal: rawRate})
	return nil
}

func (r *runner) redisFor() (string, func(), error) {
	if r.cfg.RedisAddr != "" {
		return r.cfg.RedisAddr, func() {}, nil
	}
	c, err := embedded.StartRedis()
	if err != nil {
		return "", nil, err
	}
	return c.Addr(), c.Close, nil
}

// timeUntil runs run in the background and returns events per second until done reports true.
func timeUntil(ctx context.Context, run func(context.Context) error, closeFn func() error, done func() bool, events int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()
	defer func() { closeFn(); <-errc }()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case err := <-errc:
			errc <- err
			return 0, fmt.Errorf("stopped early: %v", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
	return float64(events) / time.Since(start).Seconds(), nil
}

// rawConsume reads every partition from its start with kafka-go Conns, without decoding, and
// returns messages per second.
func rawConsume(ctx context.Context, brokers []string, topic string, partitions, events int) (float64, error) {
	start := time.Now()
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, partitions)
	for p := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialLeader(ctx, "tcp", brokers[0], topic, p)
			if err != nil {
				errs[p] = err
				return
			}
			defer conn.Close()
			end, err := conn.ReadLastOffset()
			if err != nil {
				errs[p] = err
				return
			}
			offset := int64(0)
			for offset < end {
				conn.Seek(offset, kafka.SeekAbsolute|kafka.SeekDontCheck)
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				b := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 100 * time.Millisecond})
				for {
					if _, err := b.ReadMessage(); err != nil {
						break
					}
					total.Add(1)
				}
				offset = max(offset, b.Offset())
				if err := b.Close(); err != nil && !errors.Is(err, kafka.RequestTimedOut) {
					errs[p] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if total.Load() < int64(events) {
		return 0, fmt.Errorf("raw consume read %d of %d events", total.Load(), events)
	}
	return float64(events) / time.Since(start).Seconds(), nil
}

// writer: Puts per second at 1 and 16 clients with wait_published on and off, against raw
// kafka-go produce (acks=all, one message per call) at the same concurrency.
func (r *runner) writer(ctx context.Context) error {
	c, err := r.cluster(ctx, 1, 3)
	if err != nil {
		return err
	}
	defer c.Close()
	w, err := client.NewWriter(c.WriterAddr, client.WithTimeout(10*time.Second))
	if err != nil {
		return err
	}
	defer w.Close()
	topic := r.name("rawproduce")
	brokers, stop, err := r.kafkaFor(3, topic)
	if err != nil {
		return err
	}
	defer stop()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	kw := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 2 * time.Millisecond, Transport: tr}
	defer kw.Close()
	value := make([]byte, 100)
	d := r.cfg.Duration
	for _, conc := range []int{1, 16} {
		an, _, err := drive(ctx, conc, d, func(rng *rand.Rand) error {
			return kw.WriteMessages(ctx, kafka.Message{Key: []byte("k" + strconv.Itoa(rng.IntN(1000))), Value: value})
		})
		if err != nil {
			return err
		}
		for _, wait := range []bool{false, true} {
			var opts []client.WriteOption
			if !wait {
				opts = append(opts, client.NoWait())
			}
			n, lat, err := drive(ctx, conc, d, func(rng *rand.Rand) error {
				_, err := w.Put(ctx, "w:"+strconv.Itoa(rng.IntN(1000)), value, opts...)
				return err
			})
			if err != nil {
				return err
			}
			caseName := fmt.Sprintf("%d client(s), wait_published %v", conc, wait)
			r.progress("  %s: %.0f puts/s %v | raw produce %.0f/s", caseName, float64(n)/d.Seconds(), lat.Summarize(), float64(an)/d.Seconds())
			r.rep.add(Row{Scenario: "writer", Case: caseName, Metric: "throughput", Unit: "puts/s", Cachewire: float64(n) / d.Seconds(),
				Anchor: "kafka-go produce, acks=all", AnchorVal: float64(an) / d.Seconds()})
		}
	}
	return nil
}

// memory: heap bytes per L1 entry of a 100-byte value (and the overhead beyond key and value),
// against a Go map[string][]byte of the same data; and the process RSS.
func (r *runner) memory(context.Context) error {
	for _, n := range []int{r.n(100_000, 10_000), r.n(1_000_000, 20_000)} {
		keyLen := len(fmt.Sprintf("key:%08d", 0))
		per, rss := measureHeap(n, func() any {
			c, _ := lru.New(lru.Config{MaxEntries: n, MaxBytes: int64(n) * 1024, MaxTombstones: 1})
			tok := c.BeginFill()
			for i := range n {
				c.Fill(fmt.Sprintf("key:%08d", i), 1, make([]byte, 100), tok)
			}
			return c
		})
		anchor, _ := measureHeap(n, func() any {
			m := make(map[string][]byte)
			for i := range n {
				m[fmt.Sprintf("key:%08d", i)] = make([]byte, 100)
			}
			return m
		})
		payload := float64(keyLen + 100)
		caseName := fmt.Sprintf("%d entries of 100 B", n)
		r.progress("  %s: %.0f B/entry (overhead %.0f B), map %.0f B/entry, RSS %.0f MiB", caseName, per, per-payload, anchor, rss/(1<<20))
		r.rep.add(Row{Scenario: "memory", Case: caseName, Metric: "heap per entry", Unit: "B", Cachewire: per,
			Anchor: "Go map[string][]byte", AnchorVal: anchor})
		r.rep.add(Row{Scenario: "memory", Case: caseName, Metric: "overhead per entry beyond key+value", Unit: "B",
			Cachewire: per - payload, Anchor: "Go map[string][]byte", AnchorVal: anchor - payload, Goal: "≤ 100 B", Met: met(per-payload <= 100)})
		r.rep.add(Row{Scenario: "memory", Case: caseName, Metric: "process RSS after fill", Unit: "B", Cachewire: rss})
	}
	return nil
}

// measureHeap returns heap bytes per entry retained by what build returns, and the RSS then.
func measureHeap(n int, build func() any) (perEntry, rss float64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	rss = readRSS()
	runtime.KeepAlive(v)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n), rss
}

func readRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// scaling: L1 hit latency (in process) as the key count grows, against a Go map behind a
// RWMutex. Propagation against node count and apply rate against partitions are in their own
// scenarios.
func (r *runner) scaling(context.Context) error {
	sizes := []int{1_000, 10_000, 100_000, 1_000_000}
	if r.cfg.Smoke {
		sizes = []int{1_000, 10_000}
	}
	value := make([]byte, 100)
	for _, n := range sizes {
		c, _ := lru.New(lru.Config{MaxEntries: n, MaxBytes: int64(n) * 1024})
		m := make(map[string][]byte, n)
		var mu sync.RWMutex
		keys := make([]string, n)
		tok := c.BeginFill()
		for i := range n {
			keys[i] = fmt.Sprintf("key:%08d", i)
			c.Fill(keys[i], 1, value, tok)
			m[keys[i]] = value
		}
		ops := r.n(2_000_000, 100_000)
		rng := rand.New(rand.NewPCG(1, 2))
		idx := make([]int, 4096)
		for i := range idx {
			idx[i] = rng.IntN(n)
		}
		start := time.Now()
		for i := range ops {
			if _, ok := c.Get(keys[idx[i&4095]]); !ok {
				return errors.New("L1 miss in the scaling scenario")
			}
		}
		l1 := float64(time.Since(start).Nanoseconds()) / float64(ops)
		start = time.Now()
		for i := range ops {
			mu.RLock()
			_ = m[keys[idx[i&4095]]]
			mu.RUnlock()
		}
		anchor := float64(time.Since(start).Nanoseconds()) / float64(ops)
		r.progress("  %d keys: L1 Get %.0f ns, map+RWMutex %.0f ns", n, l1, anchor)
		r.rep.add(Row{Scenario: "scaling", Case: fmt.Sprintf("%d keys", n), Metric: "L1 Get hit (in process), mean", Unit: "ns",
			Cachewire: l1, Anchor: "Go map + RWMutex", AnchorVal: anchor})
	}
	return nil
}
