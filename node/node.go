package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/cachewire/cachewire/internal/serving"
	"github.com/cachewire/cachewire/internal/tracing"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

// Node is a cache node: L1 fed by its own subscriber, L2 in Redis fed by the shared group, an
// origin loader, and CacheService over gRPC. Start binds and starts everything; Shutdown drains;
// Close stops at once.
type Node struct {
	cfg Config
	log *slog.Logger

	l1     *lru.Cache
	l2     l2Tier // nil without Redis
	sub    *invalidation.Subscriber
	group  *invalidation.GroupApplier // nil without Redis
	pub    *invalidation.Publisher
	m      *metrics
	watch  *watchHub    // the Watch streams of near caches
	recent *recent      // the last event L1 applied for recent keys, for Explain
	tracer trace.Tracer // nil without Config.Tracer

	srv serving.Ref // the serving surface Start builds

	ctx    context.Context // the node's lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines and flights
	flight *flight
	sem    chan struct{}

	born    time.Time // when New ran: Watch's monotonic clock (uptime) counts from it
	ready   atomic.Bool
	readyCh chan struct{} // closed once ready is set
	started atomic.Bool
	closed  atomic.Bool

	loads, staleReads atomic.Uint64
	applied, ignored  atomic.Uint64

	l2mu    sync.Mutex
	l2parts map[tp]l2Part
	l2fence uint64 // L1's fence when l2parts was last reset for it
	l2gen   uint64 // grows at every reset of l2parts: a poll begun before one must not undo it
	gaps    l2gaps // versions served that Redis may lack

	// The read path's view of freshness; tests replace them.
	freshAt   func(key string) time.Time // when key's partitions were last caught up (n.freshAsOf)
	l2Trusted func(key string) bool      // whether L2 may serve key (n.l2Fresh)

	// leaseL2: the origin has answered without a version, so every origin read from now on
	// first takes a lease on the key's Redis entry (one more Redis read per load).
	leaseL2 atomic.Bool
}

// l2Tier is what the node needs of the Redis tier (*redistier.Tier).
type l2Tier interface {
	Get(ctx context.Context, key string) (redistier.Entry, bool, error)
	Peek(ctx context.Context, key string) (redistier.Entry, bool, error)
	BeginFill(ctx context.Context, key string) redistier.FillToken
	BeginLease(ctx context.Context, key string) (redistier.Lease, error)
	FillLeased(ctx context.Context, l redistier.Lease, key string, value []byte, missing bool) (bool, error)
	Drop(ctx context.Context, key string) error
	Fill(ctx context.Context, tok redistier.FillToken, key string, version uint64, value []byte) (bool, error)
	FillMissing(ctx context.Context, tok redistier.FillToken, key string, version uint64) (bool, error)
	Apply(ctx context.Context, e *invalidation.Event, p invalidation.Policy) (invalidation.Action, error)
	ApplyBatch(ctx context.Context, events []invalidation.Event, p invalidation.Policy) (applied, ignored int, err error)
	Stats() redistier.Stats
	Close() error
}

// New builds a node from cfg. It does no I/O: Start connects and listens.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), sem: make(chan struct{}, cfg.MaxInFlight), readyCh: make(chan struct{}), l2parts: map[tp]l2Part{},
		watch: newWatchHub(), recent: newRecent(), tracer: tracing.Tracer(cfg.Tracer)}
	n.born = time.Now()
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.freshAt, n.l2Trusted = n.freshAsOf, n.l2Fresh
	n.srv.Configure(cfg.GRPCAddr)
	n.flight = newFlight(n.ctx, &n.wg)
	var err error
	if n.l1, err = lru.New(cfg.L1); err != nil {
		return nil, err
	}
	if cfg.hasL2() {
		l2cfg := cfg.L2
		user := l2cfg.OnNewEpoch
		l2cfg.OnNewEpoch = func() {
			n.newL2Epoch()
			if user != nil {
				user()
			}
		}
		if l2cfg.Logger == nil {
			l2cfg.Logger = n.log
		}
		tier, err := redistier.New(l2cfg)
		if err != nil {
			return nil, err
		}
		n.l2 = tier
		n.group, err = invalidation.NewGroupApplier(invalidation.GroupApplierConfig{
			Brokers: cfg.Brokers, Topics: cfg.Topics, GroupID: cfg.GroupID, Limits: cfg.Limits, Formats: cfg.TopicFormats,
			Logger: n.log, Kafka: cfg.Kafka, DeadLetterTopic: cfg.DeadLetterTopic,
			Applier: invalidation.BatchApplierFunc(func(ctx context.Context, events []invalidation.Event) error {
				spans := tracing.StartApply(n.tracer, "apply L2", "", -1, events, time.Now(), attribute.String("cachewire.node_id", cfg.NodeID))
				_, _, err := n.l2.ApplyBatch(ctx, events, cfg.Policy)
				spans.End(err)
				return err
			}),
		})
		if err != nil {
			return nil, err
		}
	}
	n.sub, err = invalidation.NewSubscriber(invalidation.SubscriberConfig{
		Brokers: cfg.Brokers, Topics: cfg.Topics, Limits: cfg.Limits, Formats: cfg.TopicFormats, Logger: n.log,
		MaxWait: cfg.SubscriberMaxWait, Kafka: cfg.Kafka,
		// A key's freshness is never later than the last metadata lookup (partitions added
		// since are not read yet): look often enough that this never ages past MaxStaleness.
		MetadataInterval: min(max(cfg.MaxStaleness/4, 100*time.Millisecond), 5*time.Second),
		OnInvalid:        func(string, int, int64, error) { n.m.evInvalid.Inc() },
		Sink:             invalidation.SinkFuncs{Apply: n.applyEvents, ResetFunc: n.reset},
	})
	if err != nil {
		return nil, err
	}
	n.pub, err = invalidation.NewPublisher(invalidation.PublisherConfig{Brokers: cfg.Brokers, Topic: cfg.InvalidateTopic,
		Limits: cfg.Limits, Kafka: cfg.Kafka})
	if err != nil {
		return nil, err
	}
	n.m = newMetrics(n)
	return n, nil
}

// applyEvents is the L1 sink: it runs on a partition's goroutine.
func (n *Node) applyEvents(topic string, partition int, events []invalidation.Event) {
	spans := tracing.StartApply(n.tracer, "apply L1", topic, partition, events, time.Now(), attribute.String("cachewire.node_id", n.cfg.NodeID))
	defer spans.End(nil)
	for i := range events {
		if events[i].Op == invalidation.OpEvict {
			// Redis keeps the value at the same version until the group applies the EVICT, and
			// L1 would accept it back: hold L2 for the partition until then. First, so that no
			// read in between can refill L1 from Redis.
			n.holdL2(topic, partition, events[i].Offset+1)
		}
	}
	applied, ignored := n.l1.ApplyBatch(events, n.cfg.Policy)
	n.watchEvents(topic, partition, events)
	for i := range events {
		n.gaps.applied(events[i].Key, events[i].Version)
		if events[i].Op == invalidation.OpEvict {
			n.gaps.evictApplied(events[i].Key) // the hold above covers it now
		}
	}
	n.applied.Add(uint64(applied))
	n.ignored.Add(uint64(ignored))
	n.m.evApplied.Add(float64(applied))
	n.m.evIgnored.Add(float64(ignored))
	now := time.Now()
	n.recent.record(topic, partition, events, now)
	for i := range events {
		if t := events[i].CommittedAt; !t.IsZero() {
			n.m.applyLatency.Observe(now.Sub(t).Seconds())
		}
	}
}

// reset is called on a gap the subscriber cannot repair: L1 can no longer vouch for anything.
func (n *Node) reset(topic string, partition int, reason string) {
	n.resetL2(topic, partition)
	n.l1.Flush()
	n.watchReset(topic, partition, reason)
	n.m.resets.Inc()
	n.log.Warn("L1 flushed after a gap in the event stream", "topic", topic, "partition", partition, "reason", reason)
}

// Start listens on GRPCAddr and HTTPAddr and starts the subscriber, the L2 group member and the
// servers. The node reports SERVING (gRPC health, /readyz) once the subscriber is positioned at
// the log end of every partition; until then reads get Unavailable.
func (n *Node) Start() error {
	if n.closed.Load() {
		return ErrClosed
	}
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("node: Start called twice")
	}
	if err := n.preflight(); err != nil {
		return err
	}
	srv, err := n.srv.Start(serving.Config{
		Name: "node", GRPCAddr: n.cfg.GRPCAddr, HTTPAddr: n.cfg.HTTPAddr, Pprof: n.cfg.Pprof,
		MaxRecvMsgBytes: n.cfg.MaxRecvMsgBytes, Registry: n.m.reg, Logger: n.log, Tracer: n.cfg.Tracer,
		Register:     func(g *grpc.Server) { pb.RegisterCacheServiceServer(g, &service{n: n}) },
		Interceptors: []grpc.UnaryServerInterceptor{n.limit},
		Ready: func() (bool, string) {
			if !n.ready.Load() {
				return false, "not yet positioned at the log end"
			}
			return true, ""
		},
		DrainDelay: n.cfg.DrainDelay, ShutdownTimeout: n.cfg.ShutdownTimeout,
		TLS: n.cfg.TLS, Clients: n.clientsConfig(),
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}

	n.goRun("subscriber", func() error { return n.sub.Run(n.ctx) })
	n.goRun("watch heartbeats", func() error { n.heartbeats(); return nil })
	if n.group != nil {
		n.goRun("l2 group applier", func() error { return n.group.Run(n.ctx) })
		n.goRun("l2 watcher", func() error { n.watchL2(n.ctx); return nil })
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		select {
		case <-n.sub.Ready():
			n.ready.Store(true)
			close(n.readyCh)
			srv.SetServing(true)
			n.log.Info("positioned at the log end of every partition: serving", "partitions", len(n.sub.Partitions()))
		case <-n.ctx.Done():
		}
	}()
	l2 := "disabled"
	if n.l2 != nil {
		l2 = fmt.Sprint(n.cfg.L2.Addrs)
	}
	n.log.Info("cache node started", "grpc", n.GRPCAddr(), "http", n.HTTPAddr(), "topics", n.cfg.Topics,
		"brokers", n.cfg.Brokers, "l2", l2, "origin", n.cfg.Loader != nil, "max_staleness", n.cfg.MaxStaleness)
	return nil
}

func (n *Node) clientsConfig() *serving.ClientsConfig {
	if n.cfg.Clients == nil {
		return nil
	}
	c := *n.cfg.Clients
	c.Mutating = MutatingMethods
	return &c
}

// preflight refuses to start with credentials or certificates that cannot work: Kafka refusing
// the SASL credentials or the TLS handshake, or denying access to the topics; Redis refusing
// the user or password or the TLS handshake, or its ACL denying a command the tier needs. It
// checks only secured connections (TLS, SASL, a Redis user or password set); Kafka or Redis
// merely unreachable is logged, and the node starts anyway, as it does without security.
func (n *Node) preflight() error {
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	checker, ok := n.l2.(interface{ CheckAccess(context.Context) error }) // the Redis tier, not a test's fake
	if l2 := n.cfg.L2; ok && (l2.TLS != nil || l2.Username != "" || l2.Password != "") {
		if err := checker.CheckAccess(ctx); errors.Is(err, redistier.ErrUnreachable) {
			n.log.Warn("Redis not reachable at start-up; serving from L1 and the origin until it is", "err", err)
		} else if err != nil {
			return fmt.Errorf("node: Redis: %w", err)
		}
	}
	if n.cfg.Kafka.TLS == nil && n.cfg.Kafka.SASL == nil {
		return nil
	}
	if err := n.cfg.Kafka.Check(ctx, n.cfg.Brokers, n.cfg.Topics...); err != nil {
		if errors.Is(err, invalidation.ErrKafkaAccess) {
			return fmt.Errorf("node: Kafka: %w", err)
		}
		n.log.Warn("Kafka not reachable at start-up; the node serves once it is positioned", "err", err)
	}
	return nil
}

func (n *Node) goRun(name string, f func() error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := f(); err != nil && n.ctx.Err() == nil {
			n.log.Error(name+" stopped", "err", err)
		}
	}()
}

// GRPCAddr returns the address gRPC listens on (after Start), or the configured one.
func (n *Node) GRPCAddr() string { return n.srv.GRPCAddr() }

// HTTPAddr returns the address HTTP listens on (after Start), or "" when disabled.
func (n *Node) HTTPAddr() string { return n.srv.HTTPAddr() }

// WaitReady blocks until the node is positioned at the log end of every partition and serving,
// or ctx ends, or the node is shut down.
func (n *Node) WaitReady(ctx context.Context) error {
	select {
	case <-n.readyCh:
		if n.closed.Load() {
			return ErrClosed
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("node: not positioned at the log end: %w", ctx.Err())
	case <-n.ctx.Done():
		return ErrClosed
	}
}

// Resets returns how many times L1 was flushed after a gap in the event stream it could not
// repair (offset out of range, topic recreated).
func (n *Node) Resets() uint64 { return n.sub.Stats().Resets }

// L2GroupStats returns the counters of the node's member of the L2 applier group (zero without
// Redis). For diagnostics: a member that stopped applying shows here first.
func (n *Node) L2GroupStats() invalidation.GroupApplierStats {
	if n.group == nil {
		return invalidation.GroupApplierStats{}
	}
	return n.group.Stats()
}

// Ready reports whether the node is positioned and serving (not shutting down).
func (n *Node) Ready() bool { return n.ready.Load() && !n.closed.Load() }

// Shutdown reports NOT_SERVING and keeps serving for DrainDelay, then lets requests in flight
// finish (bounded by ctx and ShutdownTimeout), then stops everything. Later calls return
// ErrClosed.
func (n *Node) Shutdown(ctx context.Context) error {
	if !n.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	var err error
	// Watch streams last as long as their clients: end them first, or the drain waits for them
	// until ShutdownTimeout. Their near caches read through this node meanwhile, then another.
	n.watch.shutdown()
	if srv := n.srv.Get(); srv != nil {
		err = srv.Shutdown(ctx)
	}
	return errors.Join(err, n.stop())
}

// Close stops the node at once: requests in flight fail. Later calls return ErrClosed.
func (n *Node) Close() error {
	if !n.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	n.watch.shutdown()
	if srv := n.srv.Get(); srv != nil {
		_ = srv.Close()
	}
	return n.stop()
}

func (n *Node) stop() error {
	n.cancel()
	errs := []error{ignoreClosed(n.sub.Close())}
	if n.group != nil {
		errs = append(errs, ignoreClosed(n.group.Close()))
	}
	n.wg.Wait()
	errs = append(errs, n.pub.Close())
	if n.l2 != nil {
		errs = append(errs, n.l2.Close())
	}
	n.log.Info("cache node stopped")
	return errors.Join(errs...)
}

func ignoreClosed(err error) error {
	if errors.Is(err, invalidation.ErrClosed) {
		return nil
	}
	return err
}

func itoa(i int) string { return strconv.Itoa(i) }
