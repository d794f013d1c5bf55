// Package bench measures cachewire beside its anchors, in one run on one machine: cached reads
// against a plain Redis GET, against rueidis client-side cache hits (RESP3 tracking; skipped on
// miniredis, which cannot track) and against a bare grpc-go unary echo (the transport floor),
// propagation against raw kafka-go produce-to-consume, apply rate against a raw kafka-go
// consume, writer throughput against raw kafka-go produce, the outbox relay against raw kafka-go
// produce and its commit-to-fresh latency against the writer's, L1 memory against a Go map, and
// how each grows. cmd/cachebench runs it and writes JSON and the README's Markdown table.
package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/internal/topics"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/node"
)

// Scenarios, in the order they run.
var Scenarios = []string{"read", "propagation", "fanout", "apply", "writer", "outbox", "memory", "scaling", "isolation"}

// Config configures a run. Every field documents its zero-value default.
type Config struct {
	// Brokers, when set, name a real Kafka; otherwise each scenario uses an in-process kfake.
	Brokers []string
	// Kafka is how every client connects to Brokers (TLS, SASL); the zero value is plaintext.
	Kafka invalidation.KafkaConn
	// RedisAddr, when set, names a real Redis; otherwise each scenario uses miniredis.
	RedisAddr string
	// RedisTLS, RedisUsername and RedisPassword are how every client connects to RedisAddr.
	RedisTLS                     *tls.Config
	RedisUsername, RedisPassword string
	// PostgresDSN (a postgres:// URL) names the PostgreSQL the outbox scenario uses, in a schema
	// of its own that it drops at the end. If empty, that scenario is skipped.
	PostgresDSN string
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
		"read": r.read, "propagation": r.propagation, "fanout": r.fanout, "apply": r.apply, "writer": r.writer,
		"outbox": r.outboxBench, "memory": r.memory, "scaling": r.scaling, "isolation": r.isolation,
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
	return r.clusterWith(ctx, nodes, partitions, nil)
}

// clusterWith is cluster with mod applied to every node's config.
func (r *runner) clusterWith(ctx context.Context, nodes, partitions int, mod func(int, *node.Config)) (*embedded.Cluster, error) {
	topic := r.name("events")
	if len(r.cfg.Brokers) > 0 {
		if err := r.admin().Create(ctx, topics.Spec{Name: topic, Partitions: partitions}); err != nil {
			return nil, err
		}
	}
	return embedded.Start(embedded.Config{
		Nodes: nodes, Brokers: r.cfg.Brokers, Kafka: r.cfg.Kafka, RedisAddr: r.cfg.RedisAddr,
		RedisTLS: r.cfg.RedisTLS, RedisUsername: r.cfg.RedisUsername, RedisPassword: r.cfg.RedisPassword, RedisPrefix: r.name("redis") + ":",
		GroupID: r.name("l2"), Topic: topic, Partitions: partitions, Logger: r.log,
		Node: func(i int, c *node.Config) {
			c.L1.MaxEntries = 1 << 20
			c.L1.MaxBytes = 1 << 30
			if mod != nil {
				mod(i, c)
			}
		},
	})
}

// admin is the topic admin of the run's real Kafka.
func (r *runner) admin() topics.Admin { return topics.Admin{Brokers: r.cfg.Brokers, Conn: r.cfg.Kafka} }

// kafkaFor returns brokers for a raw-Kafka measurement: the run's real ones, or a fresh kfake.
func (r *runner) kafkaFor(partitions int, topic string) (brokers []string, stop func(), err error) {
	if len(r.cfg.Brokers) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return r.cfg.Brokers, func() {}, r.admin().Create(ctx, topics.Spec{Name: topic, Partitions: partitions})
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
	// The workers check an atomic flag, not ctx.Err (which takes a lock), and append to a slice
	// of their own: for operations of well under a microsecond (a near-cache hit), shared writes
	// in the loop would measure the harness.
	var stop atomic.Bool
	go func() { <-ctx.Done(); stop.Store(true) }()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			lat := make(Latencies, 0, 1024)
			defer func() { lats[w] = lat }()
			for !stop.Load() && len(lat) < 5_000_000 {
				t := time.Now()
				if err := op(rng); err != nil {
					if ctx.Err() == nil {
						errs[w] = err
					}
					return
				}
				lat = append(lat, time.Since(t))
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
