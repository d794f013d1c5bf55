package invalidation_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/internal/topics"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
)

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// node is an L1 cache fed by its own Subscriber.
type node struct {
	cache  *lru.Cache
	sub    *invalidation.Subscriber
	resets atomic.Int64
	errc   chan error
}

func startNode(t *testing.T, k *testenv.Kafka, topic string, policy invalidation.Policy, opts ...func(*invalidation.SubscriberConfig)) *node {
	t.Helper()
	c, err := lru.New(lru.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{cache: c, errc: make(chan error, 1)}
	cfg := invalidation.SubscriberConfig{
		Brokers: k.Brokers, Kafka: k.Conn, Topics: []string{topic}, MaxWait: 50 * time.Millisecond,
		MetadataInterval: 200 * time.Millisecond, Logger: quietLogger(),
		Sink: invalidation.SinkFuncs{
			Apply:     func(_ string, _ int, events []invalidation.Event) { c.ApplyBatch(events, policy) },
			ResetFunc: func(string, int, string) { n.resets.Add(1); c.Flush() },
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	n.sub, err = invalidation.NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() { n.errc <- n.sub.Run(context.Background()) }()
	t.Cleanup(func() {
		n.sub.Close()
		if err := <-n.errc; err != nil {
			t.Errorf("subscriber Run: %v", err)
		}
	})
	select {
	case <-n.sub.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("subscriber not positioned after 30s")
	}
	return n
}

func newPublisher(t *testing.T, k *testenv.Kafka, topic string) *invalidation.Publisher {
	t.Helper()
	p, err := invalidation.NewPublisher(invalidation.PublisherConfig{Brokers: k.Brokers, Kafka: k.Conn, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func waitVersion(t *testing.T, c *lru.Cache, key string, version uint64, value string) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, func() string {
		it, ok := c.Get(key)
		if ok && it.Version == version && string(it.Value) == value {
			return ""
		}
		return fmt.Sprintf("%s = %q@%d (found %v), want %q@%d", key, it.Value, it.Version, ok, value, version)
	})
}

func waitState(t *testing.T, c *lru.Cache, key string, version uint64) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, func() string {
		if st := c.State(key); st.Version != version {
			return fmt.Sprintf("%s is at version %d, want %d", key, st.Version, version)
		}
		return ""
	})
}

func upsert(key string, v uint64, val string) invalidation.Event {
	return invalidation.Event{Key: key, Version: v, Op: invalidation.OpUpsert, Value: []byte(val), HasValue: true, CommittedAt: time.Now()}
}

// TestThreeSubscribersAndALateOne: one published event refreshes (or evicts) the key on every
// node; a node that starts later begins at the log end and sees only newer events.
func TestThreeSubscribersAndALateOne(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "events", 3)
	ctx := testCtx(t)
	pub := newPublisher(t, k, topic)

	policies := []invalidation.Policy{invalidation.RefreshHeld, invalidation.RefreshHeld, invalidation.EvictOnly}
	var nodes []*node
	for _, p := range policies {
		n := startNode(t, k, topic, p)
		n.cache.Fill("user:1", 1, []byte("v1"), n.cache.BeginFill())
		nodes = append(nodes, n)
	}
	if err := pub.Publish(ctx, upsert("user:1", 2, "v2")); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, nodes[0].cache, "user:1", 2, "v2") // refreshed
	waitVersion(t, nodes[1].cache, "user:1", 2, "v2") // refreshed
	waitState(t, nodes[2].cache, "user:1", 2)         // evicted: a tombstone at 2
	if _, ok := nodes[2].cache.Get("user:1"); ok {
		t.Fatal("evict-only node still serves user:1")
	}

	late := startNode(t, k, topic, invalidation.RefreshAll)
	if err := pub.Publish(ctx, upsert("user:2", 1, "b")); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, late.cache, "user:2", 1, "b")
	if st := late.cache.State("user:1"); st.Known {
		t.Fatalf("late node applied an event from before it started: user:1 %+v", st)
	}
}

// TestDuplicateAndReorderedEventsKeepNewest publishes a key's history out of order and twice.
func TestDuplicateAndReorderedEventsKeepNewest(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "events", 2)
	ctx := testCtx(t)
	pub := newPublisher(t, k, topic)
	n := startNode(t, k, topic, invalidation.RefreshAll)
	seq := []invalidation.Event{upsert("k", 3, "v3"), upsert("k", 1, "v1"), upsert("k", 3, "dup"),
		{Key: "k", Version: 2, Op: invalidation.OpDelete}, upsert("k", 2, "v2")}
	for _, e := range seq {
		if err := pub.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish(ctx, upsert("marker", 1, "m")); err != nil {
		t.Fatal(err)
	}
	// Events for one key are in one partition and in order: once the last one is applied, all are.
	if err := pub.Publish(ctx, upsert("k", 3, "last-dup")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if n.sub.Stats().Events < uint64(len(seq)+2) {
			return fmt.Sprintf("%d events applied", n.sub.Stats().Events)
		}
		return ""
	})
	waitVersion(t, n.cache, "k", 3, "v3")
}

// TestGarbageIsSkipped: undecodable and invalid records are counted and skipped (and sent to
// the dead-letter topic), and valid events after them still apply.
func TestGarbageIsSkipped(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "events", 1)
	dlqTopic := k.CreateTopic(t, "dlq", 1)
	ctx := testCtx(t)
	n := startNode(t, k, topic, invalidation.RefreshAll, func(c *invalidation.SubscriberConfig) {
		c.DeadLetterTopic = dlqTopic
	})
	raw := k.Writer(t, topic)
	invalid, _ := invalidation.Encode(&invalidation.Event{Key: "k", Version: 0, Op: invalidation.OpDelete})
	if err := raw.WriteMessages(ctx,
		kafka.Message{Key: []byte("k"), Value: []byte("\xff\xfe garbage")},
		kafka.Message{Key: []byte("k"), Value: invalid},
		kafka.Message{Key: []byte("k"), Value: nil},
	); err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, k, topic)
	if err := pub.Publish(ctx, upsert("k", 5, "good")); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, n.cache, "k", 5, "good")
	// An empty record decodes as a ChangeEvent with nothing set: invalid too.
	if s := n.sub.Stats(); s.Invalid != 3 || s.DeadLettered != 3 {
		t.Fatalf("stats %+v, want 3 invalid, 3 dead-lettered", s)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Dialer: k.Dialer(), Topic: dlqTopic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	m, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Value) != "\xff\xfe garbage" || !hasHeader(m, "cachewire.source.offset", "0") {
		t.Fatalf("dead letter = %q %v", m.Value, m.Headers)
	}
}

func hasHeader(m kafka.Message, key, value string) bool {
	for _, h := range m.Headers {
		if h.Key == key && string(h.Value) == value {
			return true
		}
	}
	return false
}

// TestFreshnessAdvancesWhileIdle: an idle partition keeps confirming that it is caught up.
func TestFreshnessAdvancesWhileIdle(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "events", 2)
	n := startNode(t, k, topic, invalidation.RefreshHeld)
	mark := time.Now()
	testenv.WaitFor(t, 10*time.Second, func() string {
		for _, p := range n.sub.Partitions() {
			if !p.CaughtUpAt.After(mark) {
				return fmt.Sprintf("partition %d last caught up at %v, before %v", p.Partition, p.CaughtUpAt, mark)
			}
		}
		return ""
	})
	if got := len(n.sub.Partitions()); got != 2 {
		t.Fatalf("%d partitions tracked, want 2", got)
	}
}

// TestNewPartitionIsReadFromItsStart: partitions added after start are discovered, and their
// events are not missed.
func TestNewPartitionIsReadFromItsStart(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "events", 1)
	ctx := testCtx(t)
	n := startNode(t, k, topic, invalidation.RefreshAll)
	client := k.Client(t)
	resp, err := client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 4}}})
	if err != nil || resp.Errors[topic] != nil {
		t.Fatalf("create partitions: %v %v", err, resp)
	}
	// A new publisher, so that its partitioner sees all four partitions at once.
	pub := newPublisher(t, k, topic)
	var keys []string
	for i := range 20 {
		key := fmt.Sprintf("key-%d", i)
		keys = append(keys, key)
		if err := pub.Publish(ctx, upsert(key, 1, "v")); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range keys {
		waitVersion(t, n.cache, key, 1, "v")
	}
	if got := n.sub.NumPartitions(topic); got != 4 {
		t.Fatalf("NumPartitions = %d, want 4", got)
	}
	used := map[int]bool{}
	for _, p := range n.sub.Partitions() {
		used[p.Partition] = p.Offset > 0
	}
	if !used[1] && !used[2] && !used[3] {
		t.Fatalf("no event landed in a new partition, so the test proved nothing: %+v", n.sub.Partitions())
	}
}

// TestRecreatedTopicFlushes: a topic deleted and recreated under the subscriber leaves a gap it
// cannot repair, so L1 is flushed and counted, and reading goes on in the new topic.
func TestRecreatedTopicFlushes(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "events", 1)
	ctx := testCtx(t)
	pub := newPublisher(t, k, topic)
	n := startNode(t, k, topic, invalidation.RefreshAll)
	for v := uint64(1); v <= 5; v++ {
		if err := pub.Publish(ctx, upsert("k", v, fmt.Sprint(v))); err != nil {
			t.Fatal(err)
		}
	}
	waitVersion(t, n.cache, "k", 5, "5")

	client := k.Client(t)
	if _, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, func() string {
		if err := k.Admin().Create(ctx, topics.Spec{Name: topic, Partitions: 1}); err != nil {
			return err.Error()
		}
		return ""
	})
	testenv.WaitFor(t, 60*time.Second, func() string {
		if n.resets.Load() == 0 {
			return "no reset after the topic was recreated"
		}
		return ""
	})
	if _, ok := n.cache.Get("k"); ok {
		t.Fatal("L1 still holds a value after the reset")
	}
	// The recreated topic's events are read.
	testenv.WaitFor(t, 60*time.Second, func() string {
		if err := pub.Publish(ctx, upsert("k2", 1, "after")); err != nil {
			return err.Error()
		}
		return ""
	})
	waitVersion(t, n.cache, "k2", 1, "after")
}

// TestOffsetOutOfRangeFlushes: retention removed records the subscriber had not read yet (kfake's
// DeleteRecords while the subscriber's fetches are cut off), so L1 is flushed and reading goes on.
func TestOffsetOutOfRangeFlushes(t *testing.T) {
	k := testenv.NewKafka(t)
	if k.Fake == nil {
		t.Skip("needs the in-process Kafka to cut fetches and delete records")
	}
	topic := k.CreateTopic(t, "events", 1)
	ctx := testCtx(t)
	pub := newPublisher(t, k, topic)
	n := startNode(t, k, topic, invalidation.RefreshAll)
	if err := pub.Publish(ctx, upsert("k", 1, "1")); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, n.cache, "k", 1, "1")

	var cut atomic.Bool
	cut.Store(true)
	k.Fake.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		if cut.Load() {
			k.Fake.KeepControl()
			return nil, errors.New("fetches cut by the test"), true
		}
		return nil, nil, false
	})
	for v := uint64(2); v <= 4; v++ {
		if err := pub.Publish(ctx, upsert("other", v, "x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.Fake.DeleteRecords(topic, 0, 4); err != nil {
		t.Fatal(err)
	}
	cut.Store(false)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if n.sub.Stats().Resets == 0 {
			return "no reset after the offset fell out of range"
		}
		return ""
	})
	if _, ok := n.cache.Get("k"); ok {
		t.Fatal("L1 still holds k after the reset")
	}
	if err := pub.Publish(ctx, upsert("k", 9, "9")); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, n.cache, "k", 9, "9")
}
