// Command cachenode is the cachewire cache node: the sidecar that serves CacheService over gRPC
// next to a service instance, keeping an in-process LRU and a shared Redis tier fresh from the
// change events on Kafka.
//
//	cachenode --kafka-brokers 127.0.0.1:9092 --topics cachewire.users \
//	  --redis-addrs 127.0.0.1:6379 --origin-addr 127.0.0.1:7080
//
// Every flag can also be set through the environment: --kafka-brokers as CACHEWIRE_NODE_KAFKA_BROKERS.
// `cachenode --help` lists them all with their defaults. SIGINT or SIGTERM drains requests in
// flight (bounded by --shutdown-timeout) and exits 0. Before that it reports NOT_SERVING (gRPC
// health, /readyz 503) for --drain-delay while still serving.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/internal/security"
	"github.com/cachewire/cachewire/internal/telemetry"
	"github.com/cachewire/cachewire/internal/tracing"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/node"
)

// env is how the flags are read from the environment: CACHEWIRE_NODE_GRPC_ADDR for --grpc-addr; the
// unprefixed CACHEWIRE_GRPC_ADDR of earlier releases still works, with a warning.
var env = flagenv.Command{Prefix: "CACHEWIRE_NODE_", Legacy: "CACHEWIRE_"}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// options is everything the flags set.
type options struct {
	cfg         node.Config
	brokers     flagenv.List
	topics      flagenv.List
	formats     flagenv.List
	redisAddrs  flagenv.List
	redisMode   string
	originAddr  string
	origin      string
	originQuery string
	originTLS   security.ClientFiles
	policy      string
	check       bool
	env         flagenv.Command
	logFormat   string
	logLevel    string
	server      *security.ServerFlags
	kafka       *security.KafkaFlags
	redis       *security.RedisFlags
}

// parseFlags parses args (and the environment) into options.
func parseFlags(args []string, getenv func(string) string, out io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := flag.NewFlagSet("cachenode", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.NodeID, "node-id", "", "node name in logs, stats and published events (default: the host name)")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:7070", "gRPC listen address (CacheService, health, reflection)")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:9090", "HTTP listen address for /healthz, /readyz, /metrics (\"-\" disables)")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve /debug/pprof/ on the HTTP address")
	fs.Var(&o.brokers, "kafka-brokers", "Kafka bootstrap addresses, comma separated (required)")
	fs.Var(&o.topics, "topics", "event topics to cache, comma separated (required)")
	fs.Var(&o.formats, "topic-formats", "how each topic's records are decoded, comma separated TOPIC=FORMAT: protobuf (the default), json (a record's contentType header, application/json as Spring Cloud Stream sends, wins over either), or debezium;key=TEMPLATE;version=after.COLUMN (or source.lsn)[;value=after (or a COLUMN)], e.g. pg.public.users=debezium;key=user:{id};version=after.version;value=after (docs/producers.md)")
	fs.StringVar(&c.InvalidateTopic, "invalidate-topic", "", "topic the Invalidate and Evict RPCs publish to, normally one of --topics so that this node's subscriber sees them too (default: the first of --topics)")
	fs.StringVar(&c.GroupID, "group-id", "cachewire-l2", "consumer group shared by every node that applies events to the same Redis")
	fs.StringVar(&c.DeadLetterTopic, "dead-letter-topic", "", "topic that receives the raw bytes of invalid events, once per event (needs Redis); empty: count and log only")
	fs.Var(&o.redisAddrs, "redis-addrs", "Redis addresses, comma separated; empty runs without L2")
	fs.StringVar(&o.redisMode, "redis-mode", "single", "Redis topology: single, sentinel (with --redis-master) or cluster")
	fs.StringVar(&c.L2.MasterName, "redis-master", "", "Sentinel master name (with --redis-mode sentinel)")
	fs.StringVar(&c.L2.Username, "redis-username", "", "Redis ACL user name; empty: the default user")
	o.env = env
	o.redis = security.RegisterRedis(fs, &o.env)
	o.kafka = security.RegisterKafka(fs, &o.env)
	o.server = security.RegisterServer(fs, "Set, Invalidate and Evict")
	fs.StringVar(&c.L2.KeyPrefix, "redis-prefix", "cw:", "prefix of every Redis key")
	fs.DurationVar(&c.L2.TTL, "redis-ttl", time.Hour, "TTL of a value in Redis")
	fs.DurationVar(&c.L2.TombstoneTTL, "redis-tombstone-ttl", 10*time.Minute, "TTL of a tombstone in Redis (longer than --loader-timeout)")
	fs.DurationVar(&c.L2.DialTimeout, "redis-dial-timeout", 500*time.Millisecond, "Redis dial timeout")
	fs.DurationVar(&c.L2.ReadTimeout, "redis-read-timeout", 250*time.Millisecond, "Redis read timeout")
	fs.DurationVar(&c.L2.WriteTimeout, "redis-write-timeout", 250*time.Millisecond, "Redis write timeout")
	fs.StringVar(&o.origin, "origin", "", "where misses load from: grpc://host:port (OriginService), http://host:port/path/{key} (Cachewire-Version header), or postgres://... with --origin-query; empty is cache-aside (a miss returns found=false). Answers without a version are filled under leases and cannot serve min_version > 0")
	fs.StringVar(&o.originQuery, "origin-query", "", "for a postgres:// --origin: SQL returning the value and its version for the key $1, e.g. SELECT value, version FROM users WHERE id = $1 (the value alone makes a versionless origin)")
	fs.StringVar(&o.originTLS.CA, "origin-tls-ca", "", "PEM CA file a grpc:// or https:// origin's certificate must chain to (turns TLS on for grpc://)")
	fs.StringVar(&o.originTLS.Cert, "origin-tls-cert", "", "PEM client certificate the node presents to its origin (mTLS), with --origin-tls-key")
	fs.StringVar(&o.originTLS.Key, "origin-tls-key", "", "PEM private key of --origin-tls-cert")
	fs.StringVar(&o.originTLS.ServerName, "origin-tls-server-name", "", "name the origin's certificate must hold (default: the origin's host)")
	fs.StringVar(&o.originAddr, "origin-addr", "", "deprecated: use --origin grpc://host:port. A WriterService address to load misses from")
	fs.DurationVar(&c.LoaderTimeout, "loader-timeout", 5*time.Second, "bound on one origin load")
	fs.IntVar(&c.L1.MaxEntries, "l1-max-entries", 100_000, "most values in the in-process LRU")
	fs.Int64Var(&c.L1.MaxBytes, "l1-max-bytes", 256<<20, "most bytes in the in-process LRU (keys, values and per-entry overhead)")
	fs.DurationVar(&c.L1.TTL, "l1-ttl", 10*time.Minute, "safety-net TTL of an L1 value (jittered by 10%)")
	fs.DurationVar(&c.L1.TombstoneTTL, "l1-tombstone-ttl", 30*time.Second, "how long L1 keeps a tombstone (an evicted version) before it expires; must be longer than --loader-timeout")
	fs.IntVar(&c.L1.MaxTombstones, "l1-max-tombstones", 100_000, "most tombstones in L1")
	fs.DurationVar(&c.L1.NegativeTTL, "negative-ttl", 5*time.Second, "how long an origin NotFound is cached")
	fs.StringVar(&o.policy, "refresh-policy", "refresh-held", "what an UPSERT carrying its value does: refresh-held, refresh-all or evict-only")
	fs.DurationVar(&c.MaxStaleness, "max-staleness", 5*time.Second, "beyond this since a partition was caught up, reads go to the origin (or say stale=true); must be shorter than --l1-tombstone-ttl")
	fs.IntVar(&c.Limits.MaxKeyBytes, "max-key-bytes", invalidation.DefaultMaxKeyBytes, "longest key accepted")
	fs.IntVar(&c.Limits.MaxValueBytes, "max-value-bytes", invalidation.DefaultMaxValueBytes, "largest value accepted")
	fs.IntVar(&c.MaxBatch, "max-batch", 100, "most keys in one BatchGet")
	fs.IntVar(&c.MaxRecvMsgBytes, "max-recv-msg-bytes", 0, "largest gRPC request the transport reads (default: 2 × max-value-bytes + 64 KiB, at least 16 MiB); larger values within it are refused as invalid by the limits above")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", 4096, "most concurrent requests; more get ResourceExhausted")
	fs.DurationVar(&c.WatchHeartbeat, "watch-heartbeat", 50*time.Millisecond, "how often Watch streams (near caches) get every partition's freshness; at most 100ms")
	fs.IntVar(&c.WatchBuffer, "watch-buffer", 8192, "most messages queued for one Watch stream; a watcher further behind is cut off (ResourceExhausted)")
	fs.IntVar(&c.MaxWatchers, "max-watchers", 1024, "most Watch streams open at once")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "bound on draining requests at SIGTERM")
	fs.DurationVar(&c.DrainDelay, "drain-delay", 5*time.Second, "at SIGTERM, report NOT_SERVING this long while still serving, before draining (longer than the readiness probe's period)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&o.check, "check-config", false, "validate the flags and configuration, then exit (0 when valid) without connecting")
	if err := o.env.Parse(fs, args, getenv); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.Brokers, c.Topics = o.brokers, o.topics
	var chk flagenv.Check
	chk.Addr("grpc-addr", c.GRPCAddr, false)
	chk.Addr("http-addr", c.HTTPAddr, true)
	chk.Addrs("kafka-brokers", o.brokers)
	chk.Addrs("redis-addrs", o.redisAddrs)
	if o.originTLS.Enabled() && o.origin == "" {
		return nil, errors.New("--origin-tls-* are set but --origin is not: they secure a grpc:// or https:// --origin")
	}
	if o.originAddr != "" {
		chk.Addr("origin-addr", o.originAddr, false)
		if o.origin != "" {
			return nil, errors.New("--origin-addr and --origin both set: use --origin only")
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"max-staleness", c.MaxStaleness}, {"loader-timeout", c.LoaderTimeout}, {"l1-ttl", c.L1.TTL},
		{"l1-tombstone-ttl", c.L1.TombstoneTTL}, {"negative-ttl", c.L1.NegativeTTL}, {"redis-ttl", c.L2.TTL},
		{"redis-tombstone-ttl", c.L2.TombstoneTTL}, {"redis-dial-timeout", c.L2.DialTimeout},
		{"redis-read-timeout", c.L2.ReadTimeout}, {"redis-write-timeout", c.L2.WriteTimeout},
		{"shutdown-timeout", c.ShutdownTimeout}, {"watch-heartbeat", c.WatchHeartbeat}} {
		chk.Positive(d.name, d.v)
	}
	chk.NotNegative("drain-delay", c.DrainDelay)
	for _, n := range []struct {
		name string
		v    int64
	}{{"l1-max-entries", int64(c.L1.MaxEntries)}, {"l1-max-bytes", c.L1.MaxBytes}, {"l1-max-tombstones", int64(c.L1.MaxTombstones)},
		{"max-key-bytes", int64(c.Limits.MaxKeyBytes)}, {"max-value-bytes", int64(c.Limits.MaxValueBytes)},
		{"max-batch", int64(c.MaxBatch)}, {"max-in-flight", int64(c.MaxInFlight)},
		{"watch-buffer", int64(c.WatchBuffer)}, {"max-watchers", int64(c.MaxWatchers)}} {
		chk.Size(n.name, n.v, 1)
	}
	chk.Size("max-recv-msg-bytes", int64(c.MaxRecvMsgBytes), 0)
	o.server.Check(&chk)
	if err := chk.Err(); err != nil {
		return nil, err
	}
	var err error
	if c.Kafka, err = o.kafka.Conn(); err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if c.L2.TLS, err = o.redis.TLS.Config(); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	c.L2.Password = o.redis.Password.Value()
	c.L2.SentinelUsername, c.L2.SentinelPassword = o.redis.SentinelUsername, o.redis.SentinelPassword.Value()
	if c.Policy, err = invalidation.ParsePolicy(o.policy); err != nil {
		return nil, err
	}
	for _, spec := range o.formats {
		topic, tf, err := invalidation.ParseTopicFormat(spec)
		if err != nil {
			return nil, fmt.Errorf("--topic-formats: %w", err)
		}
		if c.TopicFormats == nil {
			c.TopicFormats = invalidation.Formats{}
		}
		c.TopicFormats[topic] = tf
	}
	// Flags only fill the tier's Config: redistier.New builds the client (in node.New, which
	// does no I/O), and the node closes it when it stops.
	c.L2.Addrs = o.redisAddrs
	switch o.redisMode {
	case "single":
	case "sentinel":
		if c.L2.MasterName == "" {
			return nil, errors.New("--redis-mode sentinel needs --redis-master")
		}
	case "cluster":
		c.L2.Cluster = true // even with a single seed address
	default:
		return nil, fmt.Errorf("--redis-mode %q: want single, sentinel or cluster", o.redisMode)
	}
	return o, nil
}

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	o, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		flagenv.PrintError(stderr, "cachenode", err)
		return 2
	}
	log, err := flagenv.Logger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		flagenv.PrintError(stderr, "cachenode", err)
		return 2
	}
	o.cfg.Logger = log
	o.env.LogWarnings(log)
	if o.cfg.TLS, _, o.cfg.Clients, err = o.server.Build(log, node.MutatingMethods...); err != nil {
		flagenv.PrintError(stderr, "cachenode", err)
		return 2
	}
	tel, err := telemetry.Setup(context.Background(), "cachewire-node", o.cfg.NodeID)
	if err != nil {
		flagenv.PrintError(stderr, "cachenode", err)
		return 2
	}
	defer flushSpans(log, tel)
	o.cfg.Tracer = tel.Provider()
	if o.check {
		o.cfg.Logger = slog.New(slog.DiscardHandler) // a check prints its verdict only
	} else {
		tel.Log(log)
	}
	switch {
	case o.origin != "":
		originTLS, err := o.originTLS.Config()
		if err != nil {
			fmt.Fprintf(stderr, "cachenode: --origin-tls-*: %v\n", err)
			return 2
		}
		loader, closeOrigin, err := node.OpenOrigin(o.origin, node.OriginOptions{Query: o.originQuery,
			MaxValueBytes: o.cfg.Limits.MaxValueBytes, TLS: originTLS, Tracer: o.cfg.Tracer})
		if err != nil {
			fmt.Fprintf(stderr, "cachenode: --origin: %v\n", err)
			return 2
		}
		defer closeOrigin()
		o.cfg.Loader = loader
	case o.originAddr != "":
		log.Warn("--origin-addr is deprecated and will be removed in the next release: use --origin grpc://" + o.originAddr)
		var opts []grpc.DialOption
		if o.cfg.Tracer != nil {
			opts = append(opts, tracing.DialOption(o.cfg.Tracer))
		}
		loader, err := node.DialWriter(o.originAddr, opts...)
		if err != nil {
			fmt.Fprintf(stderr, "cachenode: --origin-addr: %v\n", err)
			return 2
		}
		defer loader.Close()
		o.cfg.Loader = loader
	}
	n, err := node.New(o.cfg) // no I/O yet
	if err != nil {
		flagenv.PrintError(stderr, "cachenode", err)
		return 2
	}
	if o.check {
		_ = n.Close() // releases what New built; nothing was started or connected
		fmt.Fprintln(stderr, "cachenode: configuration OK")
		return 0
	}
	if err := n.Start(); err != nil {
		log.Error("cannot start", "err", err)
		_ = n.Close()
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info("signal received: draining requests in flight", "bound", o.cfg.ShutdownTimeout)
	if err := n.Shutdown(context.Background()); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

// flushSpans exports the spans still buffered, bounded, at exit.
func flushSpans(log *slog.Logger, t *telemetry.Tracing) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn("tracing: spans not exported at exit", "err", err)
	}
}
