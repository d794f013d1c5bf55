package invalidation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
)

// BenchmarkSubscriberApply measures how many events per second one L1 subscriber reads, decodes
// and applies to an LRU, from a backlog of b.N events (100-byte values over 10,000 keys, 3
// partitions) published before the timer starts.
//
//	go test -run XXX -bench SubscriberApply -benchtime 200000x ./invalidation/
func BenchmarkSubscriberApply(b *testing.B) {
	k := testenv.NewKafka(b)
	topic := k.CreateTopic(b, "bench", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := k.Writer(b, topic)
	w.BatchSize = 5000
	value := make([]byte, 100)
	msgs := make([]kafka.Message, 0, 5000)
	for i := 0; i < b.N; i++ {
		e := invalidation.Event{Key: fmt.Sprintf("key-%d", i%10000), Version: uint64(i + 1), Op: invalidation.OpUpsert, Value: value, HasValue: true}
		raw, _ := invalidation.Encode(&e)
		msgs = append(msgs, kafka.Message{Key: []byte(e.Key), Value: raw})
		if len(msgs) == cap(msgs) || i == b.N-1 {
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	cache, _ := lru.New(lru.Config{})
	sub, err := invalidation.NewSubscriber(invalidation.SubscriberConfig{
		Brokers: k.Brokers, Kafka: k.Conn, Topics: []string{topic}, FromBeginning: true, Logger: quietLogger(),
		Sink: invalidation.SinkFuncs{
			Apply:     func(_ string, _ int, events []invalidation.Event) { cache.ApplyBatch(events, invalidation.RefreshAll) },
			ResetFunc: func(string, int, string) { cache.Flush() },
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	for sub.Stats().Events < uint64(b.N) {
		select {
		case err := <-done:
			b.Fatalf("subscriber stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	sub.Close()
	<-done
}
