package embedded

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/writer"
)

// ErrClosed is returned by RestartNode and RestartWriter after Close.
var ErrClosed = errors.New("embedded: closed")

// Config configures an embedded cluster. Every field documents its zero-value default.
type Config struct {
	// Nodes is the number of cache nodes. If zero, 3.
	Nodes int
	// Brokers, when set, are a real Kafka's bootstrap addresses; if empty, an in-process kfake
	// cluster is started.
	Brokers []string
	// Kafka is how the writer and the nodes connect to a real Kafka (TLS, SASL); the zero value
	// is plaintext, which the in-process one speaks. A Node hook that sets Kafka.Dial keeps it.
	Kafka invalidation.KafkaConn
	// KafkaPort is the in-process Kafka's port. If zero, any free port.
	KafkaPort int
	// RedisAddr, when set, is a real Redis; if empty, an in-process miniredis is started.
	RedisAddr string
	// RedisCluster, when set, are the seed addresses of a real Redis Cluster, used instead of
	// RedisAddr (the nodes' tiers run in cluster mode).
	RedisCluster []string
	// Replication is the replication factor of the topic the writer creates on a real Kafka. If
	// zero, 1; set 3 on a 3-broker cluster (with min.insync.replicas=2 and the writer's acks=all,
	// a write then survives a broker lost).
	Replication int
	// RedisTLS, RedisUsername and RedisPassword are how the nodes connect to a real Redis (TLS,
	// an ACL user); empty means plaintext as the default user, which the in-process one speaks.
	RedisTLS                     *tls.Config
	RedisUsername, RedisPassword string
	// RedisPort is the in-process Redis's port. If zero, any free port.
	RedisPort int
	// RedisPrefix prefixes every Redis key. If empty, "cw:".
	RedisPrefix string
	// GroupID is the nodes' L2 consumer group. If empty, "cachewire-l2".
	GroupID string
	// Topic carries the change events. If empty, "cachewire.events". The writer creates it on a
	// real Kafka when it is missing.
	Topic string
	// Partitions of the topic. If zero, 3.
	Partitions int
	// WriterAddr is the writer's gRPC address. If empty, 127.0.0.1 on any free port.
	WriterAddr string
	// NodeAddrs are the nodes' gRPC addresses, one per node. If empty, any free ports.
	NodeAddrs []string
	// HTTP serves each process's /metrics and health on a free port when true.
	HTTP bool
	// DataDir holds the writer's database. If empty, a temporary directory removed by Close.
	DataDir string
	// Node, if set, adjusts node i's configuration before each of its starts (Start and every
	// RestartNode). Its Loader is then node i's own connection to the writer, which the cluster
	// closes when the node stops: Node may wrap it (to slow or count loads) or set it to nil
	// (see CacheAside). Setting Kafka.Dial routes node i's Kafka connections, say through a
	// Cutter (internal/fault) that can cut the node off.
	Node func(i int, c *node.Config)
	// Writer, if set, adjusts the writer's configuration before each of its starts (Start and
	// every RestartWriter).
	Writer func(c *writer.Config)
	// Logger receives every component's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Cluster is a running embedded cluster. Its methods are safe for concurrent use.
type Cluster struct {
	// Brokers are the Kafka bootstrap addresses.
	Brokers []string
	// RedisAddr is the Redis address (the first seed of RedisCluster when that is set).
	RedisAddr string
	// RedisCluster are the Redis Cluster's seed addresses, or nil.
	RedisCluster []string
	// Topic carries the change events.
	Topic string
	// WriterAddr is the writer's gRPC address; NodeAddrs the nodes' gRPC addresses. Restarts
	// keep them.
	WriterAddr string
	NodeAddrs  []string

	cfg     Config
	kafka   *kfake.Cluster
	redis   *miniredis.Miniredis
	dir     string // the writer's database directory
	tempDir string // removed by Close

	mu      sync.Mutex
	closed  bool
	writer  *writer.Writer
	nodes   []*node.Node         // nil while killed
	loaders []*node.WriterLoader // node i's connection to the writer; nil while killed
}

// Start starts the cluster and returns once every node is positioned and serving.
func Start(cfg Config) (c *Cluster, err error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Topic == "" {
		cfg.Topic = "cachewire.events"
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.NodeAddrs) != 0 && len(cfg.NodeAddrs) != cfg.Nodes {
		return nil, fmt.Errorf("embedded: %d node addresses for %d nodes", len(cfg.NodeAddrs), cfg.Nodes)
	}
	if len(cfg.RedisCluster) > 0 {
		cfg.RedisAddr = cfg.RedisCluster[0]
	}
	c = &Cluster{Brokers: cfg.Brokers, RedisAddr: cfg.RedisAddr, RedisCluster: cfg.RedisCluster, Topic: cfg.Topic, WriterAddr: cfg.WriterAddr, cfg: cfg}
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	if err := c.startServers(); err != nil {
		return c, err
	}
	if c.dir = cfg.DataDir; c.dir == "" {
		if c.tempDir, err = os.MkdirTemp("", "cachewire-embedded-"); err != nil {
			return c, err
		}
		c.dir = c.tempDir
	}
	if c.WriterAddr == "" {
		c.WriterAddr = "127.0.0.1:0"
	}
	w, err := c.startWriter()
	if err != nil {
		return c, err
	}
	// From here restarts reuse the addresses the listeners got.
	c.WriterAddr = w.GRPCAddr()
	c.NodeAddrs = append([]string(nil), cfg.NodeAddrs...)
	for range cfg.Nodes - len(c.NodeAddrs) {
		c.NodeAddrs = append(c.NodeAddrs, "127.0.0.1:0")
	}
	c.nodes, c.loaders = make([]*node.Node, cfg.Nodes), make([]*node.WriterLoader, cfg.Nodes)
	var started []*node.Node
	for i := range cfg.Nodes {
		n, err := c.startNode(i)
		if err != nil {
			return c, err
		}
		c.NodeAddrs[i] = n.GRPCAddr()
		started = append(started, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, n := range started {
		if err := n.WaitReady(ctx); err != nil {
			return c, fmt.Errorf("embedded: %w", err)
		}
	}
	return c, nil
}

// httpAddr is where a process serves HTTP: a free port with Config.HTTP, else nowhere.
func (c *Cluster) httpAddr() string {
	if c.cfg.HTTP {
		return "127.0.0.1:0"
	}
	return "-"
}

// Close shuts everything down (nodes, writer, Redis, Kafka), letting requests in flight finish
// and the writer publish its outbox for up to 10 seconds, and removes temporary files. A second
// call does nothing.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	nodes, loaders, w := c.nodes, c.loaders, c.writer
	c.nodes, c.loaders, c.writer = nil, nil, nil
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for i, n := range nodes {
		if n != nil {
			errs = append(errs, ignoreClosed(n.Shutdown(ctx), node.ErrClosed))
		}
		if loaders[i] != nil {
			errs = append(errs, loaders[i].Close())
		}
	}
	if w != nil {
		errs = append(errs, ignoreClosed(w.Shutdown(ctx), writer.ErrClosed))
	}
	c.stopServers()
	if c.tempDir != "" {
		errs = append(errs, os.RemoveAll(c.tempDir))
	}
	return errors.Join(errs...)
}

func ignoreClosed(err, closed error) error {
	if errors.Is(err, closed) {
		return nil
	}
	return err
}
