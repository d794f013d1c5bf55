package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/cachewire/cachewire/internal/retry"
	"github.com/cachewire/cachewire/internal/serving"
	"github.com/cachewire/cachewire/internal/topics"
	"github.com/cachewire/cachewire/internal/tracing"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// Writer is the reference system of record: a bbolt store whose every write commits its record
// and an outbox row in one transaction, a relay that publishes the outbox in commit order and
// deletes rows only after Kafka acked them (dead-lettering rows that can never be published),
// and WriterService over gRPC.
type Writer struct {
	cfg    Config
	log    *slog.Logger
	store  *store
	pub    *invalidation.Publisher
	tracer trace.Tracer        // nil without Config.Tracer
	limits invalidation.Limits // what the relay may publish (the publisher's limits)
	dlq    *kafka.Writer       // nil without DeadLetterTopic

	writes   chan *write
	kick     chan struct{}
	deadKick chan struct{}
	deadLog  *retry.LogLimiter

	mu        sync.Mutex
	published uint64              // every version <= published was acked by Kafka or dead-lettered
	dead      map[uint64]struct{} // versions committed since New that were dead-lettered
	startSeq  uint64              // the last version committed before New
	advanced  chan struct{}       // closed and replaced whenever published grows
	depth     atomic.Int64        // outbox rows

	deadRows     atomic.Int64  // rows in the outbox_dead bucket
	deadLettered atomic.Uint64 // rows dead-lettered since New

	life    sync.Mutex // held by Start; Close and Shutdown take it to see what Start built
	started bool

	srv serving.Ref // the serving surface Start builds

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool

	m *metrics
}

// New opens the store and builds the writer. Start serves.
func New(cfg Config) (*Writer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	st, err := openStore(cfg.DBPath)
	if err != nil {
		return nil, err
	}
	// The relay is the only producer and hands over whole batches, so a short batch timeout adds
	// little latency without splitting batches.
	limits := invalidation.Limits{MaxKeyBytes: cfg.Limits.MaxKeyBytes, MaxValueBytes: max(cfg.EventValueMax, 1)}
	pub, err := invalidation.NewPublisher(invalidation.PublisherConfig{Brokers: cfg.Brokers, Topic: cfg.Topic, Kafka: cfg.Kafka,
		BatchTimeout: 500 * time.Microsecond, BatchSize: cfg.RelayBatch,
		// The relay retries on its own; one attempt bounded by 5 s keeps Close prompt.
		MaxAttempts: 1, WriteTimeout: 5 * time.Second, Limits: limits})
	if err != nil {
		st.close()
		return nil, err
	}
	w := &Writer{
		cfg: cfg, log: cfg.Logger.With("writer", cfg.WriterID), store: st, pub: pub, limits: limits, tracer: tracing.Tracer(cfg.Tracer),
		writes: make(chan *write, 1024), kick: make(chan struct{}, 1), deadKick: make(chan struct{}, 1),
		deadLog: retry.NewLogLimiter(10, time.Second), advanced: make(chan struct{}), dead: map[uint64]struct{}{},
	}
	n, dead, seq, err := st.depth()
	if err != nil {
		st.close()
		return nil, err
	}
	w.depth.Store(int64(n))
	w.deadRows.Store(int64(dead))
	// Everything committed before the oldest outbox row was published (or dead-lettered) in an
	// earlier run.
	w.published, w.startSeq = seq-uint64(n), seq
	if n > 0 {
		w.log.Info("resuming: outbox holds unpublished changes", "rows", n, "last_version", seq)
	}
	if dead > 0 {
		w.log.Warn("the outbox_dead bucket holds rows that could not be published", "rows", dead,
			"dead_letter_topic", cfg.DeadLetterTopic)
	}
	if cfg.DeadLetterTopic != "" {
		w.dlq = &kafka.Writer{
			Addr: kafka.TCP(cfg.Brokers...), Topic: cfg.DeadLetterTopic, Balancer: kafka.Murmur2Balancer{},
			RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, MaxAttempts: 1,
			WriteTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second,
			Transport: cfg.Kafka.Transport(), // its own, closed by stop
		}
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.srv.Configure(cfg.GRPCAddr)
	w.m = newMetrics(w)
	return w, nil
}

// Start makes sure the topic exists (or fails, naming it), then listens and starts the group
// committer and the outbox relay. With Kafka unreachable it starts anyway: writes are durable and
// the relay publishes once Kafka is back. A second call returns an error; a call after Close
// (or Shutdown) returns ErrClosed.
func (w *Writer) Start() error {
	w.life.Lock()
	defer w.life.Unlock()
	if w.closed.Load() {
		return ErrClosed
	}
	if w.started {
		return errors.New("writer: Start called twice")
	}
	w.started = true
	if err := w.ensureTopic(); err != nil {
		return err
	}
	srv, err := w.srv.Start(serving.Config{
		Name: "writer", GRPCAddr: w.cfg.GRPCAddr, HTTPAddr: w.cfg.HTTPAddr,
		MaxRecvMsgBytes: w.cfg.MaxRecvMsgBytes, Registry: w.m.reg, Logger: w.log, Tracer: w.cfg.Tracer,
		Register: func(g *grpc.Server) {
			svc := &service{w: w}
			pb.RegisterWriterServiceServer(g, svc)
			pb.RegisterOriginServiceServer(g, &originService{s: svc})
		},
		DrainDelay: w.cfg.DrainDelay, ShutdownTimeout: w.cfg.ShutdownTimeout,
		TLS: w.cfg.TLS, Clients: w.clientsConfig(),
	})
	if err != nil {
		return fmt.Errorf("writer: %w", err)
	}

	w.wg.Add(2)
	go func() { defer w.wg.Done(); w.commitLoop() }()
	go func() { defer w.wg.Done(); w.relayLoop() }()
	if w.dlq != nil {
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.deadLetterLoop() }()
	}
	srv.SetServing(true)
	w.log.Info("writer started", "grpc", srv.GRPCAddr(), "http", srv.HTTPAddr(), "db", w.cfg.DBPath,
		"topic", w.cfg.Topic, "brokers", w.cfg.Brokers, "outbox_depth", w.depth.Load())
	return nil
}

func (w *Writer) clientsConfig() *serving.ClientsConfig {
	if w.cfg.Clients == nil {
		return nil
	}
	c := *w.cfg.Clients
	c.Mutating = MutatingMethods
	return &c
}

// ensureTopic creates the topic when it is missing and creation is allowed; a missing topic
// without creation fails, and so do refused credentials, an untrusted broker certificate and a
// missing permission. Kafka unreachable is not fatal.
func (w *Writer) ensureTopic() error {
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	_, err := topics.Admin{Brokers: w.cfg.Brokers, Conn: w.cfg.Kafka}.Partitions(ctx, w.cfg.Topic)
	switch {
	case err == nil:
		return nil
	case invalidation.AccessError(err) != nil:
		return fmt.Errorf("writer: topic %q: %w", w.cfg.Topic, invalidation.AccessError(err))
	case !errors.Is(err, topics.ErrNotFound):
		w.log.Warn("Kafka unreachable at start-up; writes are kept in the outbox until it is back", "err", err)
		return nil
	case !w.cfg.CreateTopic:
		return fmt.Errorf("writer: topic %q does not exist and --create-topic is off", w.cfg.Topic)
	}
	admin := topics.Admin{Brokers: w.cfg.Brokers, Conn: w.cfg.Kafka}
	if err := admin.Create(ctx, topics.Spec{Name: w.cfg.Topic, Partitions: w.cfg.TopicPartitions, Replication: w.cfg.TopicReplication}); err != nil {
		return fmt.Errorf("writer: %w", err)
	}
	w.log.Info("created topic", "topic", w.cfg.Topic, "partitions", w.cfg.TopicPartitions, "replication", w.cfg.TopicReplication)
	return nil
}

// GRPCAddr returns the address gRPC listens on (after Start), or the configured one.
func (w *Writer) GRPCAddr() string { return w.srv.GRPCAddr() }

// HTTPAddr returns the address HTTP listens on (after Start), or "" when disabled.
func (w *Writer) HTTPAddr() string { return w.srv.HTTPAddr() }

// OutboxDepth returns the number of committed changes not yet acked by Kafka.
func (w *Writer) OutboxDepth() int64 { return w.depth.Load() }

// DeadLettered returns how many outbox rows were dead-lettered since New: moved out of the
// outbox because they can never be published (see Config.DeadLetterTopic).
func (w *Writer) DeadLettered() uint64 { return w.deadLettered.Load() }

// DeadRows returns how many dead-lettered rows the outbox_dead bucket holds: all of them
// without a dead-letter topic, else those the topic has not acked yet.
func (w *Writer) DeadRows() int64 { return w.deadRows.Load() }

// Shutdown stops accepting requests, lets those in flight finish (bounded by ctx and
// ShutdownTimeout), gives the relay until then to publish the outbox, and closes. Rows left
// in the outbox are published by the next start.
func (w *Writer) Shutdown(ctx context.Context) error {
	if !w.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	srv := w.built() // after a Start in progress
	if srv != nil {
		// NOT_SERVING for the drain delay, then the requests in flight finish.
		if err := srv.Shutdown(ctx); err != nil {
			w.log.Warn("shutdown: " + err.Error())
		}
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ShutdownTimeout)
	defer cancel()
	// Give the relay a chance to drain the outbox.
	for w.depth.Load() > 0 && ctx.Err() == nil {
		select {
		case w.kick <- struct{}{}:
		default:
		}
		w.mu.Lock()
		ch := w.advanced
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	if d := w.depth.Load(); d > 0 {
		w.log.Warn("shutting down with an unpublished outbox; the next start publishes it", "rows", d)
	}

	return w.stop()
}

// Close stops at once; the outbox is published by the next start.
func (w *Writer) Close() error {
	if !w.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	w.cancel()       // cuts short a Start still looking for the topic
	srv := w.built() // and waits for it
	if srv != nil {
		_ = srv.Close()
	}
	return w.stop()
}

// built returns the serving surface Start built, once no Start is running.
func (w *Writer) built() *serving.Server {
	w.life.Lock()
	defer w.life.Unlock()
	return w.srv.Get()
}

func (w *Writer) stop() error {
	w.cancel()
	w.wg.Wait()
	err := errors.Join(w.pub.Close(), w.store.close())
	if w.dlq != nil {
		err = errors.Join(err, w.dlq.Close())
		w.dlq.Transport.(*kafka.Transport).CloseIdleConnections()
	}
	w.log.Info("writer stopped", "outbox_depth", w.depth.Load())
	return err
}
