package checker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/internal/topics"
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
)

// Env names the Kafka and Redis a Cluster runs on. Empty fields mean in-process ones.
type Env struct {
	Brokers   []string
	RedisAddr string
	// KafkaCtl and RedisCtl are the scripts that control the real servers (scripts/kafka.sh,
	// scripts/redis.sh): faults on real servers need them (pause, restart).
	KafkaCtl, RedisCtl string
}

// EnvFromTestEnv reads the real servers' addresses and control scripts the way the tests do
// (CACHEWIRE_TEST_KAFKA, CACHEWIRE_TEST_REDIS, CACHEWIRE_TEST_KAFKA_CTL, CACHEWIRE_TEST_REDIS_CTL).
func EnvFromTestEnv() Env {
	var e Env
	if b := os.Getenv(EnvKafka); b != "" {
		e.Brokers = strings.Split(b, ",")
	}
	e.RedisAddr = os.Getenv(EnvRedis)
	e.KafkaCtl, e.RedisCtl = os.Getenv(EnvKafkaCtl), os.Getenv(EnvRedisCtl)
	return e
}

// Cluster is a writer and N nodes in this process, on in-process or real Kafka and Redis, with
// the faults the scenarios inject.
type Cluster struct {
	env          Env
	log          *slog.Logger
	dir          string
	topic, group string
	prefix       string
	maxStaleness time.Duration

	kfake *kfake.Cluster
	mini  *miniredis.Miniredis
	rdb   *redis.Client
	tier  *redistier.Tier

	originLoads atomic.Int64
	originDelay atomic.Int64 // the bound of each load's random delay, in nanoseconds
	delayMu     sync.Mutex
	delayRand   *rand.Rand

	mu          sync.Mutex
	writer      *writer.Writer
	writerAddr  string
	nodes       []*node.Node
	loaders     []*node.WriterLoader // the nodes' connections to the origin
	nodeAddrs   []string
	cutters     []*cutter
	caches      []*client.Cache
	writerConn  *client.Writer
	kafkaPaused atomic.Bool
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

// StartCluster starts the cluster and waits until every node serves.
func StartCluster(ctx context.Context, env Env, cfg ClusterConfig) (c *Cluster, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	c = &Cluster{env: env, log: cfg.Logger, topic: "cwcheck-" + id, group: "cwcheck-l2-" + id, prefix: "cwcheck:" + id + ":",
		maxStaleness: cfg.MaxStaleness}
	if cfg.Seed == 0 {
		cfg.Seed = clockSeed()
	}
	c.delayRand = rand.New(rand.NewPCG(cfg.Seed, 0x0de1a7))
	c.SetOriginDelay(cfg.OriginDelay)
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.dir, err = os.MkdirTemp("", "cachewire-check-"); err != nil {
		return c, err
	}
	if len(env.Brokers) == 0 {
		c.kfake, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(cfg.Partitions), c.topic))
		if err != nil {
			return c, err
		}
		c.env.Brokers = c.kfake.ListenAddrs()
	} else if err := topics.Create(ctx, env.Brokers, topics.Spec{Name: c.topic, Partitions: cfg.Partitions}); err != nil {
		return c, err
	}
	if env.RedisAddr == "" {
		c.mini = miniredis.NewMiniRedis()
		if err := c.mini.Start(); err != nil {
			return c, err
		}
		c.env.RedisAddr = c.mini.Addr()
	}
	c.rdb = redis.NewClient(&redis.Options{Addr: c.env.RedisAddr})
	if c.tier, err = redistier.New(redistier.Config{Client: c.rdb, KeyPrefix: c.prefix}); err != nil {
		return c, err
	}
	c.writerAddr = freeAddr()
	if err := c.startWriter(); err != nil {
		return c, err
	}
	if c.writerConn, err = client.NewWriter(c.writerAddr, client.WithTimeout(5*time.Second), client.WithRetries(4, 100*time.Millisecond)); err != nil {
		return c, err
	}
	for range cfg.Nodes {
		c.nodeAddrs = append(c.nodeAddrs, freeAddr())
		c.cutters = append(c.cutters, &cutter{conns: map[net.Conn]bool{}})
		c.nodes = append(c.nodes, nil)
		c.loaders = append(c.loaders, nil)
		cc, err := client.NewCache(c.nodeAddrs[len(c.nodeAddrs)-1], client.WithTimeout(5*time.Second), client.WithRetries(4, 100*time.Millisecond))
		if err != nil {
			return c, err
		}
		c.caches = append(c.caches, cc)
	}
	for i := range cfg.Nodes {
		if err := c.startNode(ctx, i); err != nil {
			return c, err
		}
	}
	return c, nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

func (c *Cluster) startWriter() error {
	w, err := writer.New(writer.Config{WriterID: "check-writer", DBPath: filepath.Join(c.dir, "writer.db"),
		GRPCAddr: c.writerAddr, HTTPAddr: "-", Brokers: c.env.Brokers, Topic: c.topic, WaitTimeout: time.Second,
		Logger: c.log.With("component", "writer")})
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		w.Close()
		return err
	}
	c.mu.Lock()
	c.writer = w
	c.mu.Unlock()
	return nil
}

func (c *Cluster) startNode(ctx context.Context, i int) error {
	loader, err := node.DialWriter(c.writerAddr)
	if err != nil {
		return err
	}
	n, err := node.New(node.Config{
		NodeID: fmt.Sprintf("check-node-%d", i), GRPCAddr: c.nodeAddrs[i], HTTPAddr: "-",
		Brokers: c.env.Brokers, Topics: []string{c.topic}, GroupID: c.group,
		L2:     redistier.Config{Addrs: []string{c.env.RedisAddr}, KeyPrefix: c.prefix, Backoff: 200 * time.Millisecond},
		Loader: slowOrigin{loader, c}, LoaderTimeout: 2 * time.Second, MaxStaleness: c.maxStaleness, SubscriberMaxWait: 100 * time.Millisecond,
		KafkaDial: c.cutters[i].dial, Logger: c.log.With("component", fmt.Sprintf("node-%d", i)),
	})
	if err != nil {
		loader.Close()
		return err
	}
	if err := n.Start(); err != nil {
		loader.Close()
		return err
	}
	// From here KillNode and Close stop the node and close its loader (the node does not).
	c.mu.Lock()
	c.nodes[i], c.loaders[i] = n, loader
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return n.WaitReady(ctx)
}

// Writer returns a client of the writer; Caches clients of the nodes (stable across restarts).
func (c *Cluster) Writer() *client.Writer { return c.writerConn }

// Caches returns a client per node.
func (c *Cluster) Caches() []*client.Cache { return c.caches }

// KillNode stops node i at once (as a crash: no drain; its L1 is gone).
func (c *Cluster) KillNode(i int) {
	c.mu.Lock()
	n, l := c.nodes[i], c.loaders[i]
	c.nodes[i], c.loaders[i] = nil, nil
	c.mu.Unlock()
	if n != nil {
		n.Close()
	}
	if l != nil {
		l.Close()
	}
}

// SetOriginDelay sets the bound of the random delay before each origin load (0: none).
func (c *Cluster) SetOriginDelay(d time.Duration) { c.originDelay.Store(int64(d)) }

// OriginLoads returns how many loads the nodes made from the origin (across restarts).
func (c *Cluster) OriginLoads() int64 { return c.originLoads.Load() }

// originWait returns a random delay up to the origin delay.
func (c *Cluster) originWait() time.Duration {
	bound := c.originDelay.Load()
	if bound <= 0 {
		return 0
	}
	c.delayMu.Lock()
	defer c.delayMu.Unlock()
	return time.Duration(c.delayRand.Int64N(bound + 1))
}

// slowOrigin is the nodes' loader: the writer's read API, counted, and slowed by the cluster's
// origin delay.
type slowOrigin struct {
	*node.WriterLoader
	c *Cluster
}

func (o slowOrigin) Load(ctx context.Context, key string) (node.Loaded, error) {
	o.c.originLoads.Add(1)
	if d := o.c.originWait(); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return node.Loaded{}, ctx.Err()
		}
	}
	return o.WriterLoader.Load(ctx, key)
}

// RestartNode starts node i again on its address.
func (c *Cluster) RestartNode(ctx context.Context, i int) error { return c.startNode(ctx, i) }

// KillWriter stops the writer at once: committed changes still in its outbox stay unpublished
// until it restarts.
func (c *Cluster) KillWriter() int64 {
	c.mu.Lock()
	w := c.writer
	c.writer = nil
	c.mu.Unlock()
	if w == nil {
		return 0
	}
	depth := w.OutboxDepth()
	w.Close()
	return depth
}

// RestartWriter starts the writer again on the same database and address.
func (c *Cluster) RestartWriter() error { return c.startWriter() }

// CutNode cuts node i off from Kafka (open connections closed, new ones refused) until
// HealNode.
func (c *Cluster) CutNode(i int) { c.cutters[i].cut() }

// Resets returns how many times node i flushed L1 after a gap in the event stream.
func (c *Cluster) Resets(i int) uint64 {
	c.mu.Lock()
	n := c.nodes[i]
	c.mu.Unlock()
	if n == nil {
		return 0
	}
	return n.Resets()
}

// HealNode lets node i reach Kafka again.
func (c *Cluster) HealNode(i int) { c.cutters[i].heal() }

// PauseKafka makes Kafka unreachable for everyone: in-process, every request fails and its
// connection closes; a real broker is paused with SIGSTOP.
func (c *Cluster) PauseKafka() error {
	if c.kfake != nil {
		if c.kafkaPaused.CompareAndSwap(false, true) {
			c.kfake.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
				if c.kafkaPaused.Load() {
					c.kfake.KeepControl()
					return nil, errors.New("kafka paused by the checker"), true
				}
				c.kfake.DropControl()
				return nil, nil, false
			})
		}
		return nil
	}
	return c.signal(c.env.KafkaCtl, syscall.SIGSTOP)
}

// ResumeKafka undoes PauseKafka.
func (c *Cluster) ResumeKafka() error {
	if c.kfake != nil {
		c.kafkaPaused.Store(false)
		return nil
	}
	return c.signal(c.env.KafkaCtl, syscall.SIGCONT)
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
	return c.script(c.env.KafkaCtl, "restart")
}

// FlushRedis runs FLUSHALL.
func (c *Cluster) FlushRedis(ctx context.Context) error {
	if c.mini != nil {
		c.mini.FlushAll()
		return nil
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
	if err := c.script(c.env.RedisCtl, "stop"); err != nil {
		return err
	}
	time.Sleep(down)
	return c.script(c.env.RedisCtl, "start")
}

// StopRedis makes Redis unreachable (in-process: closed; real: SIGSTOP) until StartRedis.
func (c *Cluster) StopRedis() error {
	if c.mini != nil {
		c.mini.Close()
		return nil
	}
	return c.signal(c.env.RedisCtl, syscall.SIGSTOP)
}

// StartRedis undoes StopRedis.
func (c *Cluster) StartRedis() error {
	if c.mini != nil {
		return c.mini.Restart()
	}
	return c.signal(c.env.RedisCtl, syscall.SIGCONT)
}

// DeleteRecords removes every record below the log end of every partition (retention passing
// everyone's position). kafka-go has no DeleteRecords, so this admin call goes through franz-go's
// client, which the project already has for kfake.
func (c *Cluster) DeleteRecords(ctx context.Context, partitions int) error {
	if c.kfake != nil {
		for p := range partitions {
			info := c.kfake.PartitionInfo(c.topic, int32(p))
			if info == nil {
				return fmt.Errorf("partition %d not found", p)
			}
			if err := c.kfake.DeleteRecords(c.topic, int32(p), info.HighWatermark); err != nil {
				return err
			}
		}
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.env.Brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = c.topic
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

func (c *Cluster) script(path, verb string) error {
	if path == "" {
		return errors.New("this fault needs the server's control script (CACHEWIRE_TEST_KAFKA_CTL / CACHEWIRE_TEST_REDIS_CTL)")
	}
	out, err := exec.Command(path, verb).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", path, verb, err, out)
	}
	return nil
}

func (c *Cluster) signal(ctl string, sig syscall.Signal) error {
	if ctl == "" {
		return errors.New("this fault needs the server's control script (CACHEWIRE_TEST_KAFKA_CTL / CACHEWIRE_TEST_REDIS_CTL)")
	}
	out, err := exec.Command(ctl, "pid").Output()
	if err != nil {
		return fmt.Errorf("%s pid: %v", ctl, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return fmt.Errorf("%s pid: %q", ctl, out)
	}
	return syscall.Kill(pid, sig)
}

// AddGroupMember starts a bare L2 group member (no node) in the shared group, to force a
// rebalance; the returned func removes it.
func (c *Cluster) AddGroupMember(ctx context.Context) (func(), error) {
	g, err := invalidation.NewGroupApplier(invalidation.GroupApplierConfig{Brokers: c.env.Brokers, Topics: []string{c.topic},
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

// Quiesce waits until the writer's outbox is empty and every node is caught up.
func (c *Cluster) Quiesce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		c.mu.Lock()
		w, nodes := c.writer, append([]*node.Node(nil), c.nodes...)
		c.mu.Unlock()
		ready := w != nil && w.OutboxDepth() == 0
		for _, n := range nodes {
			ready = ready && n != nil && n.Ready()
		}
		if ready {
			// Two fetch rounds, so every node has read to the end what the relay published.
			select {
			case <-time.After(2*c.maxStaleness/5 + 300*time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not quiet: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Finals reads every key from the origin, from every node (plain Gets) and from Redis.
func (c *Cluster) Finals(ctx context.Context, keys []string) ([]Final, error) {
	var out []Final
	for _, k := range keys {
		f := Final{Key: k}
		it, err := c.writerConn.Get(ctx, k)
		if err != nil && !errors.Is(err, client.ErrNotFound) {
			return nil, fmt.Errorf("final origin read of %s: %w", k, err)
		}
		f.Origin = it.Version
		for _, cc := range c.caches {
			it, err := cc.Get(ctx, k)
			if err != nil {
				return nil, fmt.Errorf("final read of %s: %w", k, err)
			}
			f.Nodes = append(f.Nodes, it.Version)
		}
		e, found, err := c.tier.Get(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("final Redis read of %s: %w", k, err)
		}
		f.Redis, f.RedisValue = e.Version, found
		out = append(out, f)
	}
	return out, nil
}

// Converged reads the finals until every node and Redis agree with the origin, or until ctx
// ends; it returns the last finals read either way.
func (c *Cluster) Converged(ctx context.Context, keys []string, settle time.Duration) ([]Final, error) {
	deadline := time.Now().Add(settle)
	for {
		finals, err := c.Finals(ctx, keys)
		if err != nil {
			return nil, err
		}
		if agree(finals) || time.Now().After(deadline) {
			return finals, nil
		}
		select {
		case <-ctx.Done():
			return finals, nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func agree(finals []Final) bool {
	for _, f := range finals {
		for _, v := range f.Nodes {
			if v != f.Origin {
				return false
			}
		}
		if f.RedisValue && f.Redis != f.Origin {
			return false
		}
	}
	return true
}

// Close stops everything.
func (c *Cluster) Close() {
	c.mu.Lock()
	nodes, loaders, w := c.nodes, c.loaders, c.writer
	c.mu.Unlock()
	for _, cc := range c.caches {
		cc.Close()
	}
	if c.writerConn != nil {
		c.writerConn.Close()
	}
	for _, n := range nodes {
		if n != nil {
			n.Close()
		}
	}
	for _, l := range loaders {
		if l != nil {
			l.Close()
		}
	}
	if w != nil {
		w.Close()
	}
	if c.kafkaPaused.Load() {
		c.ResumeKafka()
	}
	if c.tier != nil {
		c.tier.Close()
	}
	if c.rdb != nil {
		c.rdb.Close()
	}
	if c.mini != nil {
		c.mini.Close()
	}
	if c.kfake != nil {
		c.kfake.Close()
	}
	if c.dir != "" {
		os.RemoveAll(c.dir)
	}
}

// cutter is a dial function whose connections can be cut and whose new dials can be refused:
// the network between one node and Kafka.
type cutter struct {
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

func (c *cutter) dial(ctx context.Context, network, address string) (net.Conn, error) {
	c.mu.Lock()
	down := c.down
	c.mu.Unlock()
	if down {
		return nil, fmt.Errorf("dial %s: network cut by the checker", address)
	}
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		conn.Close()
		return nil, fmt.Errorf("dial %s: network cut by the checker", address)
	}
	c.conns[conn] = true
	return &trackedConn{Conn: conn, c: c}, nil
}

func (c *cutter) cut() {
	c.mu.Lock()
	c.down = true
	conns := c.conns
	c.conns = map[net.Conn]bool{}
	c.mu.Unlock()
	for conn := range conns {
		conn.Close()
	}
}

func (c *cutter) heal() {
	c.mu.Lock()
	c.down = false
	c.mu.Unlock()
}

type trackedConn struct {
	net.Conn
	c    *cutter
	once sync.Once
}

func (t *trackedConn) Close() error {
	t.once.Do(func() {
		t.c.mu.Lock()
		delete(t.c.conns, t.Conn)
		t.c.mu.Unlock()
	})
	return t.Conn.Close()
}
