package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/cachewire/cachewire/internal/grpcdrain"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// ErrClosed is returned by calls on a writer that was shut down.
var ErrClosed = errors.New("writer: closed")

// Config configures a Writer. Every field documents its zero-value default.
type Config struct {
	// WriterID names this writer as the source of its events. If empty, the host name.
	WriterID string
	// DBPath is the bbolt file holding records and the outbox. Required.
	DBPath string
	// GRPCAddr serves WriterService and health. If empty, "127.0.0.1:7080".
	GRPCAddr string
	// HTTPAddr serves /healthz, /readyz and /metrics. If empty, "127.0.0.1:9091"; "-" disables.
	HTTPAddr string
	// Brokers are the Kafka bootstrap addresses. Required.
	Brokers []string
	// Topic receives the change events. Required.
	Topic string
	// CreateTopic creates Topic at start-up when it is missing, with TopicPartitions (default 3)
	// and TopicReplication (default 1). Without it, a missing topic fails start-up.
	CreateTopic                       bool
	TopicPartitions, TopicReplication int
	// EventValueMax is the largest value an UPSERT event carries so nodes can refresh; larger
	// values are published as INVALIDATE. If zero, 64 KiB; negative never carries values.
	EventValueMax int
	// RelayBatch is the most outbox rows published at once. If zero, 500.
	RelayBatch int
	// WaitTimeout bounds how long Put and Delete wait for Kafka's ack when wait_published is on.
	// If zero, 5 seconds.
	WaitTimeout time.Duration
	// Limits bound keys and values; zero fields take invalidation's defaults.
	Limits invalidation.Limits
	// MaxBatch bounds BatchGet. If zero, 100.
	MaxBatch int
	// ShutdownTimeout bounds draining at Shutdown. If zero, 10 seconds.
	ShutdownTimeout time.Duration
	// Logger receives logs. If nil, slog.Default().
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.WriterID == "" {
		c.WriterID, _ = os.Hostname()
	}
	switch {
	case c.DBPath == "":
		return errors.New("writer: no database path (--db-path)")
	case len(c.Brokers) == 0:
		return errors.New("writer: no Kafka brokers (--kafka-brokers)")
	case c.Topic == "":
		return errors.New("writer: no topic (--topic)")
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:7080"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:9091"
	}
	if c.TopicPartitions == 0 {
		c.TopicPartitions = 3
	}
	if c.TopicReplication == 0 {
		c.TopicReplication = 1
	}
	if c.EventValueMax == 0 {
		c.EventValueMax = 64 << 10
	}
	if c.RelayBatch == 0 {
		c.RelayBatch = 500
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = 5 * time.Second
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 100
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Limits = c.Limits.WithDefaults()
	if c.TopicPartitions < 1 || c.TopicReplication < 1 || c.RelayBatch < 1 || c.MaxBatch < 1 {
		return errors.New("writer: partitions, replication, relay batch and max batch must be positive")
	}
	return nil
}

// CheckConfig reports whether cfg is valid, as New would, without opening anything.
func CheckConfig(cfg Config) error { return cfg.validate() }

// Writer is the reference system of record: a bbolt store whose every write commits its record
// and an outbox row in one transaction, a relay that publishes the outbox in commit order and
// deletes rows only after Kafka acked them, and WriterService over gRPC.
type Writer struct {
	cfg   Config
	log   *slog.Logger
	store *store
	pub   *invalidation.Publisher

	writes chan *write
	kick   chan struct{}

	mu        sync.Mutex
	published uint64        // every version <= published has been acked by Kafka
	advanced  chan struct{} // closed and replaced whenever published grows
	depth     atomic.Int64  // outbox rows

	grpc   *grpc.Server
	health *health.Server
	http   *http.Server
	glis   net.Listener
	hlis   net.Listener

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
	pub, err := invalidation.NewPublisher(invalidation.PublisherConfig{Brokers: cfg.Brokers, Topic: cfg.Topic,
		BatchTimeout: 500 * time.Microsecond, BatchSize: cfg.RelayBatch,
		// The relay retries on its own; one attempt bounded by 5 s keeps Close prompt.
		MaxAttempts: 1, WriteTimeout: 5 * time.Second,
		Limits: invalidation.Limits{MaxKeyBytes: cfg.Limits.MaxKeyBytes, MaxValueBytes: max(cfg.EventValueMax, 1)}})
	if err != nil {
		st.close()
		return nil, err
	}
	w := &Writer{
		cfg: cfg, log: cfg.Logger.With("writer", cfg.WriterID), store: st, pub: pub,
		writes: make(chan *write, 1024), kick: make(chan struct{}, 1), advanced: make(chan struct{}),
	}
	n, seq, err := st.depth()
	if err != nil {
		st.close()
		return nil, err
	}
	w.depth.Store(int64(n))
	// Everything committed before the oldest outbox row was published in an earlier run.
	w.published = seq - uint64(n)
	if n > 0 {
		w.log.Info("resuming: outbox holds unpublished changes", "rows", n, "last_version", seq)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.m = newMetrics(w)
	return w, nil
}

// Start makes sure the topic exists (or fails, naming it), then listens and starts the group
// committer and the outbox relay. With Kafka unreachable it starts anyway: writes are durable and
// the relay publishes once Kafka is back.
func (w *Writer) Start() error {
	if w.closed.Load() {
		return ErrClosed
	}
	if err := w.ensureTopic(); err != nil {
		return err
	}
	var err error
	if w.glis, err = net.Listen("tcp", w.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("writer: gRPC listen on %s: %w", w.cfg.GRPCAddr, err)
	}
	if w.cfg.HTTPAddr != "-" {
		if w.hlis, err = net.Listen("tcp", w.cfg.HTTPAddr); err != nil {
			w.glis.Close()
			return fmt.Errorf("writer: HTTP listen on %s: %w", w.cfg.HTTPAddr, err)
		}
	}
	w.grpc = grpc.NewServer(grpc.MaxRecvMsgSize(w.cfg.Limits.MaxValueBytes+64<<10), grpc.ChainUnaryInterceptor(w.observe))
	pb.RegisterWriterServiceServer(w.grpc, &service{w: w})
	w.health = health.NewServer()
	healthpb.RegisterHealthServer(w.grpc, w.health)
	reflection.Register(w.grpc)

	w.wg.Add(2)
	go func() { defer w.wg.Done(); w.commitLoop() }()
	go func() { defer w.wg.Done(); w.relayLoop() }()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := w.grpc.Serve(w.glis); err != nil {
			w.log.Error("gRPC server stopped", "err", err)
		}
	}()
	if w.hlis != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { _, _ = rw.Write([]byte("ok\n")) })
		mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
			if w.closed.Load() {
				http.Error(rw, "shutting down", http.StatusServiceUnavailable)
				return
			}
			_, _ = rw.Write([]byte("ready\n"))
		})
		mux.Handle("/metrics", promhttp.HandlerFor(w.m.reg, promhttp.HandlerOpts{}))
		w.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			if err := w.http.Serve(w.hlis); !errors.Is(err, http.ErrServerClosed) {
				w.log.Error("HTTP server stopped", "err", err)
			}
		}()
	}
	w.log.Info("writer started", "grpc", w.GRPCAddr(), "http", w.HTTPAddr(), "db", w.cfg.DBPath,
		"topic", w.cfg.Topic, "brokers", w.cfg.Brokers, "outbox_depth", w.depth.Load())
	return nil
}

// ensureTopic creates the topic when it is missing and creation is allowed; a missing topic
// without creation fails. Kafka unreachable is not fatal.
func (w *Writer) ensureTopic() error {
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	tr := &kafka.Transport{DialTimeout: 3 * time.Second}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(w.cfg.Brokers...), Timeout: 5 * time.Second, Transport: tr}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{w.cfg.Topic}})
	if err != nil {
		w.log.Warn("Kafka unreachable at start-up; writes are kept in the outbox until it is back", "err", err)
		return nil
	}
	if len(md.Topics) == 1 && md.Topics[0].Error == nil {
		return nil
	}
	if !w.cfg.CreateTopic {
		return fmt.Errorf("writer: topic %q does not exist and --create-topic is off", w.cfg.Topic)
	}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: w.cfg.Topic, NumPartitions: w.cfg.TopicPartitions, ReplicationFactor: w.cfg.TopicReplication,
	}}})
	if err == nil {
		err = resp.Errors[w.cfg.Topic]
	}
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("writer: create topic %q: %w", w.cfg.Topic, err)
	}
	w.log.Info("created topic", "topic", w.cfg.Topic, "partitions", w.cfg.TopicPartitions, "replication", w.cfg.TopicReplication)
	return nil
}

// submit queues a write for the group committer and waits for its commit.
func (w *Writer) submit(ctx context.Context, wr *write) error {
	wr.done = make(chan struct{})
	select {
	case w.writes <- wr:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.ctx.Done():
		return ErrClosed
	}
	// Once queued the write will be committed or fail; wait for the answer even if ctx ends,
	// so the caller never gets an error for a write that did commit.
	<-wr.done
	return wr.err
}

// commitLoop is the group committer: it takes every write waiting and commits them in one
// transaction (one fsync), so throughput grows with concurrency instead of collapsing to one
// fsync per request.
func (w *Writer) commitLoop() {
	batch := make([]*write, 0, 256)
	for {
		batch = batch[:0]
		select {
		case wr := <-w.writes:
			batch = append(batch, wr)
		case <-w.ctx.Done():
			w.failQueued()
			return
		}
	drain:
		for len(batch) < cap(batch) {
			select {
			case wr := <-w.writes:
				batch = append(batch, wr)
			default:
				break drain
			}
		}
		err := w.store.commit(batch, w.cfg.WriterID, w.eventValueMax())
		if err != nil {
			w.log.Error("commit failed", "writes", len(batch), "err", err)
		} else {
			w.depth.Add(int64(len(batch)))
			w.m.batchSize.Observe(float64(len(batch)))
		}
		for _, wr := range batch {
			wr.err = err
			close(wr.done)
		}
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

func (w *Writer) failQueued() {
	for {
		select {
		case wr := <-w.writes:
			wr.err = ErrClosed
			close(wr.done)
		default:
			return
		}
	}
}

func (w *Writer) eventValueMax() int {
	if w.cfg.EventValueMax < 0 {
		return -1
	}
	return w.cfg.EventValueMax
}

// relayLoop publishes the outbox in commit order, in batches, and deletes rows only after
// Kafka acked them. Failures are retried with capped back-off; a restart resumes from the
// oldest row left.
func (w *Writer) relayLoop() {
	backoff, failures := time.Duration(0), 0
	for {
		seqs, events, err := w.store.pending(w.cfg.RelayBatch)
		if err == nil && len(seqs) == 0 {
			select {
			case <-w.kick:
				continue
			case <-time.After(time.Second):
				continue
			case <-w.ctx.Done():
				return
			}
		}
		if err == nil {
			start := time.Now()
			ctx, cancel := context.WithTimeout(w.ctx, 15*time.Second)
			err = w.pub.Publish(ctx, events...)
			cancel()
			if err == nil {
				// Kafka has the events: release the waiters now. Deleting the rows is only
				// bookkeeping; if a crash loses the delete, the rows are published again, which
				// consumers ignore by version.
				w.advance(seqs[len(seqs)-1])
				if err = w.store.ack(seqs); err == nil {
					w.depth.Add(-int64(len(seqs)))
					w.m.published.Add(float64(len(seqs)))
					for _, e := range events {
						w.m.publishLatency.Observe(time.Since(e.CommittedAt).Seconds())
					}
					w.m.relayBatch.Observe(time.Since(start).Seconds())
					if failures > 0 {
						w.log.Info("Kafka is back: publishing the outbox", "after_failures", failures, "outbox_depth", w.depth.Load())
					}
					backoff, failures = 0, 0
					continue
				}
			}
		}
		if w.ctx.Err() != nil {
			return
		}
		failures++
		w.m.publishErrors.Inc()
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
		if failures == 1 || failures%10 == 0 {
			w.log.Warn("cannot publish the outbox; writes stay durable and will be published later",
				"err", err, "outbox_depth", w.depth.Load(), "attempt", failures, "retry_in", backoff)
		}
		select {
		case <-time.After(backoff):
		case <-w.ctx.Done():
			return
		}
	}
}

func (w *Writer) advance(v uint64) {
	w.mu.Lock()
	if v > w.published {
		w.published = v
		close(w.advanced)
		w.advanced = make(chan struct{})
	}
	w.mu.Unlock()
}

// waitPublished waits until version v is acked by Kafka, ctx ends, or WaitTimeout passes, and
// reports whether it was acked.
func (w *Writer) waitPublished(ctx context.Context, v uint64) bool {
	timer := time.NewTimer(w.cfg.WaitTimeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		done, ch := w.published >= v, w.advanced
		w.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			w.m.waitTimeouts.Inc()
			return false
		case <-ctx.Done():
			return false
		case <-w.ctx.Done():
			return false
		}
	}
}

// GRPCAddr returns the gRPC address (after Start, the bound one).
func (w *Writer) GRPCAddr() string {
	if w.glis != nil {
		return w.glis.Addr().String()
	}
	return w.cfg.GRPCAddr
}

// HTTPAddr returns the HTTP address after Start, or "".
func (w *Writer) HTTPAddr() string {
	if w.hlis != nil {
		return w.hlis.Addr().String()
	}
	return ""
}

// OutboxDepth returns the number of committed changes not yet acked by Kafka.
func (w *Writer) OutboxDepth() int64 { return w.depth.Load() }

// Shutdown stops accepting requests, lets those in flight finish (bounded by ctx and
// ShutdownTimeout), gives the relay until then to publish the outbox, and closes. Rows left
// in the outbox are published by the next start.
func (w *Writer) Shutdown(ctx context.Context) error {
	if !w.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ShutdownTimeout)
	defer cancel()
	if w.health != nil {
		w.health.Shutdown()
	}
	if w.grpc != nil {
		if err := grpcdrain.GracefulStop(ctx, w.grpc); err != nil {
			w.log.Warn("shutdown: " + err.Error())
		}
	}
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
	if w.http != nil {
		_ = w.http.Shutdown(ctx)
	}
	return w.stop()
}

// Close stops at once; the outbox is published by the next start.
func (w *Writer) Close() error {
	if !w.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	if w.grpc != nil {
		w.grpc.Stop()
	}
	if w.http != nil {
		_ = w.http.Close()
	}
	return w.stop()
}

func (w *Writer) stop() error {
	w.cancel()
	w.wg.Wait()
	err := errors.Join(w.pub.Close(), w.store.close())
	w.log.Info("writer stopped", "outbox_depth", w.depth.Load())
	return err
}

type metrics struct {
	reg            *prometheus.Registry
	writes         *prometheus.CounterVec
	published      prometheus.Counter
	publishErrors  prometheus.Counter
	publishLatency prometheus.Histogram
	relayBatch     prometheus.Histogram
	batchSize      prometheus.Histogram
	waitTimeouts   prometheus.Counter
	requests       *prometheus.CounterVec
	latency        *prometheus.HistogramVec
}

func newMetrics(w *Writer) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.writes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cachewire_writer_writes_total", Help: "Committed writes by op (put, delete)."}, []string{"op"})
	m.published = prometheus.NewCounter(prometheus.CounterOpts{Name: "cachewire_writer_events_published_total", Help: "Outbox rows acked by Kafka."})
	m.publishErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "cachewire_writer_publish_errors_total", Help: "Failed outbox publish attempts."})
	m.publishLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cachewire_writer_publish_latency_seconds",
		Help: "Time from commit until Kafka acked the event.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	m.relayBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cachewire_writer_relay_batch_seconds",
		Help: "Time to publish and ack one outbox batch.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cachewire_writer_commit_batch_size",
		Help: "Writes per group commit (one transaction, one fsync).", Buckets: prometheus.ExponentialBuckets(1, 2, 10)})
	m.waitTimeouts = prometheus.NewCounter(prometheus.CounterOpts{Name: "cachewire_writer_wait_published_timeouts_total",
		Help: "Writes that returned published=false because Kafka did not ack in time."})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cachewire_grpc_requests_total", Help: "gRPC requests by method and code."}, []string{"method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cachewire_grpc_request_duration_seconds", Help: "gRPC request latency by method.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18)}, []string{"method"})
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cachewire_writer_outbox_depth", Help: "Committed changes not yet acked by Kafka."},
		func() float64 { return float64(w.depth.Load()) })
	for _, c := range []prometheus.Collector{m.writes, m.published, m.publishErrors, m.publishLatency, m.relayBatch, m.batchSize,
		m.waitTimeouts, m.requests, m.latency, depth, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		m.reg.MustRegister(c)
	}
	return m
}
