package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/internal/retry"
	"github.com/cachewire/cachewire/internal/topics"
	"github.com/cachewire/cachewire/internal/tracing"
	"github.com/cachewire/cachewire/invalidation"
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// DSN is the PostgreSQL connection string (URL or key=value) of the database holding the
	// outbox, with the outbox's schema on its search_path. Required.
	DSN string
	// Brokers are Kafka bootstrap addresses. Required.
	Brokers []string
	// Kafka says how to connect to them: TLS and SASL. The zero value is plaintext without
	// authentication.
	Kafka invalidation.KafkaConn
	// Topic receives the change events. Required; it must exist.
	Topic string
	// DeadLetterTopic receives each row that can never be published (an unknown op, an empty
	// key, a value over the limits) as a JSON DeadLetter, keyed by the row's key. If empty,
	// Topic + ".dead". The relay creates it (one partition, replication factor 1) if it does not
	// exist; create it beforehand for another replication factor. Dead rows are also kept in
	// the cachewire_outbox_dead table.
	DeadLetterTopic string
	// Source names this relay on the events it publishes. If empty, "outbox-relay".
	Source string
	// Batch bounds the rows published at once. If zero, 500.
	Batch int
	// PollInterval is how often the relay looks for rows without a notification, and how often
	// a standby tries to become the active relay. If zero, 1 second.
	PollInterval time.Duration
	// LockKey is the PostgreSQL advisory lock that makes one relay active per outbox. If zero,
	// a hash of the schema's name: relays of one outbox share it.
	LockKey int64
	// Logger receives the relay's logs. If nil, slog.Default().
	Logger *slog.Logger
	// Registerer, if set, receives the relay's metrics: cachewire_outbox_depth,
	// cachewire_outbox_oldest_pending_seconds, cachewire_outbox_published_total,
	// cachewire_outbox_dead_total, cachewire_outbox_errors_total, cachewire_outbox_active and
	// cachewire_outbox_publish_latency_seconds (commit to Kafka's ack).
	Registerer prometheus.Registerer
	// Tracer, when set, records a "publish TOPIC" span for each row that carries a sampled
	// trace context (the traceparent column), as its child, and publishes the span's context
	// with the event, so that the cache nodes' apply spans are its children. Rows carry their
	// trace context on (in the event and the record's traceparent header) with or without it.
	Tracer trace.TracerProvider
}

// RelayStats are a Relay's counters.
type RelayStats struct {
	// Active is true while this relay holds the advisory lock and publishes.
	Active bool
	// Published counts rows published and deleted; Dead counts rows that could never be
	// published, sent to the dead-letter topic and moved to cachewire_outbox_dead; Errors counts failed
	// attempts (Kafka or PostgreSQL), each retried.
	Published, Dead, Errors uint64
	// Depth is the number of rows in the outbox and OldestPending the age of the oldest, as the
	// active relay last counted them (when it had nothing more to publish).
	Depth         int64
	OldestPending time.Duration
}

// Relay publishes outbox rows to Kafka in seq order, with acks from all in-sync replicas, and
// deletes each row only after the ack. Only one relay per outbox is active at a time (a
// PostgreSQL advisory lock, held by the relay's connection): a standby takes over within
// PollInterval of the active one's connection closing, which PostgreSQL notices at once when the
// process dies. It wakes on LISTEN/NOTIFY, and polls every PollInterval as a fallback.
//
// Delivery is at least once: a relay that dies after Kafka's ack and before the delete publishes
// those rows again, and caches ignore an event they already applied (its version is not newer).
type Relay struct {
	cfg RelayConfig
	log *slog.Logger
	w   *kafka.Writer
	dlq *kafka.Writer

	dlqChecked atomic.Bool  // the dead-letter topic was found or created
	tracer     trace.Tracer // nil without RelayConfig.Tracer
	// traceColumn: the outbox table has the traceparent column (read by the session's goroutine).
	traceColumn bool

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	closed bool

	active                  atomic.Bool
	published, dead, errors atomic.Uint64
	depth, oldestNanos      atomic.Int64
	latency                 prometheus.Histogram

	afterPublish func() // tests: runs between Kafka's ack and the delete
}

// NewRelay checks cfg; it connects to nothing until Run.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	switch {
	case cfg.DSN == "":
		return nil, errors.New("outbox: relay: no PostgreSQL DSN")
	case len(cfg.Brokers) == 0:
		return nil, errors.New("outbox: relay: no Kafka brokers")
	case cfg.Topic == "":
		return nil, errors.New("outbox: relay: no topic")
	}
	if _, err := pgx.ParseConfig(cfg.DSN); err != nil {
		return nil, fmt.Errorf("outbox: relay: DSN: %w", err)
	}
	if cfg.Source == "" {
		cfg.Source = "outbox-relay"
	}
	if cfg.DeadLetterTopic == "" {
		cfg.DeadLetterTopic = cfg.Topic + ".dead"
	}
	if cfg.DeadLetterTopic == cfg.Topic {
		return nil, fmt.Errorf("outbox: relay: the dead-letter topic is the event topic %q; caches would read dead rows as events", cfg.Topic)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Relay{cfg: cfg, log: cfg.Logger.With("component", "outbox-relay"), done: make(chan struct{}), tracer: tracing.Tracer(cfg.Tracer)}
	r.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cachewire_outbox_publish_latency_seconds",
		Help: "From the row's commit to Kafka's ack.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18)})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(relayCollector{r}); err != nil {
			return nil, fmt.Errorf("outbox: relay: metrics: %w", err)
		}
	}
	r.w = &kafka.Writer{
		Addr: kafka.TCP(cfg.Brokers...), Topic: cfg.Topic, Balancer: kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchSize: cfg.Batch, BatchTimeout: time.Millisecond,
		MaxAttempts: 1, WriteTimeout: 10 * time.Second, Transport: cfg.Kafka.Transport(),
	}
	r.dlq = &kafka.Writer{Transport: cfg.Kafka.Transport(),
		Addr: kafka.TCP(cfg.Brokers...), Topic: cfg.DeadLetterTopic, Balancer: kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, MaxAttempts: 1, WriteTimeout: 10 * time.Second,
	}
	return r, nil
}

// DeadLetter is what the relay publishes to the dead-letter topic for a row it can never
// publish: the row as it was, and why.
type DeadLetter struct {
	Seq         int64     `json:"seq"`
	Key         string    `json:"key"`
	Op          string    `json:"op"`
	Version     int64     `json:"version"`
	Value       []byte    `json:"value,omitempty"` // base64 in JSON
	CommittedAt time.Time `json:"committed_at"`
	Error       string    `json:"error"`
	Source      string    `json:"source"`
}

// checkDeadLetterTopic creates the dead-letter topic if it does not exist. Other errors (no
// right to describe or create topics) are logged: publishing a dead row will say more.
func (r *Relay) checkDeadLetterTopic(ctx context.Context) {
	if r.dlqChecked.Load() {
		return
	}
	_, err := topics.Admin{Brokers: r.cfg.Brokers, Conn: r.cfg.Kafka}.Partitions(ctx, r.cfg.DeadLetterTopic)
	if errors.Is(err, topics.ErrNotFound) {
		r.log.Info("creating the dead-letter topic", "topic", r.cfg.DeadLetterTopic)
		err = topics.Admin{Brokers: r.cfg.Brokers, Conn: r.cfg.Kafka}.Create(ctx, topics.Spec{Name: r.cfg.DeadLetterTopic, Partitions: 1})
	}
	if err != nil {
		r.log.Warn("cannot check the dead-letter topic; dead rows will wait in the outbox until it can be written", "topic", r.cfg.DeadLetterTopic, "err", err)
		return
	}
	r.dlqChecked.Store(true)
}

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Active: r.active.Load(), Published: r.published.Load(), Dead: r.dead.Load(), Errors: r.errors.Load(),
		Depth: r.depth.Load(), OldestPending: time.Duration(r.oldestNanos.Load())}
}

var (
	descDepth     = prometheus.NewDesc("cachewire_outbox_depth", "Rows in the outbox, as the active relay last counted them.", nil, nil)
	descOldest    = prometheus.NewDesc("cachewire_outbox_oldest_pending_seconds", "Age of the oldest row in the outbox when last counted (0: empty).", nil, nil)
	descPublished = prometheus.NewDesc("cachewire_outbox_published_total", "Rows published to Kafka and deleted.", nil, nil)
	descDead      = prometheus.NewDesc("cachewire_outbox_dead_total", "Rows that can never be published, sent to the dead-letter topic and moved to cachewire_outbox_dead.", nil, nil)
	descErrors    = prometheus.NewDesc("cachewire_outbox_errors_total", "Failed attempts (Kafka or PostgreSQL), each retried.", nil, nil)
	descActive    = prometheus.NewDesc("cachewire_outbox_active", "1 while this relay holds the outbox's lock and publishes; 0 on a standby.", nil, nil)
)

type relayCollector struct{ r *Relay }

func (c relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDepth, descOldest, descPublished, descDead, descErrors, descActive} {
		ch <- d
	}
	c.r.latency.Describe(ch)
}

func (c relayCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Stats()
	active := 0.0
	if s.Active {
		active = 1
	}
	ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(s.Depth))
	ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, s.OldestPending.Seconds())
	ch <- prometheus.MustNewConstMetric(descPublished, prometheus.CounterValue, float64(s.Published))
	ch <- prometheus.MustNewConstMetric(descDead, prometheus.CounterValue, float64(s.Dead))
	ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(s.Errors))
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, active)
	c.r.latency.Collect(ch)
}

// count records the outbox's depth and the age of its oldest row.
func (r *Relay) count(ctx context.Context, conn *pgx.Conn) error {
	var n int64
	var oldest *time.Time
	if err := conn.QueryRow(ctx, `SELECT count(*), min(committed_at) FROM cachewire_outbox`).Scan(&n, &oldest); err != nil {
		return fmt.Errorf("count the outbox: %w", err)
	}
	r.depth.Store(n)
	age := time.Duration(0)
	if oldest != nil {
		age = max(time.Since(*oldest), 0)
	}
	r.oldestNanos.Store(int64(age))
	return nil
}

// Run relays until ctx ends or Close is called, and returns nil then. It retries every
// failure (PostgreSQL or Kafka down) with back-off; rows stay in the outbox meanwhile.
func (r *Relay) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errors.New("outbox: relay closed")
	}
	if r.cancel != nil {
		r.mu.Unlock()
		return errors.New("outbox: relay: Run called twice")
	}
	ctx, r.cancel = context.WithCancel(ctx)
	r.mu.Unlock()
	defer close(r.done)
	defer r.w.Transport.(*kafka.Transport).CloseIdleConnections()
	defer r.dlq.Transport.(*kafka.Transport).CloseIdleConnections()
	defer r.w.Close()
	defer r.dlq.Close()
	backoff := retry.NewBackoff(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		err := r.session(ctx)
		r.active.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		r.errors.Add(1)
		r.log.Warn("relay session ended; reconnecting", "err", err)
		if !retry.Sleep(ctx, backoff.Next()) {
			return nil
		}
	}
	return nil
}

// Close stops Run and waits for it. Rows not yet published stay in the outbox.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-r.done
	}
	return nil
}

// session connects, waits to become the active relay, and publishes until an error or ctx ends.
func (r *Relay) session(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, r.cfg.DSN)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx) // ends the session: releases the lock for a standby
	}()
	key := r.cfg.LockKey
	if key == 0 {
		var schema string
		if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return fmt.Errorf("current_schema: %w", err)
		}
		h := fnv.New64a()
		h.Write([]byte("cachewire_outbox:" + schema))
		key = int64(h.Sum64())
	}
	for standby := false; ; standby = true {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
			return fmt.Errorf("advisory lock: %w", err)
		}
		if got {
			break
		}
		if !standby {
			r.log.Info("standby: another relay holds this outbox's lock and publishes; taking over when it stops", "lock", key, "poll_interval", r.cfg.PollInterval)
		}
		if !retry.Sleep(ctx, r.cfg.PollInterval) {
			return ctx.Err()
		}
	}
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('cachewire_outbox')
		AND attname = 'traceparent' AND NOT attisdropped)`).Scan(&r.traceColumn); err != nil {
		return fmt.Errorf("look for the traceparent column: %w", err)
	}
	if !r.traceColumn {
		r.log.Info("the outbox table has no traceparent column: events carry no trace context (outbox.Apply adds it)")
	}
	if _, err := conn.Exec(ctx, `LISTEN cachewire_outbox`); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	r.active.Store(true)
	r.log.Info("active: publishing the outbox", "topic", r.cfg.Topic, "dead_letter_topic", r.cfg.DeadLetterTopic, "lock", key)
	r.checkDeadLetterTopic(ctx)
	backoff := retry.NewBackoff(100*time.Millisecond, 5*time.Second)
	for {
		n, err := r.drain(ctx, conn)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if conn.IsClosed() {
				return err
			}
			r.errors.Add(1)
			r.log.Warn("cannot publish the outbox; retrying", "err", err)
			if !retry.Sleep(ctx, backoff.Next()) {
				return ctx.Err()
			}
			continue
		}
		backoff.Reset()
		if n == r.cfg.Batch {
			continue // more rows may be waiting
		}
		if err := r.count(ctx, conn); err != nil && conn.IsClosed() {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, r.cfg.PollInterval)
		_, err = conn.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && conn.IsClosed() {
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

type row struct {
	seq     int64
	event   invalidation.Event
	op      string
	version int64
	invalid error
}

// drain publishes one batch of rows in seq order and deletes them, and returns how many rows it
// read.
func (r *Relay) drain(ctx context.Context, conn *pgx.Conn) (int, error) {
	// A table made before the traceparent column has none: read NULL instead.
	tpCol := "NULL::text"
	if r.traceColumn {
		tpCol = "traceparent"
	}
	rs, err := conn.Query(ctx, `SELECT seq, key, op, version, value, committed_at, `+tpCol+` FROM cachewire_outbox ORDER BY seq LIMIT $1`, r.cfg.Batch)
	if err != nil {
		return 0, fmt.Errorf("read the outbox: %w", err)
	}
	var rows []row
	for rs.Next() {
		var (
			seq, version int64
			key, op      string
			value        []byte
			committedAt  time.Time
			tp           *string
		)
		if err := rs.Scan(&seq, &key, &op, &version, &value, &committedAt, &tp); err != nil {
			rs.Close()
			return 0, fmt.Errorf("read the outbox: %w", err)
		}
		e := invalidation.Event{Key: key, Version: uint64(version), Value: value, HasValue: value != nil,
			CommittedAt: committedAt, Source: r.cfg.Source}
		if tp != nil && *tp != "" {
			e.Trace = map[string]string{invalidation.HeaderTraceparent: *tp}
		}
		rw := row{seq: seq, op: op, version: version}
		switch o, ok := ops[op]; {
		case !ok:
			rw.invalid = fmt.Errorf("unknown op %q (want UPSERT, DELETE, INVALIDATE or EVICT)", op)
		case version < 0:
			rw.invalid = fmt.Errorf("negative version %d", version)
		default:
			e.Op = o
			rw.invalid = invalidation.Limits{}.WithDefaults().Validate(&e)
		}
		rw.event = e
		rows = append(rows, rw)
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return 0, fmt.Errorf("read the outbox: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	msgs := make([]kafka.Message, 0, len(rows))
	var sent, dead []int64
	var dls []kafka.Message
	var spans tracing.Spans
	for _, rw := range rows {
		if rw.invalid != nil {
			dead = append(dead, rw.seq)
			r.log.Error("outbox row can never be published; dead-lettered", "seq", rw.seq, "key", rw.event.Key, "err", rw.invalid,
				"topic", r.cfg.DeadLetterTopic, "table", "cachewire_outbox_dead")
			dl, err := json.Marshal(DeadLetter{Seq: rw.seq, Key: rw.event.Key, Op: rw.op, Version: rw.version, Value: rw.event.Value,
				CommittedAt: rw.event.CommittedAt, Error: rw.invalid.Error(), Source: r.cfg.Source})
			if err != nil {
				return 0, fmt.Errorf("dead-letter row %d: %w", rw.seq, err)
			}
			dls = append(dls, kafka.Message{Key: []byte(rw.event.Key), Value: dl})
			if _, err := conn.Exec(ctx, `INSERT INTO cachewire_outbox_dead (seq, key, op, version, value, committed_at, error)
				SELECT seq, key, op, version, value, committed_at, $2 FROM cachewire_outbox WHERE seq = $1 ON CONFLICT (seq) DO NOTHING`,
				rw.seq, rw.invalid.Error()); err != nil {
				return 0, fmt.Errorf("dead-letter row %d: %w", rw.seq, err)
			}
			continue
		}
		one := []invalidation.Event{rw.event} // StartPublish points its Trace at the publish span
		spans = append(spans, tracing.StartPublish(r.tracer, r.cfg.Topic, one, attribute.Int64("cachewire.outbox_seq", rw.seq))...)
		rw.event = one[0]
		raw, err := invalidation.Encode(&rw.event)
		if err != nil {
			spans.End(err)
			return 0, fmt.Errorf("encode row %d: %w", rw.seq, err)
		}
		msgs = append(msgs, kafka.Message{Key: []byte(rw.event.Key), Value: raw, Headers: invalidation.TraceHeaders(rw.event.Trace)})
		sent = append(sent, rw.seq)
	}
	if len(msgs) > 0 {
		err := r.w.WriteMessages(ctx, msgs...)
		spans.End(err)
		if err != nil {
			return 0, fmt.Errorf("publish %d rows to %s: %w", len(msgs), r.cfg.Topic, err)
		}
		now := time.Now()
		for _, rw := range rows {
			if rw.invalid == nil {
				r.latency.Observe(now.Sub(rw.event.CommittedAt).Seconds())
			}
		}
	}
	if len(dls) > 0 {
		r.checkDeadLetterTopic(ctx)
		if err := r.dlq.WriteMessages(ctx, dls...); err != nil {
			return 0, fmt.Errorf("dead-letter %d rows to %s: %w", len(dls), r.cfg.DeadLetterTopic, err)
		}
	}
	if r.afterPublish != nil {
		r.afterPublish()
		if err := ctx.Err(); err != nil {
			return 0, err // the relay "died" after the ack: the rows stay, and are published again
		}
	}
	// Delete exactly what was published (or dead-lettered): a row with a lower seq may commit
	// after this batch was read, and must stay.
	if _, err := conn.Exec(ctx, `DELETE FROM cachewire_outbox WHERE seq = ANY($1)`, append(sent, dead...)); err != nil {
		return 0, fmt.Errorf("delete published rows: %w", err)
	}
	r.published.Add(uint64(len(sent)))
	r.dead.Add(uint64(len(dead)))
	return len(rows), nil
}

var ops = map[string]invalidation.Op{
	"UPSERT": invalidation.OpUpsert, "DELETE": invalidation.OpDelete,
	"INVALIDATE": invalidation.OpInvalidate, "EVICT": invalidation.OpEvict,
}
