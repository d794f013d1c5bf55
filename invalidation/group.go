package invalidation

import (
	"context"
	"errors"
	"fmt"

	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/retry"
)

// BatchApplier applies a batch of valid events, in order, to a shared tier. It returns an error
// when the batch may not have been applied in full; it is then called again with the same
// events, so applying must be idempotent (the version rule makes it so).
type BatchApplier interface {
	ApplyBatch(ctx context.Context, events []Event) error
}

// BatchApplierFunc adapts a function to a BatchApplier.
type BatchApplierFunc func(ctx context.Context, events []Event) error

// ApplyBatch calls f.
func (f BatchApplierFunc) ApplyBatch(ctx context.Context, events []Event) error {
	return f(ctx, events)
}

// GroupApplierConfig configures a GroupApplier. Every field documents its zero-value default.
type GroupApplierConfig struct {
	// Brokers are the Kafka bootstrap addresses. Required.
	Brokers []string
	// Topics are consumed. Required.
	Topics []string
	// GroupID is the consumer group shared by every node that applies to one Redis tier. If
	// empty, it defaults to "cachewire-l2".
	GroupID string
	// Applier applies the events. Required.
	Applier BatchApplier
	// Limits validate events; invalid ones are skipped. Zero fields take the package defaults.
	Limits Limits
	// Formats says how each topic's records are decoded (protobuf unless it says otherwise).
	Formats Formats
	// MaxBatch is the most events applied (and committed) at once. If zero, it defaults to 500.
	MaxBatch int
	// Linger is how long a batch waits for more events after the first. If zero, it defaults to
	// 2 ms.
	Linger time.Duration
	// StartAtEnd, when false (the default), makes a group with no committed offsets start at
	// the beginning of each partition, so that a new group cannot miss events that Redis may
	// already hold stale values for. Set it to start at the log end instead.
	StartAtEnd bool
	// HeartbeatInterval and SessionTimeout tune group membership. If zero, they default to
	// 1 s and 10 s.
	HeartbeatInterval, SessionTimeout time.Duration
	// DeadLetterTopic, when set, receives the raw bytes of every invalid event.
	DeadLetterTopic string
	// Logger receives warnings and errors. If nil, it defaults to slog.Default().
	Logger *slog.Logger
	// Kafka says how to connect: TLS, SASL. The zero value is plaintext without authentication.
	Kafka KafkaConn
	// Dialer, when set, connects to brokers instead of Kafka.Dialer().
	Dialer *kafka.Dialer
}

// GroupApplierStats are a GroupApplier's counters.
type GroupApplierStats struct {
	// Events counts valid events applied; Batches counts applied batches; Invalid counts skipped
	// events; Retries counts failed applies that were retried; CommitErrors counts failed commits.
	Events, Batches, Invalid, DeadLettered, Retries, CommitErrors uint64
}

// GroupApplier applies events to a shared tier once per event across all nodes: every node runs
// one, they share one consumer group, and each batch is committed only after the tier applied
// it, so a crash or rebalance re-delivers rather than loses (at-least-once). Run starts the
// work; Close stops it and leaves the group.
type GroupApplier struct {
	cfg    GroupApplierConfig
	log    *slog.Logger
	rcfg   kafka.ReaderConfig
	dlq    *kafka.Writer
	badLog *retry.LogLimiter

	mu      sync.Mutex
	r       *kafka.Reader // built by Run: a kafka-go group reader joins the group at once
	cancel  context.CancelFunc
	done    chan struct{}
	running bool
	closed  bool

	events, batches, invalid, deadLettered, retries, commitErrs atomic.Uint64
}

// NewGroupApplier returns a GroupApplier; it joins the group when Run starts.
func NewGroupApplier(cfg GroupApplierConfig) (*GroupApplier, error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("invalidation: group applier: no Kafka brokers")
	case len(cfg.Topics) == 0:
		return nil, errors.New("invalidation: group applier: no topics")
	case cfg.Applier == nil:
		return nil, errors.New("invalidation: group applier: no applier")
	}
	if cfg.GroupID == "" {
		cfg.GroupID = "cachewire-l2"
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 500
	}
	if cfg.Linger == 0 {
		cfg.Linger = 2 * time.Millisecond
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	start := kafka.FirstOffset
	if cfg.StartAtEnd {
		start = kafka.LastOffset
	}
	g := &GroupApplier{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "group-applier", "group", cfg.GroupID),
		badLog: retry.NewLogLimiter(10, time.Second),
		done:   make(chan struct{}),
	}
	dialer := cfg.Dialer
	if dialer == nil {
		dialer = cfg.Kafka.Dialer()
	}
	g.rcfg = kafka.ReaderConfig{
		Brokers:                cfg.Brokers,
		GroupID:                cfg.GroupID,
		GroupTopics:            cfg.Topics,
		MinBytes:               1,
		QueueCapacity:          2 * cfg.MaxBatch, // kafka-go fetches the next batch while this one is applied
		MaxBytes:               4 << 20,
		MaxWait:                250 * time.Millisecond,
		ReadLagInterval:        -1,
		HeartbeatInterval:      cfg.HeartbeatInterval,
		SessionTimeout:         cfg.SessionTimeout,
		RebalanceTimeout:       cfg.SessionTimeout,
		JoinGroupBackoff:       500 * time.Millisecond,
		CommitInterval:         0, // commit synchronously, after the apply
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 5 * time.Second,
		StartOffset:            start,
		Dialer:                 dialer,
		ErrorLogger:            kafka.LoggerFunc(func(msg string, args ...any) { g.log.Debug(fmt.Sprintf(msg, args...)) }),
	}
	if err := g.rcfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalidation: group applier: %w", err)
	}
	if cfg.DeadLetterTopic != "" {
		g.dlq = newDeadLetterWriter(cfg.Kafka, cfg.Brokers, cfg.DeadLetterTopic)
	}
	return g, nil
}

// Run consumes, applies and commits until ctx ends or Close is called, and returns nil then.
func (g *GroupApplier) Run(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	if g.running {
		g.mu.Unlock()
		return errors.New("invalidation: group applier: Run called twice")
	}
	g.running = true
	g.r = kafka.NewReader(g.rcfg)
	ctx, g.cancel = context.WithCancel(ctx)
	g.mu.Unlock()
	defer close(g.done)
	defer g.cancel()

	msgs := make([]kafka.Message, 0, g.cfg.MaxBatch)
	events := make([]Event, 0, g.cfg.MaxBatch)
	for {
		msgs, events = msgs[:0], events[:0]
		m, err := g.r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			g.log.Warn("fetch failed", "err", err)
			if !retry.Sleep(ctx, 100*time.Millisecond) {
				return nil
			}
			continue
		}
		msgs = append(msgs, m)
		linger, cancel := context.WithTimeout(ctx, g.cfg.Linger)
		for len(msgs) < g.cfg.MaxBatch {
			m, err := g.r.FetchMessage(linger)
			if err != nil {
				break
			}
			msgs = append(msgs, m)
		}
		cancel()
		for _, m := range msgs {
			e, err := g.cfg.Formats.Decode(m, g.cfg.Limits)
			if errors.Is(err, ErrTombstone) {
				continue // a Debezium tombstone: nothing to apply
			}
			if err != nil {
				g.bad(ctx, m, err)
				continue
			}
			e.Offset = m.Offset
			events = append(events, e)
		}
		if !g.apply(ctx, events) {
			return nil
		}
		if err := g.r.CommitMessages(ctx, msgs...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// After a rebalance the partition's new owner re-reads from the last commit:
			// applying twice is harmless.
			g.commitErrs.Add(1)
			g.log.Warn("commit failed; events may be applied again", "err", err)
		}
	}
}

// apply retries until the batch is applied or ctx ends, and reports whether it was applied.
// After a failure it retries in halves, down to one event at a time: a batch too large for the
// store's timeout (a slow Redis, large values) would otherwise fail the same way forever. Parts
// already applied are not applied again; applying one twice would be harmless anyway.
func (g *GroupApplier) apply(ctx context.Context, events []Event) bool {
	if len(events) == 0 {
		return true
	}
	backoff := retry.NewBackoff(50*time.Millisecond, 5*time.Second)
	chunk := len(events)
	for attempt := 1; ; attempt++ {
		var err error
		for len(events) > 0 {
			part := events[:min(chunk, len(events))]
			if err = g.cfg.Applier.ApplyBatch(ctx, part); err != nil {
				break
			}
			g.events.Add(uint64(len(part)))
			g.batches.Add(1)
			events = events[len(part):]
		}
		if err == nil {
			if attempt > 1 {
				g.log.Info("applied after retries", "attempts", attempt, "batch", chunk)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		g.retries.Add(1)
		if attempt == 1 || attempt%20 == 0 {
			g.log.Warn("apply failed; retrying in smaller batches without committing", "events", len(events), "attempt", attempt, "next_batch", max(chunk/2, 1), "err", err)
		}
		chunk = max(chunk/2, 1)
		if !retry.Sleep(ctx, backoff.Next()) {
			return false
		}
	}
}

func (g *GroupApplier) bad(ctx context.Context, m kafka.Message, err error) {
	g.invalid.Add(1)
	if g.badLog.Allow() {
		g.log.Warn("skipping invalid event", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
	}
	if g.dlq != nil {
		if derr := deadLetter(ctx, g.dlq, m, err); derr != nil {
			g.log.Error("cannot write invalid event to the dead-letter topic", "offset", m.Offset, "err", derr)
		} else {
			g.deadLettered.Add(1)
		}
	}
}

// Stats returns a snapshot of the counters.
func (g *GroupApplier) Stats() GroupApplierStats {
	return GroupApplierStats{
		Events: g.events.Load(), Batches: g.batches.Load(), Invalid: g.invalid.Load(),
		DeadLettered: g.deadLettered.Load(), Retries: g.retries.Load(), CommitErrors: g.commitErrs.Load(),
	}
}

// Close stops Run, waits for it, and leaves the group. It is safe to call more than once;
// later calls return ErrClosed.
func (g *GroupApplier) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	g.closed = true
	cancel, running, r := g.cancel, g.running, g.r
	g.mu.Unlock()
	var err error
	if running {
		cancel()
		<-g.done
		err = r.Close()
	}
	if g.dlq != nil {
		err = errors.Join(err, closeDeadLetterWriter(g.dlq))
	}
	return err
}
