package invalidation

import (
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"
)

// TestPartitionForMatchesMurmur2Balancer: our partition lookup must agree with the balancer the
// publisher uses (and so with the Java client).
func TestPartitionForMatchesMurmur2Balancer(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 12, 64} {
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for i := range 500 {
			key := fmt.Sprintf("user:%d", i)
			if i%7 == 0 {
				key = fmt.Sprint(i) // lengths 1..3 exercise the tail
			}
			want := kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(key)}, parts...)
			if got := PartitionFor(key, n); got != want {
				t.Fatalf("PartitionFor(%q, %d) = %d, Murmur2Balancer says %d", key, n, got, want)
			}
		}
	}
}
