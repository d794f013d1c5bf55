package writer

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/internal/serving"
	"github.com/cachewire/cachewire/invalidation"
)

// ClientsConfig says how the writer identifies and limits its callers.
type ClientsConfig = serving.ClientsConfig

// MutatingMethods are the WriterService methods that change state, which
// ClientsConfig.Writers restricts.
var MutatingMethods = []string{"Put", "Delete"}

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
	// TLS, when set, is served on both listeners (mTLS with RequireAndVerifyClientCert). Nil:
	// plaintext.
	TLS *tls.Config
	// Clients, when set, identifies each caller, labels metrics and logs with its name, holds it
	// to per-client limits, and stamps the events of its writes with it (source
	// "WRITER_ID/CLIENT"); Writers limits Put and Delete to named clients. Nil: callers are not
	// told apart, and events carry WriterID.
	Clients *ClientsConfig
	// Brokers are the Kafka bootstrap addresses. Required.
	Brokers []string
	// Topic receives the change events. Required.
	Topic string
	// Kafka says how the writer's Kafka clients connect (relay, dead letters, topic creation):
	// TLS and SASL. The zero value is plaintext without authentication.
	Kafka invalidation.KafkaConn
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
	// MaxRecvMsgBytes bounds one gRPC request at the transport; values over Limits are refused
	// with InvalidArgument by the handlers. If zero, serving.RecvMsgBytes(MaxValueBytes).
	MaxRecvMsgBytes int
	// ShutdownTimeout bounds draining at Shutdown. If zero, 10 seconds.
	ShutdownTimeout time.Duration
	// DrainDelay is how long Shutdown reports NOT_SERVING (gRPC health, /readyz 503) while still
	// serving, so that load balancers and readiness probes take the writer out first. Zero: no
	// delay (cmd/writer's --drain-delay defaults to 5 s).
	DrainDelay time.Duration
	// Logger receives logs. If nil, slog.Default().
	Logger *slog.Logger
	// Tracer, when set, records spans: each Put and Delete (its commit and the wait for Kafka's
	// ack), and the relay's publish of each event, whose trace context travels in the event
	// (ChangeEvent.trace) and in its record's traceparent header. If nil, no spans (and no
	// trace context in events).
	Tracer trace.TracerProvider
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
	if c.MaxRecvMsgBytes == 0 {
		c.MaxRecvMsgBytes = serving.RecvMsgBytes(c.Limits.MaxValueBytes)
	}
	if c.TopicPartitions < 1 || c.TopicReplication < 1 || c.RelayBatch < 1 || c.MaxBatch < 1 {
		return errors.New("writer: partitions, replication, relay batch and max batch must be positive")
	}
	return nil
}

// CheckConfig reports whether cfg is valid, as New would, without opening anything.
func CheckConfig(cfg Config) error { return cfg.validate() }
