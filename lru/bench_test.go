package lru

import (
	"strconv"
	"testing"

	"github.com/cachewire/cachewire/invalidation"
)

func benchCache(b *testing.B, n int) (*Cache, []string) {
	c, err := New(Config{MaxEntries: n, MaxBytes: int64(n) * 512})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, n)
	val := make([]byte, 100)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
		c.Fill(keys[i], 1, val, c.BeginFill())
	}
	return c, keys
}

// BenchmarkGetHit is the L1 hit path: one lookup of a 100-byte value.
func BenchmarkGetHit(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			c, keys := benchCache(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, ok := c.Get(keys[i%len(keys)]); !ok {
					b.Fatal("miss")
				}
			}
		})
	}
}

// BenchmarkGetHitParallel is the hit path under contention from all cores.
func BenchmarkGetHitParallel(b *testing.B) {
	c, keys := benchCache(b, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c.Get(keys[i%len(keys)])
			i++
		}
	})
}

// BenchmarkFill replaces a held value with a newer version (the Set path).
func BenchmarkFill(b *testing.B) {
	c, keys := benchCache(b, 100_000)
	val := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c.Fill(keys[i%len(keys)], uint64(i+2), val, c.BeginFill())
	}
}

// BenchmarkApplyBatch applies batches of 100 refresh events.
func BenchmarkApplyBatch(b *testing.B) {
	c, keys := benchCache(b, 100_000)
	batch := make([]invalidation.Event, 100)
	val := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	v := uint64(1)
	for i := 0; b.Loop(); i++ {
		for j := range batch {
			v++
			batch[j] = invalidation.Event{Key: keys[(i*100+j)%len(keys)], Version: v, Op: invalidation.OpUpsert, Value: val, HasValue: true}
		}
		c.ApplyBatch(batch, invalidation.RefreshHeld)
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}
