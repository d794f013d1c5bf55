package invalidation

import (
	"context"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// newDeadLetterWriter returns a writer with a transport of its own; closeDeadLetterWriter
// releases both.
func newDeadLetterWriter(conn KafkaConn, brokers []string, topic string) *kafka.Writer {
	return &kafka.Writer{
		Transport:    conn.Transport(),
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
		WriteTimeout: 5 * time.Second,
	}
}

// deadLetter writes the raw bytes of an invalid event, with headers saying where it came from
// and why it was rejected.
func deadLetter(ctx context.Context, w *kafka.Writer, m kafka.Message, cause error) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return w.WriteMessages(ctx, kafka.Message{
		Key:   m.Key,
		Value: m.Value,
		Headers: []kafka.Header{
			{Key: "cachewire.source.topic", Value: []byte(m.Topic)},
			{Key: "cachewire.source.partition", Value: []byte(strconv.Itoa(m.Partition))},
			{Key: "cachewire.source.offset", Value: []byte(strconv.FormatInt(m.Offset, 10))},
			{Key: "cachewire.error", Value: []byte(cause.Error())},
		},
	})
}

func closeDeadLetterWriter(w *kafka.Writer) error {
	err := w.Close()
	w.Transport.(*kafka.Transport).CloseIdleConnections()
	return err
}
