package invalidation

import (
	"context"
	"errors"
	"fmt"

	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
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
	// MaxWait is how long one fetch waits for new events. It also sets how often an idle
	// partition confirms that it is caught up. If zero, it defaults to 250 ms.
	MaxWait time.Duration
	// MaxBytes bounds one fetch. If zero, it defaults to 4 MiB.
	MaxBytes int
	// MetadataInterval is how often partitions added to the topics are looked for. If zero, it
	// defaults to 5 seconds.
	MetadataInterval time.Duration
	// DeadLetterTopic, when set, receives the raw bytes of every invalid event, with headers
	// naming where it came from and why it was rejected.
	DeadLetterTopic string
	// Logger receives warnings and errors. If nil, it defaults to slog.Default().
	Logger *slog.Logger
	// Dialer connects to brokers. If nil, a dialer with a 5 s timeout is used.
	Dialer *kafka.Dialer
	// OnInvalid, if set, is called for every invalid event skipped (for metrics); it runs on the
	// partition's goroutine and must be fast.
	OnInvalid func(topic string, partition int, offset int64, err error)
	// FromBeginning starts the partitions that exist at Run from their first offset instead of
	// the log end. For tools and benchmarks that replay a topic; a cache node must not set it.
	FromBeginning bool
}

// PartitionState is how far a Subscriber has read one partition.
type PartitionState struct {
	Topic     string
	Partition int
	// Positioned is true once the partition has a starting offset.
	Positioned bool
	// Offset is the next offset to read.
	Offset int64
	// HighWatermark is the log end offset the broker last reported.
	HighWatermark int64
	// CaughtUpAt is the start of the last fetch that found the partition read to its log end:
	// every event published before that moment has been applied. Zero until the first one.
	CaughtUpAt time.Time
}

// SubscriberStats are a Subscriber's counters.
type SubscriberStats struct {
	// Events counts valid events handed to the sink; Invalid counts events skipped as
	// undecodable or invalid; DeadLettered counts those written to the dead-letter topic.
	Events, Invalid, DeadLettered uint64
	// Resets counts gaps that made the subscriber reset the sink; Reconnects counts reconnections.
	Resets, Reconnects uint64
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
	count   map[string]int // partitions per topic, from the last metadata

	events, invalid, deadLettered, resets, reconnects atomic.Uint64
}

type topicPartition struct {
	topic     string
	partition int
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
		cfg:    cfg,
		log:    cfg.Logger.With("component", "subscriber"),
		dialer: cfg.Dialer,
		ready:  make(chan struct{}),
		done:   make(chan struct{}),
		parts:  make(map[topicPartition]*PartitionState),
		count:  make(map[string]int),
		badLog: retry.NewLogLimiter(10, time.Second),
	}
	if s.dialer == nil {
		s.dialer = &kafka.Dialer{Timeout: 5 * time.Second, DualStack: true}
	}
	if cfg.DeadLetterTopic != "" {
		s.dlq = newDeadLetterWriter(cfg.Brokers, cfg.DeadLetterTopic)
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
			if !retry.Sleep(ctx, backoff.Next()) {
				return nil
			}
			continue
		}
		backoff.Reset()
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
		s.mu.Unlock()
		for _, p := range parts {
			out = append(out, topicPartition{topic, p.ID})
		}
	}
	return out, nil
}

// runPartition owns one partition until ctx ends.
func (s *Subscriber) runPartition(ctx context.Context, tp topicPartition, start int64, positioned func()) {
	log := s.log.With("topic", tp.topic, "partition", tp.partition)
	var conn *kafka.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	offset := start // kafka.LastOffset / FirstOffset until resolved
	backoff := retry.NewBackoff(50*time.Millisecond, 5*time.Second)
	var events []Event
	var once sync.Once
	var pendingReset error // a gap found before the log end could be resolved
	failures := 0
	for ctx.Err() == nil {
		if conn == nil {
			c, err := s.dial(ctx, tp)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				if failures == 1 || failures%20 == 0 {
					log.Warn("cannot reach partition leader; retrying", "err", err, "attempts", failures)
				}
				retry.Sleep(ctx, backoff.Next())
				continue
			}
			if failures > 0 {
				log.Info("reconnected to partition leader", "after_attempts", failures)
				s.reconnects.Add(1)
			}
			conn = c
		}
		if offset < 0 {
			resolveStart := time.Now()
			off, err := resolveOffset(conn, offset)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				if failures == 1 || failures%20 == 0 {
					log.Warn("cannot resolve the starting offset; reconnecting", "resolving", offsetName(offset),
						"err", err, "attempts", failures)
				}
				conn.Close()
				conn = nil
				retry.Sleep(ctx, backoff.Next())
				continue
			}
			if pendingReset != nil {
				s.reset(tp, log, pendingReset)
				pendingReset = nil
			}
			atEnd := offset == kafka.LastOffset
			offset = off
			s.update(tp, func(st *PartitionState) {
				st.Positioned, st.Offset = true, off
				if atEnd {
					// Starting at the log end (with an empty sink) is being caught up as of now.
					st.CaughtUpAt, st.HighWatermark = resolveStart, off
				}
			})
			once.Do(positioned)
		}

		if _, err := conn.Seek(offset, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
			conn.Close()
			conn = nil
			continue
		}
		fetchStart := time.Now()
		_ = conn.SetReadDeadline(fetchStart.Add(s.cfg.MaxWait + 10*time.Second))
		batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: s.cfg.MaxBytes, MaxWait: s.cfg.MaxWait})
		events = events[:0]
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			e, err := Decode(m.Value, s.cfg.Limits)
			if err != nil {
				s.bad(ctx, log, m, err)
				continue
			}
			e.Offset = m.Offset
			events = append(events, e)
		}
		hwm := batch.HighWaterMark()
		next := batch.Offset() // past compacted records too
		err := batch.Close()
		if len(events) > 0 {
			s.cfg.Sink.ApplyEvents(tp.topic, tp.partition, events)
			s.events.Add(uint64(len(events)))
		}
		if next > offset {
			offset = next
		}
		// kafka-go reports a fetch that found nothing new (the offset is the log end) as
		// RequestTimedOut on an empty batch: that is a successful, caught-up fetch.
		emptyFetch := errors.Is(err, kafka.RequestTimedOut) && hwm == offset
		switch {
		case err == nil || errors.Is(err, io.EOF) || emptyFetch:
			failures = 0
			backoff.Reset()
			s.update(tp, func(st *PartitionState) {
				st.Offset, st.HighWatermark = offset, hwm
				if offset >= hwm {
					st.CaughtUpAt = fetchStart
				}
			})
		case errors.Is(err, kafka.OffsetOutOfRange), errors.Is(err, kafka.UnknownTopicOrPartition):
			// Events were lost to us: retention passed our offset, or the topic was deleted or
			// recreated. Find the log end first, then reset the sink, so that every event
			// published after the reset is still read.
			resolveStart := time.Now()
			off, rerr := resolveOffset(conn, kafka.LastOffset)
			if rerr != nil {
				log.Warn("gap found but log end unknown; retrying", "err", err, "lookup_err", rerr)
				conn.Close()
				conn = nil
				offset, pendingReset = kafka.LastOffset, err
				retry.Sleep(ctx, backoff.Next())
				continue
			}
			s.reset(tp, log, err)
			offset = off
			s.update(tp, func(st *PartitionState) { st.Offset, st.HighWatermark, st.CaughtUpAt = off, off, resolveStart })
		default:
			if ctx.Err() != nil {
				return
			}
			failures++
			if failures == 1 || failures%20 == 0 {
				log.Warn("fetch failed; reconnecting", "err", err, "offset", offset, "attempts", failures)
			}
			conn.Close()
			conn = nil
			retry.Sleep(ctx, backoff.Next())
		}
	}
}

func (s *Subscriber) dial(ctx context.Context, tp topicPartition) (*kafka.Conn, error) {
	var err error
	for _, b := range shuffled(s.cfg.Brokers) {
		var c *kafka.Conn
		if c, err = s.dialer.DialLeader(ctx, "tcp", b, tp.topic, tp.partition); err == nil {
			return c, nil
		}
	}
	return nil, err
}

func resolveOffset(conn *kafka.Conn, which int64) (int64, error) {
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if which == kafka.FirstOffset {
		return conn.ReadFirstOffset()
	}
	return conn.ReadLastOffset()
}

// offsetName names the offset resolveOffset is asked for, for logs.
func offsetName(which int64) string {
	switch which {
	case kafka.FirstOffset:
		return "first offset"
	case kafka.LastOffset:
		return "log end"
	}
	return fmt.Sprint(which)
}

func (s *Subscriber) reset(tp topicPartition, log *slog.Logger, cause error) {
	s.resets.Add(1)
	reason := cause.Error()
	log.Warn("gap in the event stream: resetting the cache and continuing at the log end", "reason", reason)
	s.cfg.Sink.Reset(tp.topic, tp.partition, reason)
}

func (s *Subscriber) bad(ctx context.Context, log *slog.Logger, m kafka.Message, err error) {
	s.invalid.Add(1)
	if s.cfg.OnInvalid != nil {
		s.cfg.OnInvalid(m.Topic, m.Partition, m.Offset, err)
	}
	if s.badLog.Allow() {
		log.Warn("skipping invalid event", "offset", m.Offset, "err", err)
	}
	if s.dlq != nil {
		if derr := deadLetter(ctx, s.dlq, m, err); derr != nil {
			log.Error("cannot write invalid event to the dead-letter topic", "offset", m.Offset, "err", derr)
		} else {
			s.deadLettered.Add(1)
		}
	}
}

func (s *Subscriber) update(tp topicPartition, f func(*PartitionState)) {
	s.mu.Lock()
	if st, ok := s.parts[tp]; ok {
		f(st)
	}
	s.mu.Unlock()
}

// Partition returns the state of one partition.
func (s *Subscriber) Partition(topic string, partition int) (PartitionState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.parts[topicPartition{topic, partition}]
	if !ok {
		return PartitionState{}, false
	}
	return *st, true
}

// Partitions returns the state of every partition, sorted by topic and partition.
func (s *Subscriber) Partitions() []PartitionState {
	s.mu.Lock()
	out := make([]PartitionState, 0, len(s.parts))
	for _, st := range s.parts {
		out = append(out, *st)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}

// NumPartitions returns how many partitions topic had at the last metadata lookup, or 0.
func (s *Subscriber) NumPartitions(topic string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[topic]
}

// Stats returns a snapshot of the counters.
func (s *Subscriber) Stats() SubscriberStats {
	return SubscriberStats{
		Events: s.events.Load(), Invalid: s.invalid.Load(), DeadLettered: s.deadLettered.Load(),
		Resets: s.resets.Load(), Reconnects: s.reconnects.Load(),
	}
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

func shuffled(in []string) []string {
	out := append([]string(nil), in...)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
