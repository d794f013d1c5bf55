package redistier

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachewire/cachewire/invalidation"
)

// Sentinel errors.
var (
	// ErrUnavailable wraps every failure to reach Redis, and is returned at once, without a call,
	// while the tier backs off after a failure. Callers carry on without L2.
	ErrUnavailable = errors.New("redistier: redis unavailable")
	// ErrClosed is returned by every call after Close.
	ErrClosed = errors.New("redistier: closed")
)

// Config configures a Tier. Every field documents its zero-value default.
type Config struct {
	// Addrs are the Redis addresses: one for a single server, several for Redis Cluster, or the
	// Sentinels when MasterName is set. Required unless Client is set.
	Addrs []string
	// MasterName selects Sentinel mode with this master. Empty means no Sentinel.
	MasterName string
	// Username and Password authenticate, when set.
	Username, Password string
	// DB selects the database (single server and Sentinel only). Default 0.
	DB int
	// Client, when set, is used instead of a client built from the fields above; Close leaves it
	// open. For tests and for sharing a pool.
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

// Entry is what the tier holds for a key.
type Entry struct {
	Value   []byte
	Version uint64
	// Tombstone is true when the key was evicted at Version (Value is nil).
	Tombstone bool
	// Missing is true for a cached "not found" from the origin at Version.
	Missing bool
}

// Stats are a Tier's counters.
type Stats struct {
	Hits, Misses, Fills, StaleFillsRejected uint64
	// Errors counts calls that failed; Skipped counts calls refused at once while backing off.
	Errors, Skipped uint64
}

// Tier is the Redis tier. It is safe for concurrent use.
type Tier struct {
	cfg    Config
	rdb    redis.UniversalClient
	owned  bool
	closed atomic.Bool

	downUntil atomic.Int64 // unix nanos until which calls fail fast

	hits, misses, fills, stale, errs, skipped atomic.Uint64

	closeOnce sync.Once
}

// New returns a Tier. It does not contact Redis: a Redis that is down at start-up makes calls
// fail with ErrUnavailable until it comes up.
func New(cfg Config) (*Tier, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Tier{cfg: cfg, rdb: cfg.Client}
	if t.rdb == nil {
		t.rdb = redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs:                 cfg.Addrs,
			MasterName:            cfg.MasterName,
			Username:              cfg.Username,
			Password:              cfg.Password,
			DB:                    cfg.DB,
			DialTimeout:           cfg.DialTimeout,
			ReadTimeout:           cfg.ReadTimeout,
			WriteTimeout:          cfg.WriteTimeout,
			ContextTimeoutEnabled: true,
			PoolSize:              cfg.PoolSize,
			MaxRetries:            1,
		})
		t.owned = true
	}
	return t, nil
}

// Client returns the underlying go-redis client.
func (t *Tier) Client() redis.UniversalClient { return t.rdb }

// Key returns the Redis key that holds key.
func (t *Tier) Key(key string) string { return t.cfg.KeyPrefix + key }

// Close closes the client if the Tier created it. Later calls return ErrClosed.
func (t *Tier) Close() error {
	var err error
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		if t.owned {
			err = t.rdb.Close()
		}
	})
	return err
}

// before fails fast when the tier is closed or backing off.
func (t *Tier) before() error {
	if t.closed.Load() {
		return ErrClosed
	}
	if time.Now().UnixNano() < t.downUntil.Load() {
		t.skipped.Add(1)
		return fmt.Errorf("%w: backing off after a failure", ErrUnavailable)
	}
	return nil
}

// after classifies err: a failure to talk to Redis starts the back-off.
func (t *Tier) after(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	t.errs.Add(1)
	if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err // the caller gave up; Redis is not to blame
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !isConnError(rerr) {
		return fmt.Errorf("redistier: %w", err) // Redis answered with an error
	}
	t.downUntil.Store(time.Now().Add(t.cfg.Backoff).UnixNano())
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// isConnError reports whether a Redis error reply means the server cannot serve right now.
func isConnError(err redis.Error) bool {
	for _, p := range []string{"LOADING", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	return false
}

// Get returns what the tier holds for key. found is false for a key with no entry or with a
// tombstone (the Entry then still says which version the tombstone is at).
func (t *Tier) Get(ctx context.Context, key string) (e Entry, found bool, err error) {
	if err := t.before(); err != nil {
		return Entry{}, false, err
	}
	raw, err := t.rdb.Get(ctx, t.Key(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		t.misses.Add(1)
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, t.after(ctx, err)
	}
	e, err = decode(raw)
	if err != nil {
		t.misses.Add(1)
		return Entry{}, false, fmt.Errorf("redistier: key %q: %w", key, err)
	}
	if e.Tombstone {
		t.misses.Add(1)
		return e, false, nil
	}
	t.hits.Add(1)
	return e, true, nil
}

func decode(raw []byte) (Entry, error) {
	if len(raw) < 21 {
		return Entry{}, fmt.Errorf("entry of %d bytes is too short", len(raw))
	}
	v, err := strconv.ParseUint(string(raw[:20]), 10, 64)
	if err != nil {
		return Entry{}, fmt.Errorf("bad version: %w", err)
	}
	e := Entry{Version: v}
	switch raw[20] {
	case 'V':
		e.Value = raw[21:]
	case 'N':
		e.Missing = true
	case 'T':
		e.Tombstone = true
	default:
		return Entry{}, fmt.Errorf("unknown kind %q", raw[20])
	}
	return e, nil
}

func versionArg(v uint64) string { return fmt.Sprintf("%020d", v) }

func ms(d time.Duration) int64 { return d.Milliseconds() }

// Fill stores value at version for key unless Redis has seen a newer version of it. It reports
// whether the fill was accepted.
func (t *Tier) Fill(ctx context.Context, key string, version uint64, value []byte) (bool, error) {
	return t.fill(ctx, key, version, "V", value, t.cfg.TTL)
}

// FillMissing caches for NegativeTTL that the origin has no value for key at version.
func (t *Tier) FillMissing(ctx context.Context, key string, version uint64) (bool, error) {
	return t.fill(ctx, key, version, "N", nil, t.cfg.NegativeTTL)
}

func (t *Tier) fill(ctx context.Context, key string, version uint64, kind string, value []byte, ttl time.Duration) (bool, error) {
	if err := t.before(); err != nil {
		return false, err
	}
	n, err := applyScript.Run(ctx, t.rdb, []string{t.Key(key)},
		versionArg(version), "fill", kind, "", value, ms(ttl), ms(t.cfg.TombstoneTTL)).Int()
	if err != nil {
		return false, t.after(ctx, err)
	}
	if n == 0 {
		t.stale.Add(1)
		return false, nil
	}
	t.fills.Add(1)
	return true, nil
}

func (t *Tier) eventArgs(e *invalidation.Event, p invalidation.Policy) []any {
	kind, policy := "E", "evict"
	if e.Op == invalidation.OpUpsert && e.HasValue {
		kind = "R"
	}
	switch p {
	case invalidation.RefreshHeld:
		policy = "held"
	case invalidation.RefreshAll:
		policy = "all"
	}
	return []any{versionArg(e.Version), "event", kind, policy, e.Value, ms(t.cfg.TTL), ms(t.cfg.TombstoneTTL)}
}

func action(n int64) invalidation.Action {
	switch n {
	case 1:
		return invalidation.Evict
	case 2:
		return invalidation.Refresh
	}
	return invalidation.Ignore
}

// Apply applies one valid change event under policy p, atomically, and returns what it did.
func (t *Tier) Apply(ctx context.Context, e *invalidation.Event, p invalidation.Policy) (invalidation.Action, error) {
	if err := t.before(); err != nil {
		return invalidation.Ignore, err
	}
	n, err := applyScript.Run(ctx, t.rdb, []string{t.Key(e.Key)}, t.eventArgs(e, p)...).Int64()
	if err != nil {
		return invalidation.Ignore, t.after(ctx, err)
	}
	return action(n), nil
}

// ApplyBatch applies valid events in order, pipelined (one round trip per Redis node), and
// reports how many changed the tier and how many were ignored. On error none or some of the
// events were applied; applying them again is harmless.
func (t *Tier) ApplyBatch(ctx context.Context, events []invalidation.Event, p invalidation.Policy) (applied, ignored int, err error) {
	if len(events) == 0 {
		return 0, 0, nil
	}
	if err := t.before(); err != nil {
		return 0, 0, err
	}
	run := func() ([]redis.Cmder, error) {
		return t.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for i := range events {
				applyScript.EvalSha(ctx, pipe, []string{t.Key(events[i].Key)}, t.eventArgs(&events[i], p)...)
			}
			return nil
		})
	}
	cmds, err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted or its scripts were flushed: load the script (on every Cluster node) and retry.
		if lerr := t.loadScript(ctx); lerr != nil {
			return 0, 0, t.after(ctx, lerr)
		}
		cmds, err = run()
	}
	if err != nil {
		return 0, 0, t.after(ctx, err)
	}
	for _, c := range cmds {
		n, _ := c.(*redis.Cmd).Int64()
		if action(n) == invalidation.Ignore {
			ignored++
		} else {
			applied++
		}
	}
	return applied, ignored, nil
}

func (t *Tier) loadScript(ctx context.Context) error {
	if cc, ok := t.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
			return applyScript.Load(ctx, c).Err()
		})
	}
	return applyScript.Load(ctx, t.rdb).Err()
}

// Ping checks that Redis answers.
func (t *Tier) Ping(ctx context.Context) error {
	if t.closed.Load() {
		return ErrClosed
	}
	return t.after(ctx, t.rdb.Ping(ctx).Err())
}

// Stats returns a snapshot of the counters.
func (t *Tier) Stats() Stats {
	return Stats{
		Hits: t.hits.Load(), Misses: t.misses.Load(), Fills: t.fills.Load(),
		StaleFillsRejected: t.stale.Load(), Errors: t.errs.Load(), Skipped: t.skipped.Load(),
	}
}
