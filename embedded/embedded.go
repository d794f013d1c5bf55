// Package embedded runs a whole cachewire cluster in one process: Kafka (franz-go's kfake) and
// Redis (miniredis) in memory unless real ones are named, one writer and any number of cache
// nodes. The demo command, the client examples and the cachectl tests run on it.
//
// Usage:
//
//	c, err := embedded.Start(embedded.Config{Nodes: 3})
//	if err != nil { ... }
//	defer c.Close()
//	fmt.Println(c.WriterAddr, c.NodeAddrs)
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/redistier"
	"github.com/cachewire/cachewire/writer"
)

// Config configures an embedded cluster. Every field documents its zero-value default.
type Config struct {
	// Nodes is the number of cache nodes. If zero, 3.
	Nodes int
	// Brokers, when set, are a real Kafka's bootstrap addresses; if empty, an in-process kfake
	// cluster is started.
	Brokers []string
	// KafkaPort is the in-process Kafka's port. If zero, any free port.
	KafkaPort int
	// RedisAddr, when set, is a real Redis; if empty, an in-process miniredis is started.
	RedisAddr string
	// RedisPort is the in-process Redis's port. If zero, any free port.
	RedisPort int
	// RedisPrefix prefixes every Redis key. If empty, "cw:".
	RedisPrefix string
	// GroupID is the nodes' L2 consumer group. If empty, "cachewire-l2".
	GroupID string
	// Topic carries the change events. If empty, "cachewire.events".
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
	// Node, if set, adjusts each node's configuration before it starts.
	Node func(i int, c *node.Config)
	// Logger receives every component's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Cluster is a running embedded cluster.
type Cluster struct {
	// Brokers are the Kafka bootstrap addresses.
	Brokers []string
	// RedisAddr is the Redis address.
	RedisAddr string
	// Topic carries the change events.
	Topic string
	// WriterAddr is the writer's gRPC address; NodeAddrs the nodes' gRPC addresses.
	WriterAddr string
	NodeAddrs  []string
	// Writer and Nodes are the running components.
	Writer *writer.Writer
	Nodes  []*node.Node

	loader  *node.WriterLoader
	kafka   *kfake.Cluster
	redis   *miniredis.Miniredis
	tempDir string
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
	c = &Cluster{Brokers: cfg.Brokers, RedisAddr: cfg.RedisAddr, Topic: cfg.Topic}
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	if len(c.Brokers) == 0 {
		opts := []kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(int32(cfg.Partitions), cfg.Topic)}
		if cfg.KafkaPort != 0 {
			opts = append(opts, kfake.Ports(cfg.KafkaPort))
		}
		if c.kafka, err = kfake.NewCluster(opts...); err != nil {
			return c, fmt.Errorf("embedded: start in-process Kafka: %w", err)
		}
		c.Brokers = c.kafka.ListenAddrs()
	}
	if c.RedisAddr == "" {
		c.redis = miniredis.NewMiniRedis()
		if cfg.RedisPort != 0 {
			err = c.redis.StartAddr("127.0.0.1:" + strconv.Itoa(cfg.RedisPort))
		} else {
			err = c.redis.Start()
		}
		if err != nil {
			return c, fmt.Errorf("embedded: start in-process Redis: %w", err)
		}
		c.RedisAddr = c.redis.Addr()
	}
	dir := cfg.DataDir
	if dir == "" {
		if c.tempDir, err = os.MkdirTemp("", "cachewire-embedded-"); err != nil {
			return c, err
		}
		dir = c.tempDir
	}
	httpAddr := func() string {
		if cfg.HTTP {
			return "127.0.0.1:0"
		}
		return "-"
	}
	wa := cfg.WriterAddr
	if wa == "" {
		wa = "127.0.0.1:0"
	}
	c.Writer, err = writer.New(writer.Config{WriterID: "embedded-writer", DBPath: filepath.Join(dir, "writer.db"),
		GRPCAddr: wa, HTTPAddr: httpAddr(), Brokers: c.Brokers, Topic: cfg.Topic, CreateTopic: true,
		TopicPartitions: cfg.Partitions, Logger: cfg.Logger.With("component", "writer")})
	if err != nil {
		return c, err
	}
	if err = c.Writer.Start(); err != nil {
		return c, err
	}
	c.WriterAddr = c.Writer.GRPCAddr()
	if c.loader, err = node.DialWriter(c.WriterAddr); err != nil {
		return c, err
	}
	for i := range cfg.Nodes {
		addr := "127.0.0.1:0"
		if len(cfg.NodeAddrs) > 0 {
			addr = cfg.NodeAddrs[i]
		}
		nc := node.Config{
			NodeID: "node-" + strconv.Itoa(i+1), GRPCAddr: addr, HTTPAddr: httpAddr(),
			Brokers: c.Brokers, Topics: []string{cfg.Topic}, GroupID: cfg.GroupID,
			L2:     redistier.Config{Addrs: []string{c.RedisAddr}, KeyPrefix: cfg.RedisPrefix},
			Loader: c.loader, Policy: invalidation.RefreshHeld, SubscriberMaxWait: 100 * time.Millisecond,
			Logger: cfg.Logger.With("component", "node-"+strconv.Itoa(i+1)),
		}
		if cfg.Node != nil {
			cfg.Node(i, &nc)
		}
		n, err := node.New(nc)
		if err != nil {
			return c, err
		}
		if err := n.Start(); err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, n)
		c.NodeAddrs = append(c.NodeAddrs, n.GRPCAddr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, n := range c.Nodes {
		if err := n.WaitReady(ctx); err != nil {
			return c, fmt.Errorf("embedded: %w", err)
		}
	}
	return c, nil
}

// Close shuts everything down (nodes, writer, Redis, Kafka) and removes temporary files.
func (c *Cluster) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, ignoreClosed(n.Shutdown(ctx), node.ErrClosed))
	}
	if c.loader != nil {
		errs = append(errs, c.loader.Close())
	}
	if c.Writer != nil {
		errs = append(errs, ignoreClosed(c.Writer.Shutdown(ctx), writer.ErrClosed))
	}
	if c.redis != nil {
		c.redis.Close()
	}
	if c.kafka != nil {
		c.kafka.Close()
	}
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

// CacheAside is a Config.Node function that runs every node without an origin loader.
func CacheAside(_ int, c *node.Config) { c.Loader = nil }

// StartRedis starts a standalone in-process Redis (miniredis) on a free port.
func StartRedis() (*miniredis.Miniredis, error) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return nil, err
	}
	return m, nil
}
