package checker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/fault"
)

// The variables that name real clusters for ClusterScenarios: a Kafka of 3 brokers and a Redis
// Cluster, both controlled by the scripts named in EnvKafkaCtl and EnvRedisCtl (run with
// CACHEWIRE_KAFKA_BROKERS and CACHEWIRE_REDIS_NODES set, as .ci/run's cluster stage does).
const (
	EnvKafkaCluster = "CACHEWIRE_TEST_KAFKA_CLUSTER"
	EnvRedisCluster = "CACHEWIRE_TEST_REDIS_CLUSTER"
)

// ClusterEnvFromTestEnv reads the clusters' addresses and control scripts (plaintext, default
// users). It returns an error naming what is missing when they are not set.
func ClusterEnvFromTestEnv() (Env, error) {
	e := Env{KafkaCtl: os.Getenv(EnvKafkaCtl), RedisCtl: os.Getenv(EnvRedisCtl), Replication: 3}
	kb, rb := os.Getenv(EnvKafkaCluster), os.Getenv(EnvRedisCluster)
	if kb == "" || rb == "" || e.KafkaCtl == "" || e.RedisCtl == "" {
		return e, fmt.Errorf("the cluster scenarios need %s, %s, %s and %s (.ci/run's cluster stage sets them: "+
			"CACHEWIRE_KAFKA_BROKERS=3 scripts/kafka.sh start, CACHEWIRE_REDIS_NODES=6 scripts/redis.sh start)",
			EnvKafkaCluster, EnvRedisCluster, EnvKafkaCtl, EnvRedisCtl)
	}
	e.Brokers, e.RedisCluster = strings.Split(kb, ","), strings.Split(rb, ",")
	e.RedisAddr = e.RedisCluster[0]
	return e, nil
}

// ClusterScenarios are the faults of a Kafka cluster and a Redis Cluster, run on real ones
// (ClusterEnvFromTestEnv). Each skips on an environment that is not such a pair.
var ClusterScenarios = []Scenario{
	{Name: "leader broker of busy partitions SIGKILLed, then restarted", Skip: clusterSkip,
		Shape: func(o *Options) { o.Duration = max(o.Duration, 16*time.Second) },
		Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
			n, err := c.leaderNode(ctx, 0)
			if err != nil {
				return 0, err
			}
			return 1, window(h, "leader broker SIGKILL", 2*o.MaxStaleness, func() error {
				if err := fault.Script(c.env.KafkaCtl).Run("kill", n); err != nil {
					return err
				}
				c.log.Info("checker: killed the leader of partition 0", "node", n)
				time.Sleep(o.Outage)
				return fault.Script(c.env.KafkaCtl).Run("start-node", n)
			})
		}},
	{Name: "rolling restart of every broker", Skip: clusterSkip,
		Shape: func(o *Options) { o.Duration = max(o.Duration, 40*time.Second) },
		Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
			return 3, window(h, "rolling broker restart", 2*o.MaxStaleness, func() error {
				for n := 1; n <= 3; n++ {
					// stop-node is a controlled shutdown; start-node waits until every
					// partition has all its replicas in sync again, before the next goes.
					if err := fault.Script(c.env.KafkaCtl).Run("stop-node", strconv.Itoa(n)); err != nil {
						return err
					}
					if err := fault.Script(c.env.KafkaCtl).Run("start-node", strconv.Itoa(n)); err != nil {
						return err
					}
					c.log.Info("checker: broker restarted", "node", n)
				}
				return nil
			})
		}},
	{Name: "Redis master SIGKILLed, its replica promoted", Skip: clusterSkip,
		Shape: func(o *Options) { o.Duration = max(o.Duration, 10*time.Second) },
		Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
			ctl := fault.Script(c.env.RedisCtl)
			masters, err := ctl.Output("masters")
			if err != nil {
				return 0, err
			}
			_, port, err := net.SplitHostPort(strings.Split(masters, ",")[0])
			if err != nil {
				return 0, fmt.Errorf("redis.sh masters printed %q: %w", masters, err)
			}
			n, err := ctl.Output("node-of", port)
			if err != nil {
				return 0, err
			}
			return 1, window(h, "redis master SIGKILL", o.MaxStaleness, func() error {
				if err := ctl.Run("kill", n); err != nil {
					return err
				}
				if err := ctl.Run("failover-wait", n); err != nil {
					return err
				}
				c.log.Info("checker: a replica took over from the killed master", "node", n)
				time.Sleep(o.Outage / 2)
				return ctl.Run("start-node", n) // it rejoins as a replica, empty
			})
		}},
	{Name: "partitions added to a live topic", Skip: clusterSkip,
		Shape: func(o *Options) { o.Duration = max(o.Duration, 20*time.Second) },
		Inject: func(ctx context.Context, c *Cluster, h *History, o Options) (int, error) {
			return 1, window(h, "partitions added", 2*o.MaxStaleness, func() error {
				return c.addPartitions(ctx, 2*partitions)
			})
		}},
}

func clusterSkip(c *Cluster) string {
	if c.kfake != nil || len(c.env.RedisCluster) == 0 || c.env.KafkaCtl == "" || c.env.RedisCtl == "" {
		return "needs a real Kafka cluster and Redis Cluster with their control scripts (" + EnvKafkaCluster + ", " + EnvRedisCluster + ")"
	}
	return ""
}

// leaderNode returns the number (scripts/kafka.sh node-of) of the broker leading partition p
// of the cluster's topic.
func (c *Cluster) leaderNode(ctx context.Context, p int) (string, error) {
	cl := &kafka.Client{Addr: kafka.TCP(c.emb.Brokers...), Timeout: 5 * time.Second}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{c.emb.Topic}})
	if err != nil {
		return "", fmt.Errorf("metadata: %w", err)
	}
	for _, t := range md.Topics {
		for _, part := range t.Partitions {
			if part.ID == p {
				return fault.Script(c.env.KafkaCtl).Output("node-of", strconv.Itoa(part.Leader.Port))
			}
		}
	}
	return "", fmt.Errorf("partition %d of %s not found", p, c.emb.Topic)
}

// addPartitions grows the topic to n partitions, then waits until writes land on the new ones
// (the writer has noticed them, so keys have moved partitions).
func (c *Cluster) addPartitions(ctx context.Context, n int) error {
	cl := &kafka.Client{Addr: kafka.TCP(c.emb.Brokers...), Timeout: 10 * time.Second}
	resp, err := cl.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: c.emb.Topic, Count: int32(n)}}})
	if err == nil && len(resp.Errors) > 0 {
		err = errors.Join(func() (errs []error) {
			for _, e := range resp.Errors {
				errs = append(errs, e)
			}
			return errs
		}()...)
	}
	if err != nil {
		return fmt.Errorf("create partitions: %w", err)
	}
	c.log.Info("checker: partitions added", "topic", c.emb.Topic, "partitions", n)
	deadline := time.Now().Add(30 * time.Second)
	for {
		offs, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
			c.emb.Topic: func() (rs []kafka.OffsetRequest) {
				for p := partitions; p < n; p++ {
					rs = append(rs, kafka.LastOffsetOf(p))
				}
				return rs
			}()}})
		if err == nil {
			for _, po := range offs.Topics[c.emb.Topic] {
				if po.Error == nil && po.LastOffset > 0 {
					c.log.Info("checker: writes land on the new partitions", "partition", po.Partition, "log_end", po.LastOffset)
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no write landed on partitions %d..%d within 30 s of adding them (last error: %v)", partitions, n-1, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
