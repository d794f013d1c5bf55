package checker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	kplain "github.com/twmb/franz-go/pkg/sasl/plain"
	kscram "github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/internal/fault"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/redistier"
	"github.com/cachewire/cachewire/writer"
)

// The variables that name real servers, the same ones the tests read (internal/testenv; a test
// checks that they agree).
const (
	EnvKafka    = "CACHEWIRE_TEST_KAFKA"
	EnvRedis    = "CACHEWIRE_TEST_REDIS"
	EnvKafkaCtl = "CACHEWIRE_TEST_KAFKA_CTL"
	EnvRedisCtl = "CACHEWIRE_TEST_REDIS_CTL"

	EnvKafkaTLSCA         = "CACHEWIRE_TEST_KAFKA_TLS_CA"
	EnvKafkaSASLMechanism = "CACHEWIRE_TEST_KAFKA_SASL_MECHANISM"
	EnvKafkaSASLUsername  = "CACHEWIRE_TEST_KAFKA_SASL_USERNAME"
	EnvKafkaSASLPassword  = "CACHEWIRE_TEST_KAFKA_SASL_PASSWORD"
	EnvRedisTLSCA         = "CACHEWIRE_TEST_REDIS_TLS_CA"
	EnvRedisUsername      = "CACHEWIRE_TEST_REDIS_USERNAME"
	EnvRedisPassword      = "CACHEWIRE_TEST_REDIS_PASSWORD"
)

// Env names the Kafka and Redis a Cluster runs on. Empty fields mean in-process ones.
type Env struct {
	Brokers []string
	// KafkaTLS, when set, is the TLS configuration for Brokers (a SASL_SSL listener).
	KafkaTLS *tls.Config
	// KafkaSASL is the SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), user and password
	// for Brokers; an empty mechanism means no SASL.
	KafkaSASL SASL
	RedisAddr string
	// RedisTLS, RedisUsername and RedisPassword are how the tiers connect to RedisAddr.
	RedisTLS                     *tls.Config
	RedisUsername, RedisPassword string
	// KafkaCtl and RedisCtl are the scripts that control the real servers (scripts/kafka.sh,
	// scripts/redis.sh): faults on real servers need them (pause, restart).
	KafkaCtl, RedisCtl string
	// RedisCluster, when set, are the seed addresses of a Redis Cluster, used instead of
	// RedisAddr.
	RedisCluster []string
	// Replication is the replication factor of the topics the cluster creates (3 on a 3-broker
	// Kafka). If zero, 1.
	Replication int
}

// SASL names a SASL mechanism and its credentials.
type SASL struct{ Mechanism, Username, Password string }

// EnvFromTestEnv reads the real servers' addresses, credentials and control scripts the way the
// tests do (CACHEWIRE_TEST_KAFKA, CACHEWIRE_TEST_REDIS and their _TLS_CA, _SASL_* and ACL user
// variables, CACHEWIRE_TEST_KAFKA_CTL, CACHEWIRE_TEST_REDIS_CTL).
func EnvFromTestEnv() (Env, error) {
	var e Env
	if b := os.Getenv(EnvKafka); b != "" {
		e.Brokers = strings.Split(b, ",")
	}
	e.RedisAddr = os.Getenv(EnvRedis)
	e.KafkaCtl, e.RedisCtl = os.Getenv(EnvKafkaCtl), os.Getenv(EnvRedisCtl)
	e.KafkaSASL = SASL{os.Getenv(EnvKafkaSASLMechanism), os.Getenv(EnvKafkaSASLUsername), os.Getenv(EnvKafkaSASLPassword)}
	e.RedisUsername, e.RedisPassword = os.Getenv(EnvRedisUsername), os.Getenv(EnvRedisPassword)
	var err error
	if e.KafkaTLS, err = tlsFromEnv(EnvKafkaTLSCA); err != nil {
		return e, err
	}
	if e.RedisTLS, err = tlsFromEnv(EnvRedisTLSCA); err != nil {
		return e, err
	}
	if _, err := e.kafkaConn(); err != nil {
		return e, err
	}
	return e, nil
}

// tlsFromEnv returns a TLS configuration trusting the CA file the variable env names, or nil
// when it is unset.
func tlsFromEnv(env string) (*tls.Config, error) {
	path := os.Getenv(env)
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("checker: %s: %w", env, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("checker: %s: %s holds no PEM certificate", env, path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// kafkaConn is how kafka-go clients connect to Brokers.
func (e Env) kafkaConn() (invalidation.KafkaConn, error) {
	c := invalidation.KafkaConn{TLS: e.KafkaTLS}
	var err error
	switch e.KafkaSASL.Mechanism {
	case "":
	case "PLAIN":
		c.SASL = plain.Mechanism{Username: e.KafkaSASL.Username, Password: e.KafkaSASL.Password}
	case "SCRAM-SHA-256":
		c.SASL, err = scram.Mechanism(scram.SHA256, e.KafkaSASL.Username, e.KafkaSASL.Password)
	case "SCRAM-SHA-512":
		c.SASL, err = scram.Mechanism(scram.SHA512, e.KafkaSASL.Username, e.KafkaSASL.Password)
	default:
		err = fmt.Errorf("unknown SASL mechanism %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", e.KafkaSASL.Mechanism)
	}
	if err != nil {
		return c, fmt.Errorf("checker: %s: %w", EnvKafkaSASLMechanism, err)
	}
	return c, nil
}

// kgoOpts are the same connection settings for franz-go's client (DeleteRecords, which
// kafka-go lacks).
func (e Env) kgoOpts() []kgo.Opt {
	var opts []kgo.Opt
	if e.KafkaTLS != nil {
		opts = append(opts, kgo.DialTLSConfig(e.KafkaTLS.Clone()))
	}
	a := kscram.Auth{User: e.KafkaSASL.Username, Pass: e.KafkaSASL.Password}
	switch e.KafkaSASL.Mechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(kplain.Auth{User: e.KafkaSASL.Username, Pass: e.KafkaSASL.Password}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(a.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(a.AsSha512Mechanism()))
	}
	return opts
}

// Cluster is an embedded cluster (a writer and N nodes in this process, on in-process or real
// Kafka and Redis) with the faults the scenarios inject and the final reads they check.
type Cluster struct {
	emb          *embedded.Cluster
	env          Env
	log          *slog.Logger
	group        string
	maxStaleness time.Duration

	kfake *kfake.Cluster        // the in-process Kafka, nil on a real one
	mini  *miniredis.Miniredis  // the in-process Redis, nil on a real one
	rdb   redis.UniversalClient // Redis, for FLUSHALL
	tier  *redistier.Tier       // the final reads' and AddGroupMember's view of Redis
	slow  *slowOrigin           // every node's loader goes through it
	cuts  []*fault.Cutter       // node i's network to Kafka
	cache []*client.Cache       // a client per node, stable across restarts
	near  []*client.Cache       // a client with a near cache per node, stable across restarts
	wconn *client.Writer        // a client of the writer, stable across restarts

	pauseMu     sync.Mutex
	resumeKafka func() // set while the in-process Kafka is paused
}

// ClusterConfig shapes a Cluster.
type ClusterConfig struct {
	Nodes        int
	Partitions   int
	MaxStaleness time.Duration
	Logger       *slog.Logger
	// OriginDelay slows the origin: each load the nodes make waits a random time up to it first
	// (a slow database behind the writer). If zero, loads are not delayed.
	OriginDelay time.Duration
	// Seed seeds the origin's delays. If zero, one is taken from the clock.
	Seed uint64
}

// StartCluster starts the cluster, on a topic, L2 group and Redis key prefix of its own, and
// waits until every node serves.
func StartCluster(ctx context.Context, env Env, cfg ClusterConfig) (c *Cluster, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Seed == 0 {
		cfg.Seed = clockSeed()
	}
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	prefix := "cwcheck:" + id + ":"
	c = &Cluster{env: env, log: cfg.Logger, group: "cwcheck-l2-" + id, maxStaleness: cfg.MaxStaleness,
		slow: newSlowOrigin(cfg.Seed, cfg.OriginDelay)}
	for range cfg.Nodes {
		c.cuts = append(c.cuts, new(fault.Cutter))
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	kconn, err := env.kafkaConn()
	if err != nil {
		return c, err
	}
	c.emb, err = embedded.Start(embedded.Config{Nodes: cfg.Nodes, Brokers: env.Brokers, Kafka: kconn, RedisAddr: env.RedisAddr,
		RedisCluster: env.RedisCluster, Replication: env.Replication,
		RedisTLS: env.RedisTLS, RedisUsername: env.RedisUsername, RedisPassword: env.RedisPassword,
		RedisPrefix: prefix, GroupID: c.group, Topic: "cwcheck-" + id, Partitions: cfg.Partitions, Logger: cfg.Logger,
		Writer: func(wc *writer.Config) { wc.WaitTimeout = time.Second },
		Node: func(i int, nc *node.Config) {
			nc.L2.Backoff, nc.LoaderTimeout, nc.MaxStaleness = 200*time.Millisecond, 2*time.Second, cfg.MaxStaleness
			nc.Loader, nc.Kafka.Dial = c.slow.wrap(nc.Loader), c.cuts[i].Dial
		}})
	if err != nil {
		return c, err
	}
	c.kfake, c.mini = c.emb.Kafka(), c.emb.Redis()
	// rdb is the default user (FLUSHALL is no tier's command); the tier logs in as the nodes do.
	tc := redistier.Config{Addrs: []string{c.emb.RedisAddr}, TLS: env.RedisTLS,
		Username: env.RedisUsername, Password: env.RedisPassword, KeyPrefix: prefix}
	if len(env.RedisCluster) > 0 {
		c.rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: env.RedisCluster, TLSConfig: env.RedisTLS})
		tc.Addrs, tc.Cluster = env.RedisCluster, true
	} else {
		c.rdb = redis.NewClient(&redis.Options{Addr: c.emb.RedisAddr, TLSConfig: env.RedisTLS})
	}
	if c.tier, err = redistier.New(tc); err != nil {
		return c, err
	}
	opts := []client.Option{client.WithTimeout(5 * time.Second), client.WithRetries(4, 100*time.Millisecond)}
	if c.wconn, err = client.NewWriter(c.emb.WriterAddr, opts...); err != nil {
		return c, err
	}
	nearOpts := append(append([]client.Option(nil), opts...), client.WithNearCache(client.NearCacheConfig{MaxEntries: 10_000, Logger: c.log}))
	for _, addr := range c.emb.NodeAddrs {
		cc, err := client.NewCache(addr, opts...)
		if err != nil {
			return c, err
		}
		c.cache = append(c.cache, cc)
		nc, err := client.NewCache(addr, nearOpts...)
		if err != nil {
			return c, err
		}
		c.near = append(c.near, nc)
	}
	return c, nil
}

// Writer returns a client of the writer, stable across restarts.
func (c *Cluster) Writer() *client.Writer { return c.wconn }

// Caches returns a client per node, stable across restarts.
func (c *Cluster) Caches() []*client.Cache { return c.cache }

// NearCaches returns a client with a near cache per node (Watch), stable across restarts: each
// resubscribes when its node comes back.
func (c *Cluster) NearCaches() []*client.Cache { return c.near }

// SetOriginDelay sets the bound of the random delay before each origin load (0: none).
func (c *Cluster) SetOriginDelay(d time.Duration) { c.slow.bound.Store(int64(d)) }

// OriginLoads returns how many loads the nodes made from the origin (across restarts).
func (c *Cluster) OriginLoads() int64 { return c.slow.loads.Load() }

// KillNode stops node i at once (as a crash: no drain; its L1 is gone).
func (c *Cluster) KillNode(i int) { c.emb.KillNode(i) }

// RestartNode starts node i again on its address and waits until it serves.
func (c *Cluster) RestartNode(ctx context.Context, i int) error { return c.emb.RestartNode(ctx, i) }

// KillWriter stops the writer at once and returns how many committed changes it left in its
// outbox: they stay unpublished until it restarts.
func (c *Cluster) KillWriter() int64 { return c.emb.KillWriter() }

// RestartWriter starts the writer again on the same database and address.
func (c *Cluster) RestartWriter() error { return c.emb.RestartWriter() }

// CutNode cuts node i off from Kafka (open connections closed, new ones refused) until
// HealNode.
func (c *Cluster) CutNode(i int) { c.cuts[i].Cut() }

// HealNode lets node i reach Kafka again.
func (c *Cluster) HealNode(i int) { c.cuts[i].Heal() }

// Resets returns how many times node i flushed L1 after a gap in the event stream (0 while it
// is killed).
func (c *Cluster) Resets(i int) uint64 {
	if n := c.emb.Node(i); n != nil {
		return n.Resets()
	}
	return 0
}

// PauseKafka makes Kafka unreachable for everyone: in-process, every request fails and its
// connection closes; a real broker is paused with SIGSTOP.
func (c *Cluster) PauseKafka() error {
	if c.kfake == nil {
		return fault.Script(c.env.KafkaCtl).Signal(syscall.SIGSTOP)
	}
	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	if c.resumeKafka == nil {
		c.resumeKafka = fault.Refuse(c.kfake, "kafka paused by the checker")
	}
	return nil
}

// ResumeKafka undoes PauseKafka.
func (c *Cluster) ResumeKafka() error {
	if c.kfake == nil {
		return fault.Script(c.env.KafkaCtl).Signal(syscall.SIGCONT)
	}
	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	if c.resumeKafka != nil {
		c.resumeKafka()
		c.resumeKafka = nil
	}
	return nil
}

// RestartKafka restarts the broker on its data: in-process, every connection is dropped for a
// moment (kfake cannot restart); a real broker is stopped and started by its script.
func (c *Cluster) RestartKafka() error {
	if c.kfake != nil {
		if err := c.PauseKafka(); err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond) // the outage itself
		return c.ResumeKafka()
	}
	return fault.Script(c.env.KafkaCtl).Run("restart")
}

// FlushRedis runs FLUSHALL.
func (c *Cluster) FlushRedis(ctx context.Context) error {
	if c.mini != nil {
		c.mini.FlushAll()
		return nil
	}
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return m.FlushAll(ctx).Err() })
	}
	return c.rdb.FlushAll(ctx).Err()
}

// RestartRedis stops Redis, keeps it down for down, and starts it again empty, as a
// redis-server without persistence comes back. In-process, miniredis is closed, emptied (its
// Restart keeps the data) and restarted on its address; a real server is stopped and started by
// its script (down longer by the time the script takes).
func (c *Cluster) RestartRedis(down time.Duration) error {
	if c.mini != nil {
		c.mini.Close()
		time.Sleep(down)
		c.mini.FlushAll()
		return c.mini.Restart()
	}
	if err := fault.Script(c.env.RedisCtl).Run("stop"); err != nil {
		return err
	}
	time.Sleep(down)
	return fault.Script(c.env.RedisCtl).Run("start")
}

// StopRedis makes Redis unreachable (in-process: closed; real: SIGSTOP) until StartRedis.
func (c *Cluster) StopRedis() error {
	if c.mini != nil {
		c.mini.Close()
		return nil
	}
	return fault.Script(c.env.RedisCtl).Signal(syscall.SIGSTOP)
}

// StartRedis undoes StopRedis.
func (c *Cluster) StartRedis() error {
	if c.mini != nil {
		return c.mini.Restart()
	}
	return fault.Script(c.env.RedisCtl).Signal(syscall.SIGCONT)
}

// DeleteRecords removes every record below the log end of every partition (retention passing
// everyone's position). kafka-go has no DeleteRecords, so this admin call goes through franz-go's
// client, which the project already has for kfake.
func (c *Cluster) DeleteRecords(ctx context.Context, partitions int) error {
	topic := c.emb.Topic
	if c.kfake != nil {
		for p := range partitions {
			info := c.kfake.PartitionInfo(topic, int32(p))
			if info == nil {
				return fmt.Errorf("partition %d not found", p)
			}
			if err := c.kfake.DeleteRecords(topic, int32(p), info.HighWatermark); err != nil {
				return err
			}
		}
		return nil
	}
	cl, err := kgo.NewClient(append(c.env.kgoOpts(), kgo.SeedBrokers(c.emb.Brokers...))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	for p := range partitions {
		rp := kmsg.NewDeleteRecordsRequestTopicPartition()
		rp.Partition, rp.Offset = int32(p), -1 // -1: up to the high watermark
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10_000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("delete records: %w", err)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("delete records %s/%d: %w", t.Topic, p.Partition, err)
			}
		}
	}
	return nil
}

// AddGroupMember starts a bare L2 group member (no node) in the shared group, to force a
// rebalance; the returned func removes it.
func (c *Cluster) AddGroupMember(ctx context.Context) (func(), error) {
	kconn, err := c.env.kafkaConn()
	if err != nil {
		return nil, err
	}
	g, err := invalidation.NewGroupApplier(invalidation.GroupApplierConfig{Brokers: c.emb.Brokers, Kafka: kconn, Topics: []string{c.emb.Topic},
		GroupID: c.group, Logger: c.log,
		Applier: invalidation.BatchApplierFunc(func(ctx context.Context, events []invalidation.Event) error {
			_, _, err := c.tier.ApplyBatch(ctx, events, invalidation.RefreshHeld)
			return err
		})})
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background()) }()
	return func() { g.Close(); <-done }, nil
}

// Close stops everything at once: the nodes and the writer as crashes, then Kafka and Redis.
func (c *Cluster) Close() {
	for _, cc := range append(c.cache, c.near...) {
		cc.Close()
	}
	if c.wconn != nil {
		c.wconn.Close()
	}
	if c.kfake != nil {
		c.ResumeKafka()
	}
	if c.emb != nil {
		for i := range c.emb.NodeAddrs {
			c.emb.KillNode(i)
		}
		c.emb.KillWriter()
		c.emb.Close()
	}
	if c.tier != nil {
		c.tier.Close()
	}
	if c.rdb != nil {
		c.rdb.Close()
	}
}
