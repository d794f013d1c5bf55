package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/client"
)

// writer: Puts per second at 1 and 16 clients with wait_published on and off, against raw
// kafka-go produce (acks=all, one message per call) at the same concurrency.
func (r *runner) writer(ctx context.Context) error {
	c, err := r.cluster(ctx, 1, 3)
	if err != nil {
		return err
	}
	defer c.Close()
	w, err := client.NewWriter(c.WriterAddr, client.WithTimeout(10*time.Second))
	if err != nil {
		return err
	}
	defer w.Close()
	topic := r.name("rawproduce")
	brokers, stop, err := r.kafkaFor(3, topic)
	if err != nil {
		return err
	}
	defer stop()
	tr := r.cfg.Kafka.Transport()
	defer tr.CloseIdleConnections()
	kw := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 2 * time.Millisecond, Transport: tr}
	defer kw.Close()
	value := make([]byte, 100)
	d := r.cfg.Duration
	for _, conc := range []int{1, 16} {
		an, _, err := drive(ctx, conc, d, func(rng *rand.Rand) error {
			return kw.WriteMessages(ctx, kafka.Message{Key: []byte("k" + strconv.Itoa(rng.IntN(1000))), Value: value})
		})
		if err != nil {
			return err
		}
		for _, wait := range []bool{false, true} {
			var opts []client.WriteOption
			if !wait {
				opts = append(opts, client.NoWait())
			}
			n, lat, err := drive(ctx, conc, d, func(rng *rand.Rand) error {
				_, err := w.Put(ctx, "w:"+strconv.Itoa(rng.IntN(1000)), value, opts...)
				return err
			})
			if err != nil {
				return err
			}
			caseName := fmt.Sprintf("%d client(s), wait_published %v", conc, wait)
			r.progress("  %s: %.0f puts/s %v | raw produce %.0f/s", caseName, float64(n)/d.Seconds(), lat.Summarize(), float64(an)/d.Seconds())
			r.rep.add(Row{Scenario: "writer", Case: caseName, Metric: "throughput", Unit: "puts/s", Cachewire: float64(n) / d.Seconds(),
				Anchor: "kafka-go produce, acks=all", AnchorVal: float64(an) / d.Seconds()})
		}
	}
	return nil
}
