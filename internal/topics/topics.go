// Package topics administers Kafka topics for cachewire's programs and tests: create a topic
// and wait until every partition has a leader, describe one, delete some. It is the one place
// that talks Kafka's admin protocol (kafka-go's Client), so that no binary needs the test
// helpers to create its topic.
//
//	err := topics.Create(ctx, brokers, topics.Spec{Name: "cachewire.users", Partitions: 3})
//	n, err := topics.Partitions(ctx, brokers, "cachewire.users") // ErrNotFound if missing
//
// Every call uses a transport of its own and closes it, so nothing is left running. Admin does
// the same over TLS and SASL:
//
//	a := topics.Admin{Brokers: brokers, Conn: conn} // conn: an invalidation.KafkaConn
//	err := a.Create(ctx, topics.Spec{Name: "cachewire.users", Partitions: 3})
package topics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/invalidation"
)

// ErrNotFound is returned by Partitions when the topic does not exist.
var ErrNotFound = errors.New("topics: topic does not exist")

// Spec describes a topic to create.
type Spec struct {
	// Name of the topic. Required.
	Name string
	// Partitions; if zero, 1.
	Partitions int
	// Replication factor; if zero, 1.
	Replication int
	// Configs are topic-level settings (min.insync.replicas, max.message.bytes, ...).
	Configs map[string]string
}

// Admin administers the topics of one Kafka cluster, connecting as Conn says (TLS, SASL). The
// package-level functions are an Admin with a plaintext Conn.
type Admin struct {
	// Brokers are the bootstrap addresses. Required.
	Brokers []string
	// Conn says how to connect; the zero value is plaintext without authentication.
	Conn invalidation.KafkaConn
}

// client returns a kafka-go client with a transport of its own, and the function that closes its
// connections (the default transport is shared process-wide and never closes).
func (a Admin) client() (*kafka.Client, func()) { return a.Conn.Client(a.Brokers, 10*time.Second) }

// Create is Admin{Brokers: brokers}.Create.
func Create(ctx context.Context, brokers []string, s Spec) error {
	return Admin{Brokers: brokers}.Create(ctx, s)
}

// Partitions is Admin{Brokers: brokers}.Partitions.
func Partitions(ctx context.Context, brokers []string, topic string) (int, error) {
	return Admin{Brokers: brokers}.Partitions(ctx, topic)
}

// EndOffsets is Admin{Brokers: brokers}.EndOffsets.
func EndOffsets(ctx context.Context, brokers []string, topic string) (map[int]int64, error) {
	return Admin{Brokers: brokers}.EndOffsets(ctx, topic)
}

// Delete is Admin{Brokers: brokers}.Delete.
func Delete(ctx context.Context, brokers []string, names ...string) error {
	return Admin{Brokers: brokers}.Delete(ctx, names...)
}

// Create creates the topic unless it exists, then waits until the metadata shows every partition
// with a leader, or ctx ends. A topic that already exists is not an error (its partition count is
// then whatever it has).
func (a Admin) Create(ctx context.Context, s Spec) error {
	if s.Partitions == 0 {
		s.Partitions = 1
	}
	if s.Replication == 0 {
		s.Replication = 1
	}
	c, done := a.client()
	defer done()
	tc := kafka.TopicConfig{Topic: s.Name, NumPartitions: s.Partitions, ReplicationFactor: s.Replication}
	for k, v := range s.Configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	if err == nil {
		err = resp.Errors[s.Name]
	}
	exists := errors.Is(err, kafka.TopicAlreadyExists)
	if err != nil && !exists {
		return fmt.Errorf("topics: create %q: %w", s.Name, err)
	}
	want := s.Partitions
	if exists {
		want = 0 // whatever it has
	}
	return wait(ctx, c, s.Name, want)
}

// wait polls the metadata until topic has want partitions (any number when want is 0), each with
// a leader.
func wait(ctx context.Context, c *kafka.Client, topic string, want int) error {
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) > 0 &&
			(want == 0 || len(md.Topics[0].Partitions) == want) {
			ready := true
			for _, p := range md.Topics[0].Partitions {
				if p.Error != nil || p.Leader.Host == "" {
					ready = false
				}
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics: %q: partitions not ready: %w (last metadata error: %v)", topic, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Partitions returns how many partitions topic has: ErrNotFound when it does not exist, another
// error when Kafka cannot be asked.
func (a Admin) Partitions(ctx context.Context, topic string) (int, error) {
	c, done := a.client()
	defer done()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("topics: describe %q: %w", topic, err)
	}
	if len(md.Topics) != 1 {
		return 0, fmt.Errorf("topics: describe %q: %d topics in the answer", topic, len(md.Topics))
	}
	if err := md.Topics[0].Error; err != nil {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			return 0, fmt.Errorf("%w: %q", ErrNotFound, topic)
		}
		return 0, fmt.Errorf("topics: describe %q: %w", topic, err)
	}
	return len(md.Topics[0].Partitions), nil
}

// EndOffsets returns the log end offset (the offset the next record will get) of every partition
// of topic: ErrNotFound when the topic does not exist.
func (a Admin) EndOffsets(ctx context.Context, topic string) (map[int]int64, error) {
	n, err := a.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	c, done := a.client()
	defer done()
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range n {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
	}
	resp, err := c.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("topics: end offsets of %q: %w", topic, err)
	}
	ends := make(map[int]int64, n)
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("topics: end offset of %q/%d: %w", topic, po.Partition, po.Error)
		}
		ends[po.Partition] = po.LastOffset
	}
	if len(ends) != n {
		return nil, fmt.Errorf("topics: end offsets of %q: %d of %d partitions answered", topic, len(ends), n)
	}
	return ends, nil
}

// Delete deletes topics; ones that do not exist are not an error.
func (a Admin) Delete(ctx context.Context, names ...string) error {
	if len(names) == 0 {
		return nil
	}
	c, done := a.client()
	defer done()
	resp, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: names})
	if err != nil {
		return fmt.Errorf("topics: delete %v: %w", names, err)
	}
	var errs []error
	for name, e := range resp.Errors {
		if e != nil && !errors.Is(e, kafka.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("topics: delete %q: %w", name, e))
		}
	}
	return errors.Join(errs...)
}
