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

// Sink receives what a Subscriber reads. Both methods are called from the partition's own
// goroutine, in offset order, and must be fast.
type Sink interface {
	// ApplyEvents applies valid events read from one partition, in offset order.
	ApplyEvents(topic string, partition int, events []Event)
	// Reset is called when the subscriber finds a gap on a partition that it cannot repair (its
	// offset fell out of retention, or the topic was deleted or recreated): the sink must forget
	// everything it learned from events, since some were lost. The subscriber then continues at
	// the log end.
	Reset(topic string, partition int, reason string)
}

// SinkFuncs adapts two functions to a Sink.
type SinkFuncs struct {
	Apply     func(topic string, partition int, events []Event)
	ResetFunc func(topic string, partition int, reason string)
}

// ApplyEvents calls f.Apply.
func (f SinkFuncs) ApplyEvents(topic string, partition int, events []Event) {
	f.Apply(topic, partition, events)
}

// Reset calls f.ResetFunc.
func (f SinkFuncs) Reset(topic string, partition int, reason string) {
	f.ResetFunc(topic, partition, reason)
}

// SubscriberConfig configures a Subscriber. Every field documents its zero-value default.
type SubscriberConfig struct {
	// Brokers are the Kafka bootstrap addresses. Required.
	Brokers []string
	// Topics are read in full: every partition of each. Required.
	Topics []string
	// Sink receives the events. Required.
	Sink Sink
	// Limits validate events; invalid ones are skipped. Zero fields take the package defaults.
	Limits Limits
	// Formats says how each topic's records are decoded (protobuf unless it says otherwise; a
	// record's contentType header wins).
	Formats Formats
	// MaxWait is how long one fetch waits for new events. It also sets how often an idle
	// partition confirms that it is caught up. If zero, it defaults to 250 ms.
	MaxWait time.Duration
	// MaxBytes bounds one fetch. If zero, it defaults to 4 MiB.
	MaxBytes int
	// MetadataInterval is how often partitions added to the topics are looked for. If zero, it
	// defaults to 5 seconds. A key's freshness is never later than the last lookup
	// (MetadataAt), so a cache node sets it well below its max staleness.
	MetadataInterval time.Duration
	// DeadLetterTopic, when set, receives the raw bytes of every invalid event, with headers
	// naming where it came from and why it was rejected.
	DeadLetterTopic string
	// Logger receives warnings and errors. If nil, it defaults to slog.Default().
	Logger *slog.Logger
	// Kafka says how to connect: TLS, SASL. The zero value is plaintext without authentication.
	Kafka KafkaConn
	// Dialer, when set, connects to brokers instead of Kafka.Dialer() (5 s timeout).
	Dialer *kafka.Dialer
	// OnInvalid, if set, is called for every invalid event skipped (for metrics); it runs on the
	// partition's goroutine and must be fast.
	OnInvalid func(topic string, partition int, offset int64, err error)
	// FromBeginning starts the partitions that exist at Run from their first offset instead of
	// the log end. For tools and benchmarks that replay a topic; a cache node must not set it.
	FromBeginning bool
}

// Subscriber reads every partition of its topics without a consumer group (every node sees
// every event) and hands the events to its Sink. At start it positions each partition at the
// log end (a new node's L1 is empty, so older events are of no use); partitions added later
// are read from their beginning, so none of their events is missed. It tracks per partition
// when it was last caught up with the log end, resets the sink on a gap it cannot repair, and
// reconnects after broker failures.
//
// Run starts the work; Close stops it. Its methods are safe for concurrent use.
type Subscriber struct {
	cfg    SubscriberConfig
	log    *slog.Logger
	dialer *kafka.Dialer
	dlq    *kafka.Writer
	badLog *retry.LogLimiter

	ready     chan struct{}
	readyOnce sync.Once
	done      chan struct{} // closed when a started Run returns

	// onRunStart, when set (by tests), is called by Run once it owns the subscriber and before
	// it does any work.
	onRunStart func()

	mu      sync.Mutex
	cancel  context.CancelFunc // set by Run
	running bool               // Run has started
	closed  bool               // Close has been called
	parts   map[topicPartition]*PartitionState
	count   map[string]int       // partitions per topic, from the last metadata
	history map[string][]int     // per topic, the partition counts seen since the last shrink, oldest first
	metaAt  map[string]time.Time // per topic, when the last metadata lookup that succeeded began
	metaErr string               // the last metadata lookup's error, until one succeeds

	events, invalid, deadLettered, resets, reconnects atomic.Uint64
}

// NewSubscriber returns a Subscriber; it does nothing until Run.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("invalidation: subscriber: no Kafka brokers")
	case len(cfg.Topics) == 0:
		return nil, errors.New("invalidation: subscriber: no topics")
	case cfg.Sink == nil:
		return nil, errors.New("invalidation: subscriber: no sink")
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 250 * time.Millisecond
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 4 << 20
	}
	if cfg.MetadataInterval == 0 {
		cfg.MetadataInterval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	s := &Subscriber{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "subscriber"),
		dialer:  cfg.Dialer,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		parts:   make(map[topicPartition]*PartitionState),
		count:   make(map[string]int),
		history: make(map[string][]int),
		metaAt:  make(map[string]time.Time),
		badLog:  retry.NewLogLimiter(10, time.Second),
	}
	if s.dialer == nil {
		s.dialer = cfg.Kafka.Dialer()
	}
	if cfg.DeadLetterTopic != "" {
		s.dlq = newDeadLetterWriter(cfg.Kafka, cfg.Brokers, cfg.DeadLetterTopic)
	}
	return s, nil
}

// Ready is closed once every partition that existed when Run started is positioned at its log
// end. A node begins serving only then.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// Run reads until ctx ends or Close is called, and returns nil then. It returns ErrClosed if the
// Subscriber was closed, and an error if Run was already called.
func (s *Subscriber) Run(ctx context.Context) error {
	// Checking closed and claiming the subscriber under one lock leaves Close no window in
	// which it sees neither: it either makes this Run return ErrClosed or waits for it.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.running {
		s.mu.Unlock()
		return errors.New("invalidation: subscriber: Run called twice")
	}
	s.running = true
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.mu.Unlock()
	defer close(s.done) // runs last: after every partition goroutine has returned
	defer cancel()
	if s.onRunStart != nil {
		s.onRunStart()
	}

	var wg sync.WaitGroup
	defer wg.Wait()

	boot := true
	var bootPending atomic.Int64
	tick := time.NewTicker(s.cfg.MetadataInterval)
	defer tick.Stop()
	backoff := retry.NewBackoff(100*time.Millisecond, 5*time.Second)
	for {
		found, err := s.lookupPartitions(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("cannot read topic metadata; retrying", "topics", s.cfg.Topics, "err", err)
			s.mu.Lock()
			s.metaErr = "cannot read topic metadata: " + err.Error()
			s.mu.Unlock()
			if !retry.Sleep(ctx, backoff.Next()) {
				return nil
			}
			continue
		}
		backoff.Reset()
		s.mu.Lock()
		s.metaErr = ""
		s.mu.Unlock()
		for _, tp := range found {
			s.mu.Lock()
			_, running := s.parts[tp]
			if !running {
				s.parts[tp] = &PartitionState{Topic: tp.topic, Partition: tp.partition}
			}
			s.mu.Unlock()
			if running {
				continue
			}
			start := kafka.FirstOffset
			if boot {
				if !s.cfg.FromBeginning {
					start = kafka.LastOffset
				}
				bootPending.Add(1)
			} else {
				s.log.Info("reading new partition from its beginning", "topic", tp.topic, "partition", tp.partition)
			}
			wg.Add(1)
			go func(tp topicPartition, start int64, boot bool) {
				defer wg.Done()
				s.runPartition(ctx, tp, start, func() {
					if boot && bootPending.Add(-1) == 0 {
						s.readyOnce.Do(func() { close(s.ready) })
					}
				})
			}(tp, start, boot)
		}
		boot = false
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// lookupPartitions returns every partition of the configured topics. A topic that does not exist
// is an error.
func (s *Subscriber) lookupPartitions(ctx context.Context) ([]topicPartition, error) {
	var out []topicPartition
	for _, topic := range s.cfg.Topics {
		var parts []kafka.Partition
		var err error
		began := time.Now()
		for _, b := range shuffled(s.cfg.Brokers) {
			if parts, err = s.dialer.LookupPartitions(ctx, "tcp", b, topic); err == nil {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("topic %q: %w", topic, err)
		}
		if len(parts) == 0 {
			return nil, fmt.Errorf("topic %q has no partitions", topic)
		}
		s.mu.Lock()
		s.count[topic] = len(parts)
		if h := s.history[topic]; len(h) == 0 || len(parts) < h[len(h)-1] {
			s.history[topic] = []int{len(parts)} // new, or recreated smaller: older counts mean nothing
		} else if len(parts) > h[len(h)-1] {
			s.log.Info("topic has more partitions: keys move to new partitions", "topic", topic, "partitions", len(parts), "was", h[len(h)-1])
			s.history[topic] = append(h[max(len(h)-3, 0):], len(parts))
		}
		s.metaAt[topic] = began
		s.mu.Unlock()
		for _, p := range parts {
			out = append(out, topicPartition{topic, p.ID})
		}
	}
	return out, nil
}

// Close stops Run, waits for it to return (also a Run starting concurrently: that one either
// returns ErrClosed at once or is waited for), and only then closes the dead-letter writer. It
// is safe to call more than once; later calls return ErrClosed.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	cancel, running := s.cancel, s.running
	s.mu.Unlock()
	if running {
		cancel()
		<-s.done
	}
	if s.dlq != nil {
		return closeDeadLetterWriter(s.dlq)
	}
	return nil
}
