package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// EnvRedis names a real redis-server address for the tests to use.
const EnvRedis = "CACHEWIRE_TEST_REDIS"

// Redis is one test's Redis: a real server shared by the suite, or a miniredis of its own.
type Redis struct {
	// Addr is the server address.
	Addr string
	// Prefix is unique to the test; every key the test writes must start with it.
	Prefix string
	// Mini is the in-process server (for FastForward, Close/Restart faults); nil in real mode.
	Mini *miniredis.Miniredis
	// Real is true when the server came from CACHEWIRE_TEST_REDIS.
	Real bool
}

// NewRedis returns the Redis for t. A miniredis is closed, and a real server's keys under the
// test's prefix are deleted, when t ends.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	prefix := "cwtest:" + sanitize(t.Name()) + ":" + randomSuffix() + ":"
	if addr := os.Getenv(EnvRedis); addr != "" {
		r := &Redis{Addr: addr, Prefix: prefix, Real: true}
		t.Cleanup(func() { r.deletePrefix(t) })
		return r
	}
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		t.Fatalf("testenv: start miniredis: %v", err)
	}
	t.Cleanup(m.Close)
	return &Redis{Addr: m.Addr(), Prefix: prefix, Mini: m}
}

// Key returns k under the test's prefix.
func (r *Redis) Key(k string) string { return r.Prefix + k }

// Client returns a go-redis client for the server, closed when t ends.
func (r *Redis) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, DialTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Describe names the server for logs: its address and version.
func (r *Redis) Describe(ctx context.Context) string {
	if !r.Real {
		return "in-process miniredis at " + r.Addr
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer func() { _ = c.Close() }()
	info, err := c.InfoMap(ctx, "server").Result()
	if err != nil {
		return "redis-server at " + r.Addr + " (version unknown: " + err.Error() + ")"
	}
	return "redis-server " + info["Server"]["redis_version"] + " at " + r.Addr
}

func (r *Redis) deletePrefix(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer func() { _ = c.Close() }()
	iter := c.Scan(ctx, 0, r.Prefix+"*", 500).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Logf("testenv: scan %s*: %v", r.Prefix, err)
		return
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := c.Unlink(ctx, keys[:n]...).Err(); err != nil {
			t.Logf("testenv: unlink: %v", err)
			return
		}
		keys = keys[n:]
	}
}
