package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
	"github.com/cachewire/cachewire/redistier"
)

// apply: events per second one node's L1 subscriber applies, and the L2 group applies to Redis,
// against a raw kafka-go consume of the same backlog; for 1, 3 and 12 partitions.
func (r *runner) apply(ctx context.Context) error {
	events := r.n(200_000, 2_000)
	for _, partitions := range []int{1, 3, 12} {
		topic := r.name("apply")
		brokers, stop, err := r.kafkaFor(partitions, topic)
		if err != nil {
			return err
		}
		err = r.applyCase(ctx, brokers, topic, partitions, events)
		stop()
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) applyCase(ctx context.Context, brokers []string, topic string, partitions, events int) error {
	tr := r.cfg.Kafka.Transport()
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 5000, Transport: tr}
	value := make([]byte, 100)
	msgs := make([]kafka.Message, 0, 5000)
	for i := range events {
		e := invalidation.Event{Key: "key-" + strconv.Itoa(i%10_000), Version: uint64(i + 1), Op: invalidation.OpUpsert,
			Value: value, HasValue: true, CommittedAt: time.Now()}
		raw, _ := invalidation.Encode(&e)
		msgs = append(msgs, kafka.Message{Key: []byte(e.Key), Value: raw})
		if len(msgs) == cap(msgs) || i == events-1 {
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				w.Close()
				return err
			}
			msgs = msgs[:0]
		}
	}
	w.Close()
	caseName := fmt.Sprintf("%d partition(s), %d events", partitions, events)

	rawRate, err := rawConsume(ctx, r.cfg.Kafka, brokers, topic, partitions, events)
	if err != nil {
		return err
	}
	// One node's L1 subscriber.
	cache, _ := lru.New(lru.Config{MaxEntries: 20_000})
	sub, err := invalidation.NewSubscriber(invalidation.SubscriberConfig{Brokers: brokers, Kafka: r.cfg.Kafka, Topics: []string{topic},
		FromBeginning: true, Logger: r.log,
		Sink: invalidation.SinkFuncs{
			Apply:     func(_ string, _ int, evs []invalidation.Event) { cache.ApplyBatch(evs, invalidation.RefreshAll) },
			ResetFunc: func(string, int, string) { cache.Flush() },
		}})
	if err != nil {
		return err
	}
	l1Rate, err := timeUntil(ctx, func(ctx context.Context) error { return sub.Run(ctx) }, sub.Close,
		func() bool { return sub.Stats().Events >= uint64(events) }, events)
	if err != nil {
		return fmt.Errorf("L1 subscriber: %w", err)
	}
	// The L2 group applier, into Redis.
	addr, stopRedis, err := r.redisFor()
	if err != nil {
		return err
	}
	defer stopRedis()
	// A batch of up to 1000 events is one pipeline, read under one deadline. The node's default
	// (250 ms) is meant for a real Redis; miniredis under the race detector on a busy machine
	// can take longer for a whole batch, and the group applier would then retry the same batch
	// forever. This measures throughput, not the timeout: give the batch time.
	tier, err := redistier.New(redistier.Config{Addrs: []string{addr}, TLS: r.cfg.RedisTLS, Username: r.cfg.RedisUsername, Password: r.cfg.RedisPassword, KeyPrefix: r.name("apply") + ":",
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, Logger: r.log})
	if err != nil {
		return err
	}
	defer tier.Close()
	g, err := invalidation.NewGroupApplier(invalidation.GroupApplierConfig{Brokers: brokers, Kafka: r.cfg.Kafka, Topics: []string{topic},
		GroupID: r.name("group"), Logger: r.log, MaxBatch: 1000,
		Applier: invalidation.BatchApplierFunc(func(ctx context.Context, evs []invalidation.Event) error {
			_, _, err := tier.ApplyBatch(ctx, evs, invalidation.RefreshAll)
			return err
		})})
	if err != nil {
		return err
	}
	l2Rate, err := timeUntil(ctx, func(ctx context.Context) error { return g.Run(ctx) }, g.Close,
		func() bool { return g.Stats().Events >= uint64(events) }, events)
	if err != nil {
		return fmt.Errorf("L2 group applier: %w", err)
	}
	// The same events straight into Redis, without Kafka: the tier's batched script against
	// go-redis pipelining a plain SET of each (the floor of any write per event).
	evs := make([]invalidation.Event, events)
	for i := range evs {
		evs[i] = invalidation.Event{Key: "key-" + strconv.Itoa(i%10_000), Version: uint64(i + 1), Op: invalidation.OpUpsert,
			Value: value, HasValue: true}
	}
	setRate, err := pipelinedSet(ctx, addr, r, evs, r.name("set")+":")
	if err != nil {
		return fmt.Errorf("pipelined SET: %w", err)
	}
	direct, err := redistier.New(redistier.Config{Addrs: []string{addr}, TLS: r.cfg.RedisTLS, Username: r.cfg.RedisUsername, Password: r.cfg.RedisPassword,
		KeyPrefix: r.name("direct") + ":", ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, Logger: r.log})
	if err != nil {
		return err
	}
	defer direct.Close()
	start := time.Now()
	for i := 0; i < len(evs); i += 1000 {
		if _, _, err := direct.ApplyBatch(ctx, evs[i:min(i+1000, len(evs))], invalidation.RefreshAll); err != nil {
			return fmt.Errorf("tier ApplyBatch: %w", err)
		}
	}
	tierRate := float64(len(evs)) / time.Since(start).Seconds()
	r.progress("  %s: L1 %.0f events/s, L2 %.0f events/s, raw consume %.0f events/s; tier ApplyBatch %.0f events/s, pipelined SET %.0f events/s",
		caseName, l1Rate, l2Rate, rawRate, tierRate, setRate)
	r.rep.add(Row{Scenario: "apply rate", Case: caseName, Metric: "L2 tier.ApplyBatch (batches of 1000, no Kafka)", Unit: "events/s", Cachewire: tierRate,
		Anchor: "go-redis pipelined SET", AnchorVal: setRate, Goal: "≥ 30% of pipelined SET", Met: met(tierRate >= 0.3*setRate)})
	r.rep.add(Row{Scenario: "apply rate", Case: caseName, Metric: "L2 group → Redis (with offset commits)", Unit: "events/s", Cachewire: l2Rate,
		Anchor: "go-redis pipelined SET", AnchorVal: setRate, Goal: "≥ 30% of pipelined SET", Met: met(l2Rate >= 0.3*setRate)})
	r.rep.add(Row{Scenario: "apply rate", Case: caseName, Metric: "L1 subscriber", Unit: "events/s", Cachewire: l1Rate,
		Anchor: "kafka-go raw consume", AnchorVal: rawRate, Goal: "≥ 50% of raw", Met: met(l1Rate >= rawRate/2)})
	r.rep.add(Row{Scenario: "apply rate", Case: caseName, Metric: "L2 group → Redis", Unit: "events/s", Cachewire: l2Rate,
		Anchor: "kafka-go raw consume", AnchorVal: rawRate})
	return nil
}

// pipelinedSet writes each event's value with a plain SET (PX, the tier's TTL), pipelined 1000 at
// a time, and returns events per second.
func pipelinedSet(ctx context.Context, addr string, r *runner, evs []invalidation.Event, prefix string) (float64, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: r.cfg.RedisTLS, Username: r.cfg.RedisUsername, Password: r.cfg.RedisPassword,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
	defer c.Close()
	start := time.Now()
	for i := 0; i < len(evs); i += 1000 {
		if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, e := range evs[i:min(i+1000, len(evs))] {
				p.Set(ctx, prefix+e.Key, e.Value, time.Hour)
			}
			return nil
		}); err != nil {
			return 0, err
		}
	}
	return float64(len(evs)) / time.Since(start).Seconds(), nil
}

func (r *runner) redisFor() (string, func(), error) {
	if r.cfg.RedisAddr != "" {
		return r.cfg.RedisAddr, func() {}, nil
	}
	c, err := embedded.StartRedis()
	if err != nil {
		return "", nil, err
	}
	return c.Addr(), c.Close, nil
}

// timeUntil runs run in the background and returns events per second until done reports true.
func timeUntil(ctx context.Context, run func(context.Context) error, closeFn func() error, done func() bool, events int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()
	defer func() { closeFn(); <-errc }()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case err := <-errc:
			errc <- err
			return 0, fmt.Errorf("stopped early: %v", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
	return float64(events) / time.Since(start).Seconds(), nil
}

// rawConsume reads every partition from its start with kafka-go Conns, without decoding, and
// returns messages per second.
func rawConsume(ctx context.Context, kc invalidation.KafkaConn, brokers []string, topic string, partitions, events int) (float64, error) {
	start := time.Now()
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, partitions)
	for p := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := kc.Dialer().DialLeader(ctx, "tcp", brokers[0], topic, p)
			if err != nil {
				errs[p] = err
				return
			}
			defer conn.Close()
			end, err := conn.ReadLastOffset()
			if err != nil {
				errs[p] = err
				return
			}
			offset := int64(0)
			for offset < end {
				conn.Seek(offset, kafka.SeekAbsolute|kafka.SeekDontCheck)
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				b := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 100 * time.Millisecond})
				for {
					if _, err := b.ReadMessage(); err != nil {
						break
					}
					total.Add(1)
				}
				offset = max(offset, b.Offset())
				if err := b.Close(); err != nil && !errors.Is(err, kafka.RequestTimedOut) {
					errs[p] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if total.Load() < int64(events) {
		return 0, fmt.Errorf("raw consume read %d of %d events", total.Load(), events)
	}
	return float64(events) / time.Since(start).Seconds(), nil
}
