package testenv

import (
	"context"
	"crypto/tls"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// EnvRedis names a real redis-server address for the tests to use.
const EnvRedis = "CACHEWIRE_TEST_REDIS"

// The variables that secure the connection to the real server of EnvRedis: the CA its certificate
// is checked against (TLS is on when it is set), and the ACL user the tiers log in as. .ci/run
// sets them from internal/testenv/secureenv, so every tier of the real-mode suite speaks TLS as
// a user limited to the tier's commands and the suite's key prefixes.
const (
	EnvRedisTLSCA    = "CACHEWIRE_TEST_REDIS_TLS_CA"
	EnvRedisUsername = "CACHEWIRE_TEST_REDIS_USERNAME"
	EnvRedisPassword = "CACHEWIRE_TEST_REDIS_PASSWORD"
)

// Redis is one test's Redis: a real server shared by the suite, or a miniredis of its own.
type Redis struct {
	// Addr is the server address.
	Addr string
	// TLS, Username and Password are how a tier connects (from EnvRedisTLSCA and the ACL user's
	// variables in real mode; empty otherwise). Every tier a test builds takes them
	// (testenv cannot build the redistier.Config: redistier's own tests import testenv).
	TLS                *tls.Config
	Username, Password string
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
		r := &Redis{Addr: addr, Prefix: prefix, Real: true,
			Username: os.Getenv(EnvRedisUsername), Password: os.Getenv(EnvRedisPassword)}
		if ca := os.Getenv(EnvRedisTLSCA); ca != "" {
			pool, err := loadPool(EnvRedisTLSCA, ca)
			if err != nil {
				t.Fatalf("testenv: %v", err)
			}
			r.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
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

// Client returns a go-redis client for the server, closed when t ends. It connects as the
// default user, over TLS when the server needs it: tests inspect and fault the server through it
// with commands no tier's ACL user may run (SCAN, FLUSHALL, DEBUG).
func (r *Redis) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(r.adminOptions())
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TierClient returns a go-redis client that logs in as the tiers' ACL user (for redistier's
// Config.Client), closed when t ends.
func (r *Redis) TierClient(t testing.TB) *redis.Client {
	o := r.adminOptions()
	o.Username, o.Password = r.Username, r.Password
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (r *Redis) adminOptions() *redis.Options {
	return &redis.Options{Addr: r.Addr, TLSConfig: r.TLS, DialTimeout: 2 * time.Second}
}

// Describe names the server for logs: its address and version.
func (r *Redis) Describe(ctx context.Context) string {
	if !r.Real {
		return "in-process miniredis at " + r.Addr
	}
	c := redis.NewClient(r.adminOptions())
	defer func() { _ = c.Close() }()
	how := ""
	if r.TLS != nil {
		how = " (TLS"
		if r.Username != "" {
			how += ", ACL user " + r.Username
		}
		how += ")"
	}
	info, err := c.InfoMap(ctx, "server").Result()
	if err != nil {
		return "redis-server at " + r.Addr + how + " (version unknown: " + err.Error() + ")"
	}
	return "redis-server " + info["Server"]["redis_version"] + " at " + r.Addr + how
}

func (r *Redis) deletePrefix(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(r.adminOptions())
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

// Flags returns the flags that make cachenode use the test's server as its L2 the way a tier
// here connects: --redis-addrs, --redis-prefix and, against a secured server, the CA, the ACL
// user and --redis-password-file (a file in t's temporary directory).
func (r *Redis) Flags(t testing.TB) []string {
	t.Helper()
	args := []string{"--redis-addrs", r.Addr, "--redis-prefix", r.Prefix}
	if ca := os.Getenv(EnvRedisTLSCA); r.Real && ca != "" {
		args = append(args, "--redis-tls-ca", ca)
	}
	if r.Username != "" {
		args = append(args, "--redis-username", r.Username)
	}
	if r.Password != "" {
		args = append(args, "--redis-password-file", secretFile(t, "redis-password", r.Password))
	}
	return args
}
