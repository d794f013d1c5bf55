package embedded

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/redistier"
)

// CacheAside is a Config.Node function that runs every node without an origin loader.
func CacheAside(_ int, c *node.Config) { c.Loader = nil }

// startNode starts node i on NodeAddrs[i], with a connection of its own to the writer. It does
// not wait for the node to be ready.
func (c *Cluster) startNode(i int) (*node.Node, error) {
	loader, err := node.DialWriter(c.WriterAddr)
	if err != nil {
		return nil, err
	}
	id := "node-" + strconv.Itoa(i+1)
	nc := node.Config{
		NodeID: id, GRPCAddr: c.NodeAddrs[i], HTTPAddr: c.httpAddr(),
		Brokers: c.Brokers, Kafka: c.cfg.Kafka, Topics: []string{c.Topic}, GroupID: c.cfg.GroupID,
		L2: redistier.Config{Addrs: []string{c.RedisAddr}, KeyPrefix: c.cfg.RedisPrefix, Cluster: len(c.RedisCluster) > 0,
			TLS: c.cfg.RedisTLS, Username: c.cfg.RedisUsername, Password: c.cfg.RedisPassword},
		Loader: loader, Policy: invalidation.RefreshHeld, SubscriberMaxWait: 100 * time.Millisecond,
		Logger: c.cfg.Logger.With("component", id),
	}
	if len(c.RedisCluster) > 0 {
		nc.L2.Addrs = c.RedisCluster
	}
	if c.cfg.Node != nil {
		c.cfg.Node(i, &nc)
	}
	n, err := node.New(nc)
	if err == nil {
		err = n.Start()
		if err != nil {
			n.Close()
		}
	}
	if err != nil {
		loader.Close()
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		n.Close()
		loader.Close()
		return nil, ErrClosed
	}
	c.nodes[i], c.loaders[i] = n, loader
	return n, nil
}

// Node returns node i, or nil while it is killed.
func (c *Cluster) Node(i int) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.nodes) {
		return nil
	}
	return c.nodes[i]
}

// KillNode stops node i at once, as a crash: no drain, requests in flight fail, its L1 is gone
// and its connection to the writer closed. Killing a killed node does nothing.
func (c *Cluster) KillNode(i int) {
	c.mu.Lock()
	if i < 0 || i >= len(c.nodes) {
		c.mu.Unlock()
		return
	}
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

// RestartNode starts killed node i again on its gRPC address, with the same configuration
// (Config.Node runs again), and waits until it is positioned and serving, or ctx ends, or 60
// seconds pass. It fails if node i is running, and with ErrClosed after Close.
func (c *Cluster) RestartNode(ctx context.Context, i int) error {
	if i < 0 || i >= c.cfg.Nodes {
		return fmt.Errorf("embedded: no node %d", i)
	}
	c.mu.Lock()
	closed, running := c.closed, !c.closed && c.nodes[i] != nil
	c.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case running:
		return fmt.Errorf("embedded: node %d is running", i)
	}
	n, err := c.startNode(i)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return n.WaitReady(ctx)
}
