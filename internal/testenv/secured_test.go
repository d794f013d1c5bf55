package testenv

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/invalidation"
)

// TestSuiteServersAreSecured: when the real-mode suite runs secured (.ci/run), its servers really
// refuse what they should, so every other test's pass means "passed over SASL_SSL with ACLs and
// over TLS as an ACL user", not "passed on a port that lets anything in". A plaintext client of
// the SASL_SSL listener gets no metadata while Kafka.Conn does, and a principal without ACLs is
// refused; a Redis client without TLS gets nothing from the TLS port, and the tiers' ACL user
// may not run a command outside the tier's (FLUSHALL) nor touch a key outside the suite's
// prefixes.
func TestSuiteServersAreSecured(t *testing.T) {
	if os.Getenv(EnvKafka) == "" || os.Getenv(EnvKafkaSASLMechanism) == "" {
		t.Skipf("the suite is not running against a secured Kafka (%s and %s unset; .ci/run sets both)", EnvKafka, EnvKafkaSASLMechanism)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	k := NewKafka(t)
	if k.Conn.TLS == nil || k.Conn.SASL == nil {
		t.Fatalf("Kafka.Conn = %+v: want TLS and SASL from the environment", k.Conn)
	}
	c := k.Client(t)
	if _, err := c.Metadata(ctx, &kafka.MetadataRequest{}); err != nil {
		t.Fatalf("metadata as the suite's user: %v", err)
	}
	plain, done := invalidation.KafkaConn{}.Client(k.Brokers, 3*time.Second)
	defer done()
	if _, err := plain.Metadata(ctx, &kafka.MetadataRequest{}); err == nil {
		t.Fatalf("a plaintext client got metadata from %v: the suite's listener is not SASL_SSL", k.Brokers)
	}
	topic := k.CreateTopic(t, "acl", 1)
	// The broker's CA but no SASL: TLS alone is no principal with ACLs.
	tlsOnly, done2 := invalidation.KafkaConn{TLS: k.Conn.TLS}.Client(k.Brokers, 3*time.Second)
	defer done2()
	if _, err := tlsOnly.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}}); err == nil {
		t.Fatalf("a client with TLS but no SASL read the metadata of %s", topic)
	}

	if os.Getenv(EnvRedisTLSCA) == "" {
		t.Fatalf("Kafka is secured but %s is unset: .ci/run secures both", EnvRedisTLSCA)
	}
	r := NewRedis(t)
	noTLS := redis.NewClient(&redis.Options{Addr: r.Addr, DialTimeout: 2 * time.Second, MaxRetries: -1})
	defer noTLS.Close()
	if err := noTLS.Ping(ctx).Err(); err == nil {
		t.Fatalf("a client without TLS was answered on %s", r.Addr)
	}
	tier := r.TierClient(t)
	if err := tier.Set(ctx, r.Key("k"), "v", time.Minute).Err(); err != nil {
		t.Fatalf("SET under the test's prefix as %s: %v", r.Username, err)
	}
	if err := tier.FlushAll(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("FLUSHALL as %s: %v, want NOPERM", r.Username, err)
	}
	if err := tier.Set(ctx, "outside-the-prefixes", "v", time.Minute).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("SET outside the suite's prefixes as %s: %v, want NOPERM", r.Username, err)
	}
}
