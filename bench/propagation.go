package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/embedded"
)

// propagation: from the writer's acked Put until every one of N nodes serves the new version,
// against raw kafka-go produce-to-consume on the same kind of broker.
func (r *runner) propagation(ctx context.Context) error {
	rounds := r.n(300, 20)
	raw, err := r.rawPropagation(ctx, rounds)
	if err != nil {
		return err
	}
	rs := raw.Summarize()
	r.progress("  raw kafka-go produce→consume (from the produce call): %v", rs)
	for _, nodes := range []int{1, 3, 8} {
		c, err := r.cluster(ctx, nodes, 3)
		if err != nil {
			return err
		}
		lat, err := r.propagateRounds(ctx, c, rounds, false)
		var nearLat Latencies
		if err == nil {
			nearLat, err = r.propagateRounds(ctx, c, rounds, true)
		}
		c.Close()
		if err != nil {
			return err
		}
		s, ns := lat.Summarize(), nearLat.Summarize()
		r.progress("  %d node(s): %v", nodes, s)
		r.progress("  %d near cache(s), one per node: %v", nodes, ns)
		caseName := fmt.Sprintf("%d node(s)", nodes)
		nearCase := fmt.Sprintf("%d near cache(s)", nodes)
		r.rep.addDist("propagation", caseName, "cachewire to every node", false, lat)
		r.rep.addDist("propagation", caseName, "cachewire to every near cache", false, nearLat)
		r.rep.addDist("propagation", caseName, "kafka-go produce→consume", true, raw)
		r.rep.add(Row{Scenario: "propagation", Case: nearCase, Metric: "p50", Unit: "ns", Cachewire: float64(ns.P50),
			Anchor: "to the sidecars", AnchorVal: float64(s.P50)})
		r.rep.add(Row{Scenario: "propagation", Case: nearCase, Metric: "p99", Unit: "ns", Cachewire: float64(ns.P99),
			Anchor: "to the sidecars", AnchorVal: float64(s.P99), Goal: "≤ sidecars' p99 + 1 ms", Met: met(ns.P99 <= s.P99+time.Millisecond)})
		r.rep.add(Row{Scenario: "propagation", Case: caseName, Metric: "p50", Unit: "ns", Cachewire: float64(s.P50),
			Anchor: "kafka-go produce→consume", AnchorVal: float64(rs.P50)})
		r.rep.add(Row{Scenario: "propagation", Case: caseName, Metric: "p99", Unit: "ns", Cachewire: float64(s.P99),
			Anchor: "kafka-go produce→consume", AnchorVal: float64(rs.P99), Goal: "≤ raw p99 + 2 ms", Met: met(s.P99 <= rs.P99+2*time.Millisecond)})
		r.rep.add(Row{Scenario: "propagation", Case: caseName, Metric: "max", Unit: "ns", Cachewire: float64(s.Max),
			Anchor: "kafka-go produce→consume", AnchorVal: float64(rs.Max)})
	}
	return nil
}

// propagateRounds measures, per round, from a Put's return (with opts: by default once Kafka
// acked its event) until every node serves it, or with near, until a near cache of every node
// (client.WithNearCache) answers it in process.
func (r *runner) propagateRounds(ctx context.Context, c *embedded.Cluster, rounds int, near bool, opts ...client.WriteOption) (Latencies, error) {
	w, err := client.NewWriter(c.WriterAddr, client.WithTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	defer w.Close()
	var caches []*client.Cache
	copts := []client.Option{client.WithTimeout(10 * time.Second)}
	if near {
		copts = append(copts, client.WithNearCache(client.NearCacheConfig{Logger: r.log}))
	}
	for _, a := range c.NodeAddrs {
		cc, err := client.NewCache(a, copts...)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		caches = append(caches, cc)
	}
	if near {
		if err := waitNear(ctx, caches); err != nil {
			return nil, err
		}
	}
	const keys = 16
	value := make([]byte, 100)
	// Every node holds every key, so an event refreshes it in place (refresh-held).
	for k := range keys {
		wr, err := w.Put(ctx, "p:"+strconv.Itoa(k), value)
		if err != nil {
			return nil, err
		}
		for _, cc := range caches {
			if _, err := cc.Get(ctx, "p:"+strconv.Itoa(k), client.MinVersion(wr.Version)); err != nil {
				return nil, err
			}
		}
	}
	if near { // the fills above: now every near cache answers every key in process
		for k := range keys {
			for _, cc := range caches {
				if it, err := cc.Get(ctx, "p:"+strconv.Itoa(k)); err != nil || it.Tier != client.TierNear {
					return nil, fmt.Errorf("near cache did not answer p:%d after its fill: %+v, %v", k, it, err)
				}
			}
		}
	}
	lat := make(Latencies, 0, rounds)
	last := time.Now()
	for i := range rounds {
		key := "p:" + strconv.Itoa(i%keys)
		wr, err := w.Put(ctx, key, value, opts...)
		if err != nil {
			return nil, err
		}
		acked := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, len(caches))
		for j, cc := range caches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					it, err := cc.Get(ctx, key) // no min_version: only the event can make it new
					if err != nil {
						errs[j] = err
						return
					}
					if it.Version >= wr.Version && (!near || it.Tier == client.TierNear) {
						return
					}
					// Poll gently: eight pollers spinning on two cores would measure themselves.
					time.Sleep(50 * time.Microsecond)
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(acked))
		if time.Since(last) > time.Second {
			r.progress("    %d/%d rounds", i+1, rounds)
			last = time.Now()
		}
	}
	return lat, nil
}

// rawPropagation measures kafka-go alone: a Writer with the publisher's settings, a Reader on
// the partition, from the WriteMessages call to the Reader having the message.
func (r *runner) rawPropagation(ctx context.Context, rounds int) (Latencies, error) {
	topic := r.name("raw")
	brokers, stop, err := r.kafkaFor(1, topic)
	if err != nil {
		return nil, err
	}
	defer stop()
	tr := r.cfg.Kafka.Transport()
	defer tr.CloseIdleConnections()
	// The writer's relay settings (acks=all, 0.5 ms batch timeout), which is what produces
	// cachewire's events.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 500 * time.Microsecond, Transport: tr}
	defer w.Close()
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Dialer: r.cfg.Kafka.Dialer(), Topic: topic, Partition: 0, MinBytes: 1, MaxBytes: 1 << 20,
		MaxWait: 100 * time.Millisecond, ReadLagInterval: -1})
	defer rd.Close()
	got := make(chan time.Time, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			if _, err := rd.ReadMessage(rctx); err != nil {
				return
			}
			got <- time.Now()
		}
	}()
	value := make([]byte, 100)
	lat := make(Latencies, 0, rounds)
	for range rounds {
		// From the produce call, not its return: the consumer often has the message before the
		// producer hears the ack, which would make from-ack latencies negative.
		sent := time.Now()
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: value}); err != nil {
			return nil, err
		}
		select {
		case t := <-got:
			lat = append(lat, t.Sub(sent))
		case <-time.After(30 * time.Second):
			return nil, errors.New("raw consumer got nothing within 30s")
		}
	}
	return lat, nil
}

// waitNear waits until every near cache of caches is in sync with its node.
func waitNear(ctx context.Context, caches []*client.Cache) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, cc := range caches {
		for {
			if st, _ := cc.NearStats(); st.Synced {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return errors.New("near cache not in sync with its node within 30s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}
