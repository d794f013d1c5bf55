package client

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// NearCacheCollector returns a Prometheus collector of c's near cache: register it with the
// application's registry to export the counters of NearStats. It collects nothing when c has
// no near cache. labels are added to every metric (say, the node's address when the
// application has several). Collecting is safe while c is in use, and after Close.
func NearCacheCollector(c *Cache, labels prometheus.Labels) prometheus.Collector {
	d := func(name, help string, variable ...string) *prometheus.Desc {
		return prometheus.NewDesc("cachewire_near_"+name, help, variable, labels)
	}
	return &nearCollector{c: c,
		hits:      d("hits_total", "Gets the near cache answered in process."),
		misses:    d("misses_total", "Gets the near cache sent to the node."),
		fills:     d("fills_total", "Node answers stored in the near cache."),
		rejected:  d("stale_fills_rejected_total", "Node answers refused: a newer version seen, or the stream changed while they were read."),
		evictions: d("evictions_total", "Values that left the near cache, by reason.", "reason"),
		resyncs:   d("resyncs_total", "Watch streams opened and synchronized (flushed) after the first."),
		breaks:    d("stream_breaks_total", "Watch streams that ended (node restart or drain, cut off, network)."),
		gaps:      d("gaps_total", "Sequence gaps in the Watch stream (each broke its stream)."),
		entries:   d("entries", "Values held."),
		bytes:     d("bytes", "Bytes held (keys, values and per-entry overhead)."),
		synced:    d("synced", "1 while the stream is up and synchronized (Gets may be answered in process), else 0."),
	}
}

type nearCollector struct {
	c                                                 *Cache
	hits, misses, fills, rejected, evictions, resyncs *prometheus.Desc
	breaks, gaps, entries, bytes, synced              *prometheus.Desc
}

func (n *nearCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{n.hits, n.misses, n.fills, n.rejected, n.evictions, n.resyncs, n.breaks, n.gaps, n.entries, n.bytes, n.synced} {
		ch <- d
	}
}

func (n *nearCollector) Collect(ch chan<- prometheus.Metric) {
	st, ok := n.c.NearStats()
	if !ok {
		return
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter(n.hits, st.Hits)
	counter(n.misses, st.Misses)
	counter(n.fills, st.Fills)
	counter(n.rejected, st.StaleFillsRejected)
	reasons := make([]string, 0, len(st.Evictions))
	for r := range st.Evictions {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		counter(n.evictions, st.Evictions[r], r)
	}
	counter(n.resyncs, st.Resyncs)
	counter(n.breaks, st.Breaks)
	counter(n.gaps, st.Gaps)
	gauge(n.entries, float64(st.Entries))
	gauge(n.bytes, float64(st.Bytes))
	synced := 0.0
	if st.Synced {
		synced = 1
	}
	gauge(n.synced, synced)
}
