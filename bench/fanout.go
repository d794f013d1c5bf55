package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/lru"
)

// fanout: what each node costs as nodes are added. N L1-only nodes (a Subscriber and its L1, as
// in cachenode, all in this process) read one topic while a producer writes 1,000 events/s
// (100-byte values) for a few seconds. Per node: the bytes the broker sent it (counted on its
// connections), the CPU it used (this process's CPU beyond a run with no node, divided by N),
// and the propagation from the produce call to its L1 having the event, against a raw kafka-go
// produce→consume of one consumer.
func (r *runner) fanout(ctx context.Context) error {
	const rate = 1000
	d := time.Duration(r.n(8, 1)) * time.Second
	raw, err := r.rawPropagation(ctx, r.n(300, 20))
	if err != nil {
		return err
	}
	rs := raw.Summarize()
	r.progress("  raw kafka-go produce→consume: %v", rs)
	var baseCPU time.Duration
	for _, nodes := range []int{0, 1, 8, 32} {
		res, err := r.fanoutCase(ctx, nodes, rate, d)
		if err != nil {
			return fmt.Errorf("fanout %d nodes: %w", nodes, err)
		}
		if nodes == 0 {
			baseCPU = res.cpu
			r.progress("  producer alone: %v CPU in %v", res.cpu, d)
			continue
		}
		s := res.lat.Summarize()
		perNodeCPU := float64(max(res.cpu-baseCPU, 0)) / float64(nodes) / d.Seconds() / float64(time.Millisecond) // ms of CPU per second
		perNodeBytes := float64(res.bytes) / float64(nodes) / d.Seconds()
		r.progress("  %d node(s): %.0f B/s and %.1f ms CPU/s per node, propagation %v", nodes, perNodeBytes, perNodeCPU, s)
		c := fmt.Sprintf("%d node(s), 1,000 events/s", nodes)
		r.rep.addDist("fan-out", c, "cachewire to every node", false, res.lat)
		r.rep.addDist("fan-out", c, "kafka-go produce→consume", true, raw)
		r.rep.add(Row{Scenario: "fan-out", Case: c, Metric: "broker egress per node", Unit: "B/s", Cachewire: perNodeBytes,
			Anchor: "event payload (key + value + header)", AnchorVal: float64(res.payload) / d.Seconds()})
		r.rep.add(Row{Scenario: "fan-out", Case: c, Metric: "broker egress, all nodes", Unit: "B/s", Cachewire: float64(res.bytes) / d.Seconds()})
		r.rep.add(Row{Scenario: "fan-out", Case: c, Metric: "CPU per node", Unit: "ms/s", Cachewire: perNodeCPU})
		r.rep.add(Row{Scenario: "fan-out", Case: c, Metric: "propagation p50", Unit: "ns", Cachewire: float64(s.P50),
			Anchor: "kafka-go produce→consume", AnchorVal: float64(rs.P50)})
		r.rep.add(Row{Scenario: "fan-out", Case: c, Metric: "propagation p99", Unit: "ns", Cachewire: float64(s.P99),
			Anchor: "kafka-go produce→consume", AnchorVal: float64(rs.P99), Goal: "≤ raw p99 + 2 ms", Met: met(s.P99 <= rs.P99+2*time.Millisecond)})
	}
	return nil
}

type fanoutResult struct {
	lat     Latencies
	bytes   int64         // read by the nodes from the broker during the run
	payload int64         // bytes of the records produced (key + value)
	cpu     time.Duration // this process's CPU during the run
}

// countingConn counts the bytes read from a broker connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (r *runner) fanoutCase(ctx context.Context, nodes, rate int, d time.Duration) (fanoutResult, error) {
	var res fanoutResult
	topic := r.name("fanout")
	brokers, stop, err := r.kafkaFor(3, topic)
	if err != nil {
		return res, err
	}
	defer stop()
	var read atomic.Int64
	counting := r.cfg.Kafka
	base := counting.Dial
	counting.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var err error
		if base != nil {
			c, err = base(ctx, network, addr)
		} else {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, n: &read}, nil
	}
	var mu sync.Mutex
	lat := make(Latencies, 0, nodes*rate*int(d/time.Second+1))
	var applied atomic.Int64
	subs := make([]*invalidation.Subscriber, nodes)
	done := make(chan error, nodes)
	sctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		for range nodes {
			<-done
		}
	}()
	for i := range nodes {
		cache, err := lru.New(lru.Config{MaxEntries: 20_000})
		if err != nil {
			return res, err
		}
		subs[i], err = invalidation.NewSubscriber(invalidation.SubscriberConfig{Brokers: brokers, Kafka: counting, Topics: []string{topic},
			Logger: r.log, MaxWait: 100 * time.Millisecond,
			Sink: invalidation.SinkFuncs{
				Apply: func(_ string, _ int, evs []invalidation.Event) {
					cache.ApplyBatch(evs, invalidation.RefreshHeld)
					now := time.Now()
					mu.Lock()
					for _, e := range evs {
						lat = append(lat, now.Sub(e.CommittedAt))
					}
					mu.Unlock()
					applied.Add(int64(len(evs)))
				},
				ResetFunc: func(string, int, string) { cache.Flush() },
			}})
		if err != nil {
			return res, err
		}
		go func(s *invalidation.Subscriber) { done <- s.Run(sctx) }(subs[i])
	}
	for _, s := range subs {
		select {
		case <-s.Ready():
		case <-time.After(60 * time.Second):
			return res, errors.New("a node was not positioned within 60s")
		}
	}
	tr := r.cfg.Kafka.Transport()
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 500 * time.Microsecond, Transport: tr, Async: true,
		Completion: func(_ []kafka.Message, err error) {
			if err != nil {
				r.progress("    fan-out produce: %v", err)
			}
		}}
	value := make([]byte, 100)
	read.Store(0)
	cpu0 := processCPU()
	start := time.Now()
	total := int(d.Seconds() * float64(rate))
	for i := range total {
		if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); wait > 0 {
			time.Sleep(wait)
		}
		e := invalidation.Event{Key: "key-" + strconv.Itoa(i%10_000), Version: uint64(i + 1), Op: invalidation.OpUpsert,
			Value: value, HasValue: true, CommittedAt: time.Now()}
		raw, _ := invalidation.Encode(&e)
		res.payload += int64(len(raw) + len(e.Key))
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(e.Key), Value: raw}); err != nil {
			w.Close()
			return res, err
		}
	}
	if err := w.Close(); err != nil {
		return res, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for applied.Load() < int64(total*nodes) {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("%d of %d events applied within 60s", applied.Load(), total*nodes)
		}
		time.Sleep(time.Millisecond)
	}
	if nodes == 0 {
		time.Sleep(time.Until(start.Add(d))) // the same window as the runs with nodes
	}
	res.cpu, res.bytes = processCPU()-cpu0, read.Load()
	mu.Lock()
	res.lat = append(Latencies(nil), lat...)
	mu.Unlock()
	return res, nil
}
