package writer

import (
	"context"
	"errors"
	"fmt"
	"github.com/cachewire/cachewire/internal/retry"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/segmentio/kafka-go"
	"google.golang.org/grpc"

	"github.com/cachewire/cachewire/internal/serving"
	"github.com/cachewire/cachewire/internal/topics"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

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
	// DeadLetterTopic receives the outbox rows that can never be published: rows that do not
	// decode or fail validation, and rows Kafka refuses for their size even as an INVALIDATE.
	// Such a row is moved, in one transaction, from the outbox to the store's outbox_dead bucket
	// (raw bytes and reason), so it is never lost and never holds up the rows behind it. With a
	// topic set, the relay then writes each one there (raw bytes as the value; headers
	// cachewire.outbox.seq, cachewire.error, cachewire.source.writer, cachewire.source.topic)
	// and deletes it from outbox_dead once Kafka acked it, retrying while it cannot; the topic
	// must exist. If empty (the default), the rows stay in outbox_dead for an operator.
	DeadLetterTopic string
	// WaitTimeout bounds how long Put and Delete wait for Kafka's ack when wait_published is on.
	// If zero, 5 seconds.
	WaitTimeout time.Duration
	// Limits bound keys and values; zero fields take invalidation's defaults.
	Limits invalidation.Limits
	// MaxBatch bounds BatchGet. If zero, 100.
	MaxBatch int
	// ShutdownTimeout bounds draining at Shutdown. If zero, 10 seconds.
	ShutdownTimeout time.Duration
	// DrainDelay is how long Shutdown reports NOT_SERVING (gRPC health, /readyz 503) while still
	// serving, so that load balancers and readiness probes take the writer out first. Zero: no
	// delay (cmd/writer's --drain-delay defaults to 5 s).
	DrainDelay time.Duration
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
	case c.DeadLetterTopic == c.Topic:
		return errors.New("writer: the dead-letter topic must not be the event topic (--dead-letter-topic)")
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
// deletes rows only after Kafka acked them (dead-lettering rows that can never be published),
// and WriterService over gRPC.
type Writer struct {
	cfg    Config
	log    *slog.Logger
	store  *store
	pub    *invalidation.Publisher
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
	pub, err := invalidation.NewPublisher(invalidation.PublisherConfig{Brokers: cfg.Brokers, Topic: cfg.Topic,
		BatchTimeout: 500 * time.Microsecond, BatchSize: cfg.RelayBatch,
		// The relay retries on its own; one attempt bounded by 5 s keeps Close prompt.
		MaxAttempts: 1, WriteTimeout: 5 * time.Second, Limits: limits})
	if err != nil {
		st.close()
		return nil, err
	}
	w := &Writer{
		cfg: cfg, log: cfg.Logger.With("writer", cfg.WriterID), store: st, pub: pub, limits: limits,
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
			Transport: &kafka.Transport{DialTimeout: 5 * time.Second}, // its own, closed by stop
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
		MaxRecvMsgBytes: w.cfg.Limits.MaxValueBytes + 64<<10, Registry: w.m.reg, Logger: w.log,
		Register:   func(g *grpc.Server) { pb.RegisterWriterServiceServer(g, &service{w: w}) },
		DrainDelay: w.cfg.DrainDelay, ShutdownTimeout: w.cfg.ShutdownTimeout,
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

// ensureTopic creates the topic when it is missing and creation is allowed; a missing topic
// without creation fails. Kafka unreachable is not fatal.
func (w *Writer) ensureTopic() error {
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	_, err := topics.Partitions(ctx, w.cfg.Brokers, w.cfg.Topic)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, topics.ErrNotFound):
		w.log.Warn("Kafka unreachable at start-up; writes are kept in the outbox until it is back", "err", err)
		return nil
	case !w.cfg.CreateTopic:
		return fmt.Errorf("writer: topic %q does not exist and --create-topic is off", w.cfg.Topic)
	}
	if err := topics.Create(ctx, w.cfg.Brokers, topics.Spec{Name: w.cfg.Topic, Partitions: w.cfg.TopicPartitions, Replication: w.cfg.TopicReplication}); err != nil {
		return fmt.Errorf("writer: %w", err)
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
// oldest row left. A row that can never be published is dead-lettered instead, so that it
// does not hold up the rows behind it.
func (w *Writer) relayLoop() {
	backoff, failures := retry.NewBackoff(100*time.Millisecond, 5*time.Second), 0
	for {
		n, err := w.relayOnce()
		if err == nil && n == 0 {
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
			if failures > 0 {
				w.log.Info("Kafka is back: publishing the outbox", "after_failures", failures, "outbox_depth", w.depth.Load())
			}
			backoff.Reset()
			failures = 0
			continue
		}
		if w.ctx.Err() != nil {
			return
		}
		failures++
		w.m.publishErrors.Inc()
		wait := backoff.Next()
		if failures == 1 || failures%10 == 0 {
			w.log.Warn("cannot publish the outbox; writes stay durable and will be published later",
				"err", err, "outbox_depth", w.depth.Load(), "attempt", failures, "retry_in", wait)
		}
		if !retry.Sleep(w.ctx, wait) {
			return
		}
	}
}

// relayOnce handles the oldest outbox rows, up to RelayBatch: it dead-letters those that cannot
// be published and publishes the others, in order. It returns how many rows left the outbox.
func (w *Writer) relayOnce() (int, error) {
	rows, err := w.store.pending(w.cfg.RelayBatch)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	start := time.Now()
	var good []outboxRow
	var events []invalidation.Event
	var bad []deadRow
	for _, r := range rows {
		e, downgraded, err := prepare(r.raw, w.limits)
		if err != nil {
			bad = append(bad, deadRow{outboxRow: r, key: rowKey(r.raw), reason: err.Error()})
			continue
		}
		if downgraded {
			w.log.Info("outbox row carries a value larger than the event value max: publishing it as INVALIDATE",
				"outbox_seq", r.seq, "key", e.Key)
		}
		good, events = append(good, r), append(events, e)
	}
	// Dead rows go first: once a later version is published, waiters take every earlier one
	// as published unless it is marked dead.
	if err := w.bury(bad); err != nil {
		return 0, err
	}
	if len(good) == 0 {
		w.advance(rows[len(rows)-1].seq)
		return len(bad), nil
	}
	err = w.publish(events)
	if rejected(err) {
		// Kafka refused records for what they are (too large): retrying the batch can never
		// succeed. Find the rows it refuses, one at a time.
		n, err := w.publishEach(good, events)
		return len(bad) + n, err
	}
	if err != nil {
		return len(bad), err
	}
	// Kafka has the events: release the waiters now. Deleting the rows is only bookkeeping; if
	// a crash loses the delete, the rows are published again, which consumers ignore by version.
	w.advance(rows[len(rows)-1].seq)
	if err := w.acked(good, events); err != nil {
		return len(bad), err
	}
	w.m.relayBatch.Observe(time.Since(start).Seconds())
	return len(bad) + len(good), nil
}

// publishEach publishes rows one at a time, in order, after Kafka refused a batch of them. A row
// refused on its own is published as INVALIDATE if it carries a value, and dead-lettered if it
// is refused even so. It returns how many rows left the outbox.
func (w *Writer) publishEach(rows []outboxRow, events []invalidation.Event) (int, error) {
	done := 0
	for i, r := range rows {
		e := events[i]
		err := w.publish([]invalidation.Event{e})
		if rejected(err) && e.HasValue {
			w.log.Warn("Kafka refused an outbox row: publishing it as INVALIDATE", "outbox_seq", r.seq, "key", e.Key, "err", err)
			e = asInvalidate(e)
			err = w.publish([]invalidation.Event{e})
		}
		if rejected(err) {
			if err := w.bury([]deadRow{{outboxRow: r, key: e.Key, reason: "refused by Kafka: " + err.Error()}}); err != nil {
				return done, err
			}
			w.advance(r.seq)
			done++
			continue
		}
		if err != nil {
			return done, err
		}
		w.advance(r.seq)
		if err := w.acked([]outboxRow{r}, []invalidation.Event{e}); err != nil {
			return done, err
		}
		done++
	}
	return done, nil
}

// publish sends events to the topic and waits for Kafka's ack, bounded.
func (w *Writer) publish(events []invalidation.Event) error {
	ctx, cancel := context.WithTimeout(w.ctx, 15*time.Second)
	defer cancel()
	return w.pub.Publish(ctx, events...)
}

// acked deletes published rows from the outbox and counts them.
func (w *Writer) acked(rows []outboxRow, events []invalidation.Event) error {
	seqs := make([]uint64, len(rows))
	for i, r := range rows {
		seqs[i] = r.seq
	}
	if err := w.store.ack(seqs); err != nil {
		return err
	}
	w.depth.Add(-int64(len(rows)))
	w.m.published.Add(float64(len(rows)))
	for _, e := range events {
		w.m.publishLatency.Observe(time.Since(e.CommittedAt).Seconds())
	}
	return nil
}

// rejected reports whether err says that Kafka (or the publisher's own checks) refused records
// for what they are, so that sending them again unchanged can never succeed.
func rejected(err error) bool {
	var tooLarge kafka.MessageTooLargeError
	var each kafka.WriteErrors
	switch {
	case err == nil:
		return false
	case errors.As(err, &tooLarge), errors.Is(err, kafka.MessageSizeTooLarge), errors.Is(err, kafka.InvalidRecord),
		errors.Is(err, invalidation.ErrInvalidEvent):
		return true
	case errors.As(err, &each):
		for _, e := range each {
			if rejected(e) {
				return true
			}
		}
	}
	return false
}

// bury dead-letters rows: it moves them from the outbox to the outbox_dead bucket in one
// transaction, marks their versions so waiters do not take them as published, counts and logs
// them, and wakes the dead-letter loop.
func (w *Writer) bury(rows []deadRow) error {
	if len(rows) == 0 {
		return nil
	}
	if err := w.store.bury(rows); err != nil {
		return fmt.Errorf("writer: dead-letter %d outbox row(s): %w", len(rows), err)
	}
	w.mu.Lock()
	for _, r := range rows {
		if r.seq > w.startSeq { // a write of this run may be waiting for it
			w.dead[r.seq] = struct{}{}
		}
	}
	w.mu.Unlock()
	w.depth.Add(-int64(len(rows)))
	w.deadRows.Add(int64(len(rows)))
	w.deadLettered.Add(uint64(len(rows)))
	w.m.deadLettered.Add(float64(len(rows)))
	kept := "the outbox_dead bucket"
	if w.dlq != nil {
		kept = "the outbox_dead bucket until topic " + w.cfg.DeadLetterTopic + " acks it"
	}
	for _, r := range rows {
		if w.deadLog.Allow() {
			w.log.Error("outbox row cannot be published: dead-lettered so the rows behind it go on",
				"outbox_seq", r.seq, "key", r.key, "reason", r.reason, "kept_in", kept)
		}
	}
	select {
	case w.deadKick <- struct{}{}:
	default:
	}
	return nil
}

// deadLetterLoop writes the rows of the outbox_dead bucket to the dead-letter topic and deletes
// them from the bucket once Kafka acked them, retrying with capped back-off.
func (w *Writer) deadLetterLoop() {
	backoff, failures := retry.NewBackoff(time.Second, time.Minute), 0
	for {
		wait := (<-chan time.Time)(nil) // nothing to do: wait for a kick
		if w.deadRows.Load() > 0 {
			n, err := w.flushDead()
			switch {
			case err == nil && n > 0:
				backoff.Reset()
				failures = 0
				continue
			case err != nil:
				if w.ctx.Err() != nil {
					return
				}
				failures++
				d := backoff.Next()
				if failures == 1 || failures%10 == 0 {
					w.log.Warn("cannot write dead rows to the dead-letter topic; they stay in the outbox_dead bucket",
						"topic", w.cfg.DeadLetterTopic, "rows", w.deadRows.Load(), "err", err, "attempt", failures, "retry_in", d)
				}
				wait = time.After(d)
			}
		}
		select {
		case <-w.deadKick:
		case <-wait:
		case <-w.ctx.Done():
			return
		}
	}
}

// flushDead writes up to 100 dead rows to the dead-letter topic and deletes them from the bucket.
func (w *Writer) flushDead() (int, error) {
	rows, err := w.store.dead(100)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	msgs := make([]kafka.Message, len(rows))
	seqs := make([]uint64, len(rows))
	for i, r := range rows {
		seqs[i] = r.seq
		msgs[i] = kafka.Message{Value: r.raw, Headers: []kafka.Header{
			{Key: "cachewire.outbox.seq", Value: []byte(strconv.FormatUint(r.seq, 10))},
			{Key: "cachewire.error", Value: []byte(r.reason)},
			{Key: "cachewire.source.writer", Value: []byte(w.cfg.WriterID)},
			{Key: "cachewire.source.topic", Value: []byte(w.cfg.Topic)},
		}}
		if r.key != "" {
			msgs[i].Key = []byte(r.key)
		}
	}
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	if err := w.dlq.WriteMessages(ctx, msgs...); err != nil {
		return 0, err
	}
	if err := w.store.unbury(seqs); err != nil {
		return 0, err
	}
	w.deadRows.Add(-int64(len(rows)))
	w.log.Info("dead rows written to the dead-letter topic", "topic", w.cfg.DeadLetterTopic, "rows", len(rows),
		"first_outbox_seq", seqs[0])
	return len(rows), nil
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

// isPublished reports whether version v was acked by Kafka (a dead-lettered one never is).
func (w *Writer) isPublished(v uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, dead := w.dead[v]
	return w.published >= v && !dead
}

// waitPublished waits until version v is acked by Kafka, ctx ends, or WaitTimeout passes, and
// reports whether it was acked. A dead-lettered version is never acked.
func (w *Writer) waitPublished(ctx context.Context, v uint64) bool {
	timer := time.NewTimer(w.cfg.WaitTimeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		_, dead := w.dead[v]
		done, ch := w.published >= v, w.advanced
		w.mu.Unlock()
		if dead {
			return false
		}
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

type metrics struct {
	reg            *prometheus.Registry
	writes         *prometheus.CounterVec
	published      prometheus.Counter
	publishErrors  prometheus.Counter
	publishLatency prometheus.Histogram
	relayBatch     prometheus.Histogram
	batchSize      prometheus.Histogram
	waitTimeouts   prometheus.Counter
	deadLettered   prometheus.Counter
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
	m.deadLettered = prometheus.NewCounter(prometheus.CounterOpts{Name: "cachewire_writer_outbox_dead_lettered_total",
		Help: "Outbox rows that could never be published (undecodable, invalid, refused by Kafka), moved out of the outbox."})
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cachewire_writer_outbox_depth", Help: "Committed changes not yet acked by Kafka."},
		func() float64 { return float64(w.depth.Load()) })
	dead := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cachewire_writer_outbox_dead_rows",
		Help: "Dead-lettered outbox rows held in the outbox_dead bucket (without a dead-letter topic, all of them)."},
		func() float64 { return float64(w.deadRows.Load()) })
	for _, c := range []prometheus.Collector{m.writes, m.published, m.publishErrors, m.publishLatency, m.relayBatch, m.batchSize,
		m.waitTimeouts, m.deadLettered, depth, dead,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		m.reg.MustRegister(c)
	}
	return m
}
