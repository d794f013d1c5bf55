package writer

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	reg            *prometheus.Registry
	writes         *prometheus.CounterVec
	puts, deletes  prometheus.Counter // writes' label sets, bound once
	published      prometheus.Counter
	publishErrors  prometheus.Counter
	publishLatency prometheus.Histogram
	relayBatch     prometheus.Histogram
	batchSize      prometheus.Histogram
	waitTimeouts   prometheus.Counter
	deadLettered   prometheus.Counter
}

func newMetrics(w *Writer) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.writes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cachewire_writer_writes_total", Help: "Committed writes by op (put, delete)."}, []string{"op"})
	m.puts, m.deletes = m.writes.WithLabelValues("put"), m.writes.WithLabelValues("delete")
	m.published = prometheus.NewCounter(prometheus.CounterOpts{Name: "cachewire_writer_events_published_total", Help: "Outbox rows acked by Kafka."})
	m.publishErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "cachewire_writer_publish_errors_total", Help: "Failed outbox publish attempts."})
	m.publishLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cachewire_writer_publish_latency_seconds",
		Help: "Time from commit until Kafka acked the event.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	m.relayBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cachewire_writer_relay_batch_seconds",
		Help: "Time to publish and ack one outbox batch.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cachewire_writer_commit_batch_size",
		Help: "Writes per group commit (one transaction, one fsync).", Buckets: prometheus.ExponentialBuckets(1, 2, 10)})
	m.waitTimeouts = prometheus.NewCounter(prometheus.CounterOpts{Name: "cachewire_writer_wait_published_timeouts_total",
		Help: "Writes that returned published=false because Kafka did not ack in time."})
	m.deadLettered = prometheus.NewCounter(prometheus.CounterOpts{Name: "cachewire_writer_outbox_dead_lettered_total",
		Help: "Outbox rows that could never be published (undecodable, invalid, refused by Kafka), moved out of the outbox."})
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cachewire_writer_outbox_depth", Help: "Committed changes not yet acked by Kafka."},
		func() float64 { return float64(w.depth.Load()) })
	dead := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cachewire_writer_outbox_dead_rows",
		Help: "Dead-lettered outbox rows held in the outbox_dead bucket (without a dead-letter topic, all of them)."},
		func() float64 { return float64(w.deadRows.Load()) })
	for _, c := range []prometheus.Collector{m.writes, m.published, m.publishErrors, m.publishLatency, m.relayBatch, m.batchSize,
		m.waitTimeouts, m.deadLettered, depth, dead,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		m.reg.MustRegister(c)
	}
	return m
}
