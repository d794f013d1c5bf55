package node

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// counted is a Prometheus counter whose value the node can also read, for the Stats RPC.
type counted struct {
	c prometheus.Counter
	n atomic.Uint64
}

func (c *counted) Inc() {
	c.n.Add(1)
	c.c.Inc()
}

func (c *counted) Load() uint64 { return c.n.Load() }

// metrics are the node's Prometheus metrics, on a registry of its own so that several nodes can
// live in one process (tests, the demo).
type metrics struct {
	reg *prometheus.Registry

	tierReads    *prometheus.CounterVec // tier, result (hit|miss)
	loads        *prometheus.CounterVec // result (found|not_found|error)
	staleFills   *prometheus.CounterVec // tier
	events       *prometheus.CounterVec // result (applied|ignored|invalid)
	resets       prometheus.Counter
	applyLatency prometheus.Histogram
	staleReads   prometheus.Counter
	rejected     prometheus.Counter
	retries      prometheus.Counter
	l2Epochs     prometheus.Counter
	watchers     prometheus.Gauge
	watchCutoffs prometheus.Counter

	// Label sets of the hot path, bound once. The tier reads are also what the Stats RPC
	// reports, so that a hit means one thing everywhere: a read answered from the tier, at
	// least as new as the request's min_version, without a load.
	l1Hit, l1Miss, l2Hit, l2Miss       *counted
	l2Behind                           prometheus.Counter
	loadFound, loadNotFound, loadError prometheus.Counter
	staleFillL1, staleFillL2           prometheus.Counter
	versionless                        prometheus.Counter
	evApplied, evIgnored, evInvalid    prometheus.Counter
}

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.tierReads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cachewire_tier_reads_total", Help: "Reads per tier (l1, l2), by result (hit, miss; behind: L2 skipped because Redis lags L1).",
	}, []string{"tier", "result"})
	m.loads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cachewire_origin_loads_total", Help: "Origin loads by result (found, not_found, error).",
	}, []string{"result"})
	m.staleFills = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cachewire_stale_fills_rejected_total", Help: "Fills refused by the version rule, per tier.",
	}, []string{"tier"})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cachewire_events_total", Help: "Change events read by the L1 subscriber, by result (applied, ignored, invalid).",
	}, []string{"result"})
	m.resets = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cachewire_l1_resets_total", Help: "L1 flushes after a gap in the event stream (offset out of range, topic recreated).",
	})
	m.applyLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cachewire_event_apply_latency_seconds", Help: "Time from an event's committed_at until this node applied it to L1.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	m.staleReads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cachewire_stale_reads_total", Help: "Reads answered with stale=true (freshness beyond max_staleness and no origin).",
	})
	m.rejected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cachewire_requests_rejected_total", Help: "Requests refused with ResourceExhausted because max_in_flight was reached.",
	})
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cachewire_read_retries_total", Help: "Reads that loaded again because the node learned a newer version of the key (or flushed) while their load ran.",
	})
	m.l2Epochs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cachewire_l2_epochs_total", Help: "New L2 epochs seen: Redis lost what it held (restart, flush) or is another server process (failover).",
	})
	m.versionless = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cachewire_origin_versionless_answers_total", Help: "Origin answers without a version, filled under a lease (also counted in cachewire_origin_loads_total).",
	})
	m.watchers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cachewire_watch_streams", Help: "Watch streams open (near caches in the applications).",
	})
	m.watchCutoffs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cachewire_watch_cutoffs_total", Help: "Watch streams cut off because they fell behind by more than --watch-buffer messages.",
	})
	for _, c := range []prometheus.Collector{m.tierReads, m.loads, m.staleFills, m.events, m.resets, m.applyLatency,
		m.staleReads, m.rejected, m.retries, m.l2Epochs, m.versionless, m.watchers, m.watchCutoffs} {
		f(c)
	}
	read := func(tier, result string) *counted { return &counted{c: m.tierReads.WithLabelValues(tier, result)} }
	m.l1Hit, m.l1Miss, m.l2Hit, m.l2Miss = read("l1", "hit"), read("l1", "miss"), read("l2", "hit"), read("l2", "miss")
	m.l2Behind = m.tierReads.WithLabelValues("l2", "behind")
	m.loadFound, m.loadNotFound, m.loadError = m.loads.WithLabelValues("found"), m.loads.WithLabelValues("not_found"), m.loads.WithLabelValues("error")
	m.staleFillL1, m.staleFillL2 = m.staleFills.WithLabelValues("l1"), m.staleFills.WithLabelValues("l2")
	m.evApplied, m.evIgnored, m.evInvalid = m.events.WithLabelValues("applied"), m.events.WithLabelValues("ignored"), m.events.WithLabelValues("invalid")
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "cachewire_shared_loads_total", Help: "Reads that joined a load of their key that another read had started.",
	}, func() float64 { return float64(n.flight.joined.Load()) }))
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f(&stateCollector{n: n})
	return m
}

// stateCollector reports gauges read from the node's components at scrape time.
type stateCollector struct{ n *Node }

var (
	descLag = prometheus.NewDesc("cachewire_partition_lag_events",
		"Events between the L1 subscriber's position and the partition's log end.", []string{"topic", "partition"}, nil)
	descFresh = prometheus.NewDesc("cachewire_partition_freshness_seconds",
		"Seconds since the partition was last caught up with its log end (-1: never).", []string{"topic", "partition"}, nil)
	descEntries  = prometheus.NewDesc("cachewire_l1_entries", "Values held in L1.", nil, nil)
	descTombs    = prometheus.NewDesc("cachewire_l1_tombstones", "Tombstones held in L1.", nil, nil)
	descBytes    = prometheus.NewDesc("cachewire_l1_bytes", "Bytes held by L1 values (key + value + overhead).", nil, nil)
	descEvicts   = prometheus.NewDesc("cachewire_l1_evictions_total", "L1 evictions by reason.", []string{"reason"}, nil)
	descL2Errors = prometheus.NewDesc("cachewire_l2_errors_total", "Failed Redis calls, and calls skipped while backing off.", []string{"kind"}, nil)
	descL2Group  = prometheus.NewDesc("cachewire_l2_events_applied_total", "Events this node's L2 group member applied to Redis.", nil, nil)
	descReady    = prometheus.NewDesc("cachewire_ready", "1 when the node is positioned at the log end and serving.", nil, nil)
	descYoung    = prometheus.NewDesc("cachewire_l1_young_tombstones_dropped_total",
		"Versions L1 forgot while younger than --l1-tombstone-ttl (too few --l1-max-tombstones): each stops L2 use until the group catches up.", nil, nil)
	descTombsExpired = prometheus.NewDesc("cachewire_l1_tombstones_expired_total",
		"L1 tombstones dropped because they outlived --l1-tombstone-ttl.", nil, nil)
	descGaps = prometheus.NewDesc("cachewire_l2_gap_keys",
		"Keys this node will not read from L2 because Redis may lack a version it served (a failed fill); 1 in overflow when it stopped using L2.", []string{"kind"}, nil)
	descL2Epoch = prometheus.NewDesc("cachewire_l2_epoch_refusals_total",
		"Redis writes and reads refused because they belong to an older L2 epoch, by kind (fill, read).", []string{"kind"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLag, descFresh, descEntries, descTombs, descBytes, descEvicts, descL2Errors, descL2Group, descReady, descYoung, descTombsExpired, descL2Epoch, descGaps} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	now := time.Now()
	for _, p := range n.sub.Partitions() {
		part := itoa(p.Partition)
		lag := float64(0)
		if p.Positioned && p.HighWatermark > p.Offset {
			lag = float64(p.HighWatermark - p.Offset)
		}
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, lag, p.Topic, part)
		fresh := -1.0
		if !p.CaughtUpAt.IsZero() {
			fresh = now.Sub(p.CaughtUpAt).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descFresh, prometheus.GaugeValue, fresh, p.Topic, part)
	}
	s := n.l1.Stats()
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(s.Entries))
	ch <- prometheus.MustNewConstMetric(descTombs, prometheus.GaugeValue, float64(s.Tombstones))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(s.Bytes))
	for reason, v := range s.Evictions {
		ch <- prometheus.MustNewConstMetric(descEvicts, prometheus.CounterValue, float64(v), reason)
	}
	ch <- prometheus.MustNewConstMetric(descYoung, prometheus.CounterValue, float64(s.YoungTombstonesDropped))
	ch <- prometheus.MustNewConstMetric(descTombsExpired, prometheus.CounterValue, float64(s.TombstonesExpired))
	if n.l2 != nil {
		ls := n.l2.Stats()
		ch <- prometheus.MustNewConstMetric(descL2Errors, prometheus.CounterValue, float64(ls.Errors), "error")
		ch <- prometheus.MustNewConstMetric(descL2Errors, prometheus.CounterValue, float64(ls.Skipped), "skipped")
		ch <- prometheus.MustNewConstMetric(descL2Epoch, prometheus.CounterValue, float64(ls.EpochFillsRejected), "fill")
		ch <- prometheus.MustNewConstMetric(descL2Epoch, prometheus.CounterValue, float64(ls.OldEpochReads), "read")
		gaps, overflow := n.gaps.len()
		of := 0.0
		if overflow {
			of = 1
		}
		ch <- prometheus.MustNewConstMetric(descGaps, prometheus.GaugeValue, float64(gaps), "keys")
		ch <- prometheus.MustNewConstMetric(descGaps, prometheus.GaugeValue, of, "overflow")
	}
	if n.group != nil {
		ch <- prometheus.MustNewConstMetric(descL2Group, prometheus.CounterValue, float64(n.group.Stats().Events))
	}
	ready := 0.0
	if n.Ready() {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
}
