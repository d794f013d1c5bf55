package integration

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cachewire/cachewire/internal/testenv"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TestSmokeKafkaRoundTrip publishes one ChangeEvent the way cachewire publishers do (Murmur2,
// acks=all, a millisecond batch timeout) and reads it back intact from the partition it landed on.
func TestSmokeKafkaRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k := testenv.NewKafka(t)
	t.Logf("kafka: %s", k.Describe())
	topic := k.CreateTopic(t, "smoke", 3)

	w := &kafka.Writer{
		Addr:         kafka.TCP(k.Brokers...),
		Transport:    k.Conn.Transport(),
		Topic:        topic,
		Balancer:     kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
	}
	defer func() { _ = w.Close() }()

	sent := &pb.ChangeEvent{
		Key:         "user:42",
		Version:     7,
		Op:          pb.Op_OP_UPSERT,
		Value:       []byte(`{"name":"Ada"}`),
		CommittedAt: timestamppb.New(time.Unix(1700000000, 123000000)),
		Source:      "smoke",
		Trace:       map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	}
	raw, err := proto.Marshal(sent)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(sent.Key), Value: raw}); err != nil {
		t.Fatalf("publish: %v", err)
	}

	// The Java client's default partitioner must agree with ours, so look the partition up the
	// same way a consumer that only knows the key would.
	partition := (kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(sent.Key)}, 0, 1, 2)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: k.Brokers, Dialer: k.Dialer(), Topic: topic, Partition: partition, MaxWait: 50 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	if err := r.SetOffset(kafka.FirstOffset); err != nil {
		t.Fatal(err)
	}
	m, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatalf("consume from partition %d: %v", partition, err)
	}
	var got pb.ChangeEvent
	if err := proto.Unmarshal(m.Value, &got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if string(m.Key) != sent.Key || !proto.Equal(&got, sent) {
		t.Fatalf("round trip changed the event:\nsent %v\ngot  %v (key %q)", sent, &got, m.Key)
	}
	t.Logf("event round-tripped through partition %d offset %d", m.Partition, m.Offset)
}

// TestSmokeRedis writes and reads a key.
func TestSmokeRedis(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := testenv.NewRedis(t)
	t.Logf("redis: %s", r.Describe(ctx))
	c := r.Client(t)
	if err := c.Set(ctx, r.Key("smoke"), "hello", time.Minute).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	got, err := c.Get(ctx, r.Key("smoke")).Result()
	if err != nil || got != "hello" {
		t.Fatalf("get = %q, %v; want hello", got, err)
	}
}
