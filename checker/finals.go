package checker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cachewire/cachewire/client"
)

// Quiesce waits until the writer's outbox is empty and every node is caught up.
func (c *Cluster) Quiesce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		w := c.emb.Writer()
		ready := w != nil && w.OutboxDepth() == 0
		for i := range c.emb.NodeAddrs {
			n := c.emb.Node(i)
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
		it, err := c.wconn.Get(ctx, k)
		if err != nil && !errors.Is(err, client.ErrNotFound) {
			return nil, fmt.Errorf("final origin read of %s: %w", k, err)
		}
		f.Origin = it.Version
		for _, cc := range c.cache {
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
