package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/internal/serving"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	"github.com/cachewire/cachewire/redistier"
)

// ClientsConfig says how the node identifies and limits its callers.
type ClientsConfig = serving.ClientsConfig

// MutatingMethods are the CacheService methods that change state, which
// ClientsConfig.Writers restricts.
var MutatingMethods = []string{"Set", "Invalidate", "Evict"}

// Config configures a Node. Every field documents its zero-value default.
type Config struct {
	// NodeID names the node in logs, Stats and the events it publishes. If empty, it defaults to
	// the host name.
	NodeID string
	// GRPCAddr is where CacheService and gRPC health are served. If empty, it defaults to
	// "127.0.0.1:7070". Use port 0 for any free port (see Node.GRPCAddr).
	GRPCAddr string
	// HTTPAddr serves /healthz, /readyz, /metrics and, with Pprof, /debug/pprof/. If empty, it
	// defaults to "127.0.0.1:9090"; "-" disables it.
	HTTPAddr string
	// Pprof enables /debug/pprof/ on HTTPAddr.
	Pprof bool
	// TLS, when set, is served on both listeners (with ClientCAs and RequireAndVerifyClientCert:
	// mTLS). Nil: plaintext.
	TLS *tls.Config
	// Clients, when set, identifies each caller (bearer token or client certificate), labels
	// metrics and logs with its name and holds it to per-client limits; Writers limits Set,
	// Invalidate and Evict to named clients. Nil: callers are not told apart.
	Clients *ClientsConfig

	// Brokers are the Kafka bootstrap addresses. Required.
	Brokers []string
	// Topics are the event topics whose keys this node caches. Required.
	Topics []string
	// TopicFormats says how each topic's records are decoded: protobuf ChangeEvents unless it
	// names the topic (invalidation.Formats); a record's contentType header wins over it.
	TopicFormats invalidation.Formats
	// InvalidateTopic receives the INVALIDATE events that the Invalidate RPC publishes. If empty,
	// it defaults to the first of Topics.
	InvalidateTopic string
	// DeadLetterTopic, when set, receives the raw bytes of every invalid event, once per event
	// (from the shared L2 group, not from every node's subscriber). Empty: invalid events are only
	// counted and logged.
	DeadLetterTopic string
	// GroupID is the consumer group shared by every node that applies events to the same Redis.
	// If empty, it defaults to "cachewire-l2".
	GroupID string

	// L1 configures the in-process tier; zero fields take lru's defaults.
	L1 lru.Config
	// L2 configures the Redis tier. If L2.Addrs and L2.Client are both empty, the node runs
	// without L2.
	L2 redistier.Config
	// Policy says when an UPSERT carrying its value refreshes instead of evicting. The zero value
	// is invalidation.RefreshHeld.
	Policy invalidation.Policy

	// Loader reads the origin on a miss. If nil, the node is cache-aside: a miss returns
	// found=false and the application calls Set.
	Loader Loader
	// LoaderTimeout bounds one origin load. If zero, it defaults to 5 seconds. It must be shorter
	// than L1.TombstoneTTL and L2.TombstoneTTL, and not longer than L2.TTL and L2.NegativeTTL.
	LoaderTimeout time.Duration
	// MaxStaleness is how long after a partition was last caught up with the log end the node
	// still trusts its tiers for keys on it. Beyond it, reads go to the origin, or come back with
	// stale=true when there is none. If zero, it defaults to 5 seconds. It must be shorter than
	// L1.TombstoneTTL.
	MaxStaleness time.Duration
	// Limits bound keys and values; zero fields take invalidation's defaults (1 KiB, 1 MiB).
	Limits invalidation.Limits
	// MaxBatch bounds BatchGet. If zero, it defaults to 100.
	MaxBatch int
	// MaxRecvMsgBytes bounds one gRPC request at the transport (gRPC refuses a larger one with
	// ResourceExhausted, which the Go client reports as invalid). The handlers refuse values over
	// Limits.MaxValueBytes with InvalidArgument naming the limit. If zero, it defaults to
	// serving.RecvMsgBytes(MaxValueBytes): at least 16 MiB.
	MaxRecvMsgBytes int
	// MaxInFlight bounds concurrent requests; more get ResourceExhausted. If zero, it defaults to
	// 4096.
	MaxInFlight int
	// WatchHeartbeat is how often the node sends every partition's position and caught-up time
	// to its Watch streams (near caches). If zero, it defaults to 50 ms; at most 100 ms.
	WatchHeartbeat time.Duration
	// WatchBuffer bounds the messages queued for one Watch stream: a watcher further behind is
	// cut off (ResourceExhausted) rather than slowing the node's apply. If zero, it defaults to
	// 8192.
	WatchBuffer int
	// MaxWatchers bounds the Watch streams open at once. If zero, it defaults to 1024.
	MaxWatchers int
	// ShutdownTimeout bounds how long Shutdown waits for requests in flight. If zero, it defaults
	// to 10 seconds.
	ShutdownTimeout time.Duration
	// DrainDelay is how long Shutdown reports NOT_SERVING (gRPC health, /readyz 503) while still
	// serving, so that load balancers and readiness probes take the node out first. Zero: no
	// delay (cachenode's --drain-delay defaults to 5 s).
	DrainDelay time.Duration
	// L2WatchInterval is how often the node reads the L2 group's committed offsets to decide
	// whether Redis has caught up with what L1 applied. If zero, it defaults to 200 ms.
	L2WatchInterval time.Duration
	// SubscriberMaxWait is the subscriber's fetch wait: how often an idle partition confirms it is
	// caught up. If zero, it defaults to 250 ms.
	SubscriberMaxWait time.Duration
	// Logger receives the node's logs. If nil, it defaults to slog.Default().
	Logger *slog.Logger
	// Tracer, when set, records spans: every gRPC call (continuing the caller's trace context),
	// the read path's L2 read and origin load, and the apply of every event that carries a
	// sampled trace context ("apply L1" on each node, "apply L2" on the node whose group member
	// applied it), as children of the event's publish. The origin is traced by the Loader itself
	// (OriginOptions.Tracer). If nil, no spans.
	Tracer trace.TracerProvider
	// Kafka says how every Kafka client of the node connects (subscriber, L2 group member,
	// publisher, L2 watcher, dead letters): TLS and SASL. The zero value is plaintext without
	// authentication. Kafka.Dial, when set, opens every connection; fault tests use it to cut
	// one node off from Kafka.
	Kafka invalidation.KafkaConn
}

func (c *Config) validate() error {
	if c.NodeID == "" {
		c.NodeID, _ = os.Hostname()
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:7070"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:9090"
	}
	if len(c.Brokers) == 0 {
		return errors.New("node: no Kafka brokers (--kafka-brokers)")
	}
	if len(c.Topics) == 0 {
		return errors.New("node: no topics (--topics)")
	}
	for topic := range c.TopicFormats {
		if !slices.Contains(c.Topics, topic) {
			return fmt.Errorf("node: a format is set for topic %q, which is not among the topics read %v (--topic-formats, --topics)", topic, c.Topics)
		}
	}
	if c.InvalidateTopic == "" {
		c.InvalidateTopic = c.Topics[0]
	}
	if c.GroupID == "" {
		c.GroupID = "cachewire-l2"
	}
	c.Limits = c.Limits.WithDefaults()
	if c.LoaderTimeout == 0 {
		c.LoaderTimeout = 5 * time.Second
	}
	if c.MaxStaleness == 0 {
		c.MaxStaleness = 5 * time.Second
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 100
	}
	if c.MaxRecvMsgBytes == 0 {
		c.MaxRecvMsgBytes = serving.RecvMsgBytes(c.Limits.MaxValueBytes)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 4096
	}
	if c.WatchHeartbeat == 0 {
		c.WatchHeartbeat = 50 * time.Millisecond
	}
	if c.WatchBuffer == 0 {
		c.WatchBuffer = 8192
	}
	if c.MaxWatchers == 0 {
		c.MaxWatchers = 1024
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.L2WatchInterval == 0 {
		c.L2WatchInterval = 200 * time.Millisecond
	}
	if c.SubscriberMaxWait == 0 {
		c.SubscriberMaxWait = 250 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	tomb := c.L1.TombstoneTTL
	if tomb == 0 {
		tomb = 30 * time.Second
	}
	switch {
	case c.LoaderTimeout >= tomb:
		return fmt.Errorf("node: loader timeout %v must be shorter than the L1 tombstone TTL %v (--loader-timeout, --l1-tombstone-ttl)", c.LoaderTimeout, tomb)
	case c.MaxStaleness >= tomb:
		// L2 is trusted for MaxStaleness after the group was last seen caught up with L1, and in
		// that time L1's tombstones alone refuse what Redis has not applied yet: they must not
		// expire first.
		return fmt.Errorf("node: max staleness %v must be shorter than the L1 tombstone TTL %v (--max-staleness, --l1-tombstone-ttl)", c.MaxStaleness, tomb)
	case c.L2.TombstoneTTL != 0 && c.LoaderTimeout >= c.L2.TombstoneTTL:
		return fmt.Errorf("node: loader timeout %v must be shorter than the L2 tombstone TTL %v (--loader-timeout, --redis-tombstone-ttl)", c.LoaderTimeout, c.L2.TombstoneTTL)
	case c.L2.NegativeTTL != 0 && c.LoaderTimeout > c.L2.NegativeTTL, c.L2.TTL != 0 && c.LoaderTimeout > c.L2.TTL:
		// An entry written to Redis and expired within one load would give the key back the
		// entry (none) a versionless answer's lease noted when the load began.
		return fmt.Errorf("node: loader timeout %v must not be longer than the L2 TTL %v or negative TTL %v (--loader-timeout, --redis-ttl, --redis-negative-ttl)", c.LoaderTimeout, c.L2.TTL, c.L2.NegativeTTL)
	case c.WatchHeartbeat < 0 || c.WatchHeartbeat > 100*time.Millisecond:
		return fmt.Errorf("node: watch heartbeat %v must be between 0 and 100ms: near caches stop answering when heartbeats are late (--watch-heartbeat)", c.WatchHeartbeat)
	case c.WatchBuffer < 0 || c.MaxWatchers < 0:
		return errors.New("node: WatchBuffer and MaxWatchers must not be negative (--watch-buffer, --max-watchers)")
	case c.MaxBatch < 0 || c.MaxInFlight < 0 || c.MaxRecvMsgBytes < 0:
		return errors.New("node: MaxBatch, MaxInFlight and MaxRecvMsgBytes must not be negative")
	case c.MaxStaleness < 0 || c.LoaderTimeout < 0 || c.DrainDelay < 0:
		return errors.New("node: MaxStaleness, LoaderTimeout and DrainDelay must not be negative")
	}
	return nil
}

func (c *Config) hasL2() bool { return c.L2.Client != nil || len(c.L2.Addrs) > 0 }
