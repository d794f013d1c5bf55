package embedded

import (
	"fmt"
	"strconv"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"
)

// startServers starts the in-process Kafka and Redis that the configuration does not name.
func (c *Cluster) startServers() error {
	if len(c.Brokers) == 0 {
		opts := []kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(int32(c.cfg.Partitions), c.Topic)}
		if c.cfg.KafkaPort != 0 {
			opts = append(opts, kfake.Ports(c.cfg.KafkaPort))
		}
		var err error
		if c.kafka, err = kfake.NewCluster(opts...); err != nil {
			return fmt.Errorf("embedded: start in-process Kafka: %w", err)
		}
		c.Brokers = c.kafka.ListenAddrs()
	}
	if c.RedisAddr == "" {
		c.redis = miniredis.NewMiniRedis()
		var err error
		if c.cfg.RedisPort != 0 {
			err = c.redis.StartAddr("127.0.0.1:" + strconv.Itoa(c.cfg.RedisPort))
		} else {
			err = c.redis.Start()
		}
		if err != nil {
			return fmt.Errorf("embedded: start in-process Redis: %w", err)
		}
		c.RedisAddr = c.redis.Addr()
	}
	return nil
}

func (c *Cluster) stopServers() {
	if c.redis != nil {
		c.redis.Close()
	}
	if c.kafka != nil {
		c.kafka.Close()
	}
}

// Kafka returns the in-process Kafka, for faults (Control, DeleteRecords; see fault.Refuse), or
// nil when the cluster runs on a real one. Close closes it.
func (c *Cluster) Kafka() *kfake.Cluster { return c.kafka }

// Redis returns the in-process Redis, for faults (Close and Restart, FlushAll), or nil when the
// cluster runs on a real one. Close closes it.
func (c *Cluster) Redis() *miniredis.Miniredis { return c.redis }

// StartRedis starts a standalone in-process Redis (miniredis) on a free port.
func StartRedis() (*miniredis.Miniredis, error) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return nil, err
	}
	return m, nil
}
