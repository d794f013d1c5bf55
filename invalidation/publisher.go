package invalidation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/tracectx"
)

// PublisherConfig configures a Publisher. Every field documents its zero-value default.
type PublisherConfig struct {
	// Brokers are the Kafka bootstrap addresses. Required.
	Brokers []string
	// Topic receives the events. Required.
	Topic string
	// BatchTimeout is how long the writer waits to fill a batch before sending it. If zero, it
	// defaults to 2 ms (kafka-go's own default of 1 s would add a second to every write).
	BatchTimeout time.Duration
	// BatchSize is the most events sent in one produce request. If zero, it defaults to 1000.
	BatchSize int
	// WriteTimeout bounds one produce request. If zero, it defaults to 10 seconds.
	WriteTimeout time.Duration
	// MaxAttempts is how many times kafka-go tries a produce request before Publish fails. If
	// zero, 3. Callers with their own retry loop (the writer's relay) use 1, so that Close is not
	// held up by retries.
	MaxAttempts int
	// MetadataTTL is how long partition metadata is cached: partitions added to the topic are
	// used after at most this long. If zero, it defaults to 5 seconds.
	MetadataTTL time.Duration
	// Limits are checked before an event is sent. Zero fields take the package defaults.
	Limits Limits
	// Kafka says how to connect: TLS, SASL. The zero value is plaintext without authentication.
	Kafka KafkaConn
	// Dial, when set, opens every connection to the brokers (for tests that cut the network).
	// It wins over Kafka.Dial.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Publisher publishes change events to one topic: keyed by the cache key, partitioned with the
// Murmur2 balancer (the Java client's default, so Java producers agree on partitions), acked by
// all in-sync replicas. It is safe for concurrent use; concurrent Publish calls share batches.
type Publisher struct {
	w         *kafka.Writer
	transport *kafka.Transport
	limits    Limits

	mu     sync.RWMutex
	closed bool
}

// NewPublisher returns a Publisher. It connects lazily, on the first Publish.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("invalidation: publisher: no Kafka brokers")
	}
	if cfg.Topic == "" {
		return nil, errors.New("invalidation: publisher: no topic")
	}
	if cfg.BatchTimeout == 0 {
		cfg.BatchTimeout = 2 * time.Millisecond
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 1000
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.MetadataTTL == 0 {
		cfg.MetadataTTL = 5 * time.Second
	}
	if cfg.Dial != nil {
		cfg.Kafka.Dial = cfg.Dial
	}
	transport := cfg.Kafka.Transport()
	transport.MetadataTTL = cfg.MetadataTTL
	return &Publisher{
		transport: transport,
		limits:    cfg.Limits.WithDefaults(),
		w: &kafka.Writer{
			Addr:         kafka.TCP(cfg.Brokers...),
			Topic:        cfg.Topic,
			Balancer:     kafka.Murmur2Balancer{},
			RequiredAcks: kafka.RequireAll,
			BatchTimeout: cfg.BatchTimeout,
			BatchSize:    cfg.BatchSize,
			BatchBytes:   int64(cfg.Limits.WithDefaults().MaxValueBytes) + 64<<10,
			WriteTimeout: cfg.WriteTimeout,
			ReadTimeout:  cfg.WriteTimeout,
			MaxAttempts:  cfg.MaxAttempts,
			Transport:    transport, // its own, so its metadata cache is not shared process-wide
		},
	}, nil
}

// Publish validates and sends events, and returns once the broker has acked all of them (or
// ctx ends, or the write fails). Events for one key keep their order. An invalid event fails
// the call before anything is sent. An event without trace context gets ctx's span context
// (W3C traceparent), when ctx has one; every record carries its event's trace context in
// traceparent and tracestate headers too.
func (p *Publisher) Publish(ctx context.Context, events ...Event) error {
	msgs := make([]kafka.Message, len(events))
	for i := range events {
		e := events[i]
		if err := p.limits.Validate(&e); err != nil {
			return err
		}
		if len(e.Trace) == 0 {
			e.Trace = tracectx.Inject(ctx, nil) // the caller's span, when it has one
		}
		raw, err := Encode(&e)
		if err != nil {
			return fmt.Errorf("invalidation: encode %q: %w", e.Key, err)
		}
		msgs[i] = kafka.Message{Key: []byte(e.Key), Value: raw, Headers: TraceHeaders(e.Trace)}
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("invalidation: publish %d event(s) to %s: %w", len(msgs), p.w.Topic, err)
	}
	return nil
}

// Close waits for Publish calls in flight, flushes, and closes the writer. Later Publish calls
// return ErrClosed; a second Close returns nil.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	err := p.w.Close()
	p.transport.CloseIdleConnections()
	return err
}
