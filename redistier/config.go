package redistier

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config configures a Tier. Every field documents its zero-value default.
type Config struct {
	// Addrs are the Redis addresses: one for a single server, several for Redis Cluster, or the
	// Sentinels when MasterName is set. Required unless Client is set.
	Addrs []string
	// Cluster forces Redis Cluster mode even with a single seed address in Addrs.
	Cluster bool
	// MasterName selects Sentinel mode with this master. Empty means no Sentinel.
	MasterName string
	// Username and Password authenticate to the Redis servers (the master in Sentinel mode, every
	// node in cluster mode), when set: an ACL user, or with an empty Username the password of
	// Redis's default user (requirepass). ACLRule is the rule such a user needs.
	Username, Password string
	// SentinelUsername and SentinelPassword authenticate to the Sentinels in Sentinel mode, when
	// set. A Sentinel has its own users, apart from the master's, so go-redis authenticates to it
	// with these and never with Username and Password; empty means the Sentinels do not require
	// authentication. They are unused outside Sentinel mode.
	SentinelUsername, SentinelPassword string
	// TLS, when set, makes every connection use TLS with this configuration: to the server in
	// single-server mode, to every node in cluster mode, and to the Sentinels and the master they
	// name in Sentinel mode. Set RootCAs to the CA that signed the servers' certificates and,
	// when the servers require client certificates (tls-auth-clients yes), Certificates. An empty
	// ServerName is taken from each address dialled. The zero value, nil, means plaintext.
	TLS *tls.Config
	// DB selects the database (single server and Sentinel only). Default 0.
	DB int
	// Client, when set, is used instead of a client built from the fields above; Close leaves it
	// open. For tests and for sharing a pool. Such a tier notices a new epoch only when Redis
	// lost its epoch key (a restart without persistence, FLUSHALL), not a restart that reloaded
	// a snapshot or a failover: those are noticed on connect, which needs a client the tier built.
	Client redis.UniversalClient
	// KeyPrefix is prepended to every key. If empty, it defaults to "cw:".
	KeyPrefix string
	// TTL of a stored value. If zero, it defaults to 1 hour.
	TTL time.Duration
	// NegativeTTL of a cached "not found". If zero, it defaults to 5 seconds.
	NegativeTTL time.Duration
	// TombstoneTTL of a tombstone; it must be longer than the longest origin load. If zero, it
	// defaults to 10 minutes.
	TombstoneTTL time.Duration
	// DialTimeout, ReadTimeout and WriteTimeout bound each network step. If zero, they default
	// to 500 ms, 250 ms and 250 ms.
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
	// PoolSize is the connection pool size per node. If zero, go-redis's default (10 per CPU).
	PoolSize int
	// Backoff is how long the tier stops calling Redis after a failure. If zero, it defaults to
	// 1 second.
	Backoff time.Duration
	// OnNewEpoch, when set, is called each time the tier sees Redis in a new epoch (it lost what
	// it held, or is another server process now). It must be fast; it runs on the calling
	// goroutine of whatever tier call noticed.
	OnNewEpoch func()
	// Logger receives the tier's rare warnings. If nil, it defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Client == nil && len(c.Addrs) == 0 {
		return errors.New("redistier: no Redis address (Config.Addrs)")
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "cw:"
	}
	setDefault(&c.TTL, time.Hour)
	setDefault(&c.NegativeTTL, 5*time.Second)
	setDefault(&c.TombstoneTTL, 10*time.Minute)
	setDefault(&c.DialTimeout, 500*time.Millisecond)
	setDefault(&c.ReadTimeout, 250*time.Millisecond)
	setDefault(&c.WriteTimeout, 250*time.Millisecond)
	setDefault(&c.Backoff, time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Cluster && strings.ContainsAny(c.KeyPrefix, "{}") {
		return fmt.Errorf("redistier: key prefix %q holds a brace: in cluster mode the tier places its epoch keys by hash slot itself", c.KeyPrefix)
	}
	for _, d := range []time.Duration{c.TTL, c.NegativeTTL, c.TombstoneTTL, c.DialTimeout, c.ReadTimeout, c.WriteTimeout, c.Backoff} {
		if d < time.Millisecond {
			return fmt.Errorf("redistier: durations must be at least 1ms, got %v", d)
		}
	}
	return nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}
