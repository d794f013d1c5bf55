package bench

import (
	"fmt"
	"slices"
	"time"
)

// Latencies is a sample of durations.
type Latencies []time.Duration

// Summary is what a sample says: count and percentiles.
type Summary struct {
	N    int           `json:"n"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
}

// Summarize sorts l and returns its percentiles.
func (l Latencies) Summarize() Summary {
	if len(l) == 0 {
		return Summary{}
	}
	slices.Sort(l)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(l))+0.5) - 1
		return l[min(max(i, 0), len(l)-1)]
	}
	return Summary{N: len(l), P50: at(0.50), P99: at(0.99), P999: at(0.999), Max: l[len(l)-1]}
}

func (s Summary) String() string {
	return fmt.Sprintf("p50 %v p99 %v p999 %v max %v (n=%d)", round(s.P50), round(s.P99), round(s.P999), round(s.Max), s.N)
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}
