package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TestJSONEventsRefreshEveryNode: JSON change events, as Spring Cloud Stream's Kafka binder sends
// them (a contentType header, written as a JSON string), refresh every node holding the key.
// Malformed JSON is counted, dead-lettered once, and the valid records behind it are applied.
func TestJSONEventsRefreshEveryNode(t *testing.T) {
	h := newHarness(t)
	h.origin.put("user:1", 1, "v1")
	dlq := h.kafka.CreateTopic(t, "dlq", 1)
	var nodes []*testNode
	for range 3 {
		n := h.start(func(c *Config) { c.DeadLetterTopic = dlq })
		if r := get(t, n, "user:1", 0); r.Version != 1 {
			t.Fatalf("setup: %v", r)
		}
		nodes = append(nodes, n)
	}
	ctx := ctxT(t)
	w := h.kafka.Writer(t, h.topic)
	spring := []kafka.Header{{Key: "contentType", Value: []byte(`"application/json"`)}}
	if err := w.WriteMessages(ctx,
		kafka.Message{Key: []byte("user:1"), Value: []byte(`{"key":"user:1","version":"2","op":"UPSERT","value":"v2","source":"spring"}`), Headers: spring},
	); err != nil {
		t.Fatal(err)
	}
	waitServes(t, nodes, "user:1", 2, "v2")
	if err := w.WriteMessages(ctx,
		kafka.Message{Key: []byte("user:1"), Value: []byte(`{"key":"user:1","version":`), Headers: spring},
		kafka.Message{Key: []byte("user:1"), Value: []byte(`{"key":"user:2","version":3,"op":"UPSERT"}`), Headers: spring},
		kafka.Message{Key: []byte("user:1"), Value: []byte(`{"key":"user:1","version":3,"op":"OP_UPSERT","value":{"name":"v3"}}`), Headers: spring},
	); err != nil {
		t.Fatal(err)
	}
	waitServes(t, nodes, "user:1", 3, `{"name":"v3"}`)
	for i, n := range nodes {
		s, err := n.client.Stats(ctx, &pb.StatsRequest{})
		if err != nil || s.EventsInvalid != 2 {
			t.Fatalf("node %d Stats = %v, %v; want the 2 malformed records counted", i, s, err)
		}
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: h.kafka.Brokers, Dialer: h.kafka.Dialer(), Topic: dlq, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	// At least once each: a group rebalance between the dead-lettering and the commit (three
	// members joining) sends a record again.
	want := map[string]bool{`{"key":"user:1","version":`: false, `{"key":"user:2","version":3,"op":"UPSERT"}`: false}
	for seen := 0; seen < len(want); {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("dead letters: %v (seen %v)", err, want)
		}
		done, ok := want[string(m.Value)]
		if !ok {
			t.Fatalf("dead letter %q is not one of the malformed records", m.Value)
		}
		if !done {
			want[string(m.Value)] = true
			seen++
		}
	}
}

// TestTopicConfiguredAsJSON: on a topic configured as JSON, records need no header; a record
// whose contentType says protobuf is still read as protobuf (the header wins).
func TestTopicConfiguredAsJSON(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 1, "v1")
	withJSON := func(c *Config) { c.TopicFormats = invalidation.Formats{h.topic: {Format: invalidation.FormatJSON}} }
	nodes := []*testNode{h.start(withJSON), h.start(withJSON)}
	for _, n := range nodes {
		get(t, n, "k", 0)
	}
	ctx := ctxT(t)
	w := h.kafka.Writer(t, h.topic)
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: []byte(`{"key":"k","version":2,"op":"UPSERT","value":"v2"}`)}); err != nil {
		t.Fatal(err)
	}
	waitServes(t, nodes, "k", 2, "v2")
	pbv, _ := invalidation.Encode(&invalidation.Event{Key: "k", Version: 3, Op: invalidation.OpUpsert, Value: []byte("v3"), HasValue: true})
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: pbv,
		Headers: []kafka.Header{{Key: "contentType", Value: []byte("application/x-protobuf")}}}); err != nil {
		t.Fatal(err)
	}
	waitServes(t, nodes, "k", 3, "v3")
}

// TestTopicFormatsMustNameTopicsRead: a format for a topic the node does not read is a mistake.
func TestTopicFormatsMustNameTopicsRead(t *testing.T) {
	_, err := New(Config{NodeID: "n", GRPCAddr: "127.0.0.1:0", HTTPAddr: "-", Brokers: []string{"127.0.0.1:1"}, Topics: []string{"a"},
		TopicFormats: invalidation.Formats{"b": {Format: invalidation.FormatJSON}}})
	if err == nil || !strings.Contains(err.Error(), `topic "b"`) {
		t.Fatalf("New = %v, want an error naming topic b", err)
	}
}

// waitServes waits until every node serves key at version with value.
func waitServes(t *testing.T, nodes []*testNode, key string, version uint64, value string) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, func() string {
		for i, n := range nodes {
			if r := get(t, n, key, 0); r.Version != version || string(r.Value) != value {
				return fmt.Sprintf("node %d serves %q@%d from %s, want %q@%d", i, r.Value, r.Version, r.Tier, value, version)
			}
		}
		return ""
	})
}

// TestDebeziumTopic: a topic of Debezium change events (schemas enabled and disabled), mapped
// to cache keys, versions and values: an update refreshes every node, a delete deletes, the
// Kafka tombstone after it is ignored (not counted invalid), and a malformed record is counted
// and skipped while the records behind it are applied.
func TestDebeziumTopic(t *testing.T) {
	h := newHarness(t)
	h.origin.put("user:42", 6, "old")
	mapping := invalidation.TopicFormat{Format: invalidation.FormatDebezium,
		Debezium: invalidation.DebeziumMapping{Key: "user:{id}", Version: "after.version", Value: "name"}}
	dlq := h.kafka.CreateTopic(t, "dlq", 1)
	dbz := func(c *Config) { c.TopicFormats = invalidation.Formats{h.topic: mapping}; c.DeadLetterTopic = dlq }
	nodes := []*testNode{h.start(dbz), h.start(dbz)}
	for _, n := range nodes {
		get(t, n, "user:42", 0)
	}
	ctx := ctxT(t)
	w := h.kafka.Writer(t, h.topic)
	key := []byte(`{"schema":{"type":"struct","fields":[{"type":"int32","field":"id"}]},"payload":{"id":42}}`)
	update := `{"schema":{"type":"struct"},"payload":{"before":null,"after":{"id":42,"name":"Ada","version":7},"source":{"connector":"postgresql","lsn":10},"op":"u","ts_ms":1795730000123}}`
	if err := w.WriteMessages(ctx, kafka.Message{Key: key, Value: []byte(update)}); err != nil {
		t.Fatal(err)
	}
	waitServes(t, nodes, "user:42", 7, "Ada")
	plainKey := []byte(`{"id":42}`)
	if err := w.WriteMessages(ctx,
		kafka.Message{Key: plainKey, Value: []byte(`{"op":"u","after":{"id":42}}`)}, // no version: invalid
		kafka.Message{Key: plainKey, Value: []byte(`{"before":{"id":42,"name":"Ada","version":7},"after":null,"source":{"connector":"postgresql"},"op":"d","ts_ms":1}`)},
		kafka.Message{Key: plainKey, Value: nil}, // the tombstone Debezium writes after a delete
	); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		for i, n := range nodes {
			if st := n.l1.State("user:42"); st.Version < 8 || !st.Tombstone {
				return fmt.Sprintf("node %d is at %+v, want the delete at 8", i, st)
			}
		}
		return ""
	})
	for i, n := range nodes {
		s, err := n.client.Stats(ctx, &pb.StatsRequest{})
		if err != nil || s.EventsInvalid != 1 {
			t.Fatalf("node %d Stats = %v, %v; want the one malformed record counted, not the tombstone", i, s, err)
		}
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: h.kafka.Brokers, Dialer: h.kafka.Dialer(), Topic: dlq, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	if m, err := r.FetchMessage(ctx); err != nil || string(m.Value) != `{"op":"u","after":{"id":42}}` {
		t.Fatalf("dead letter = %q, %v; want the malformed record", m.Value, err)
	}
}

// TestDebeziumTopicFreshnessCoversEveryPartition: Debezium places records by its own key, so a
// cache key's events may be on any partition of a Debezium topic; a node's freshness for the key
// is then that of the partition caught up longest ago.
func TestDebeziumTopicFreshnessCoversEveryPartition(t *testing.T) {
	h := newHarness(t) // 3 partitions
	n := h.start(func(c *Config) {
		c.TopicFormats = invalidation.Formats{h.topic: {Format: invalidation.FormatDebezium,
			Debezium: invalidation.DebeziumMapping{Key: "user:{id}", Version: "after.version"}}}
	})
	testenv.WaitFor(t, 30*time.Second, func() string {
		for p := range 3 {
			if st, ok := n.sub.Partition(h.topic, p); !ok || st.CaughtUpAt.IsZero() {
				return fmt.Sprintf("partition %d not caught up yet", p)
			}
		}
		return ""
	})
	// Read freshAsOf first, the partitions after: a partition only moves forward, so none may be
	// older than what freshAsOf said. Reading only the key's own partition would break this
	// whenever another partition was caught up longer ago (they are fetched independently).
	for deadline := time.Now().Add(350 * time.Millisecond); time.Now().Before(deadline); { // several fetch rounds
		fresh := n.freshAsOf("user:42")
		for p := range 3 {
			if st, _ := n.sub.Partition(h.topic, p); st.CaughtUpAt.Before(fresh) {
				t.Fatalf("freshAsOf = %v, but partition %d was caught up at %v", fresh, p, st.CaughtUpAt)
			}
		}
	}
}
