package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/topics"
	"github.com/twmb/franz-go/pkg/kfake"
)

// EnvKafka names real Kafka bootstrap addresses (comma separated) for the tests to use.
const EnvKafka = "CACHEWIRE_TEST_KAFKA"

// EnvKafkaVersion, when set alongside EnvKafka, is the broker's version as its start script read
// it from the broker log. It is only reported, never relied on.
const EnvKafkaVersion = "CACHEWIRE_TEST_KAFKA_VERSION"

// Kafka is one test's Kafka: a real broker shared by the suite, or an in-process kfake cluster of
// its own.
type Kafka struct {
	// Brokers are the bootstrap addresses.
	Brokers []string
	// Fake is the in-process cluster, for fault injection with ControlKey; nil in real mode.
	Fake *kfake.Cluster
	// Real is true when the broker came from CACHEWIRE_TEST_KAFKA.
	Real bool

	topics []string
}

// NewKafka returns the Kafka for t. An in-process cluster is closed, and topics created on a real
// broker are deleted, when t ends.
func NewKafka(t testing.TB, opts ...kfake.Opt) *Kafka {
	t.Helper()
	if addrs := os.Getenv(EnvKafka); addrs != "" {
		k := &Kafka{Brokers: splitAddrs(addrs), Real: true}
		t.Cleanup(func() { k.deleteTopics(t) })
		return k
	}
	opts = append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("testenv: start in-process kafka: %v", err)
	}
	t.Cleanup(c.Close)
	return &Kafka{Brokers: c.ListenAddrs(), Fake: c}
}

// Describe names the broker for logs: its address and, in real mode, its version.
func (k *Kafka) Describe() string {
	if !k.Real {
		return "in-process kfake at " + strings.Join(k.Brokers, ",")
	}
	v := os.Getenv(EnvKafkaVersion)
	if v == "" {
		v = "unknown version"
	}
	return fmt.Sprintf("Apache Kafka %s at %s", v, strings.Join(k.Brokers, ","))
}

// TopicName returns a topic name unique to this test run, built from the test's name and base.
func TopicName(t testing.TB, base string) string {
	name := "cw-" + sanitize(t.Name()) + "-" + base + "-" + randomSuffix()
	if len(name) > 200 {
		name = name[len(name)-200:]
	}
	return name
}

// CreateTopic creates a topic unique to t with the given partition count and returns its name.
// It waits until every partition has a leader that answers.
func (k *Kafka) CreateTopic(t testing.TB, base string, partitions int) string {
	t.Helper()
	name := TopicName(t, base)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := CreateTopic(ctx, k.Brokers, name, partitions); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	k.topics = append(k.topics, name)
	return name
}

// CreateTopic creates topic with the given partitions (replication factor 1) and waits until the
// metadata shows all of them with leaders.
func CreateTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	return topics.Create(ctx, brokers, topics.Spec{Name: topic, Partitions: partitions})
}

func (k *Kafka) deleteTopics(t testing.TB) {
	if len(k.topics) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := topics.Delete(ctx, k.Brokers, k.topics...); err != nil {
		t.Logf("testenv: delete topics %v: %v", k.topics, err)
	}
}

// newClient returns a kafka-go client with a transport of its own, so that closing its idle
// connections leaves no goroutine behind (the default transport is shared process-wide).
func newClient(brokers []string) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
}

// Client returns a kafka-go client for the test's brokers whose connections are closed when t ends.
func (k *Kafka) Client(t testing.TB) *kafka.Client {
	c := newClient(k.Brokers)
	t.Cleanup(c.Transport.(*kafka.Transport).CloseIdleConnections)
	return c
}

// Writer returns a plain kafka-go writer to topic (no validation: tests use it to publish
// garbage), closed when t ends.
func (k *Kafka) Writer(t testing.TB, topic string) *kafka.Writer {
	tr := &kafka.Transport{}
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: topic, Transport: tr, BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll, Balancer: kafka.Murmur2Balancer{}}
	t.Cleanup(func() { _ = w.Close(); tr.CloseIdleConnections() })
	return w
}

// WaitReachable polls addr until a TCP connection succeeds or ctx ends.
func WaitReachable(ctx context.Context, addr string) error {
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not reachable: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

func sanitize(s string) string {
	s = unsafeChars.ReplaceAllString(s, "_")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func randomSuffix() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return hex.EncodeToString(b[:])
}
