package redistier

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Entry is what the tier holds for a key.
type Entry struct {
	Value   []byte
	Version uint64
	// Tombstone is true when the key was evicted at Version (Value is nil).
	Tombstone bool
	// Missing is true for a cached "not found" from the origin at Version.
	Missing bool
	// Leased is true for an answer from a versionless origin, stored under a lease: it is at
	// least as new as Version (see FillLeased).
	Leased bool
	// OldEpoch is true when the entry was written in an earlier epoch: it is not served (Redis
	// may have lost newer writes since), but its version still bounds what can be written.
	OldEpoch bool
	epoch    string
}

// FillToken is taken before a load reads the origin (BeginFill) and handed to Fill, which is
// refused if Redis started a new epoch in between.
type FillToken struct {
	// Epoch is the epoch the load began in ("" when the tier could not read it: the fill is then
	// refused).
	Epoch string
}

// Stats are a Tier's counters.
type Stats struct {
	Hits, Misses, Fills, StaleFillsRejected uint64
	// Errors counts calls that failed; Skipped counts calls refused at once while backing off.
	Errors, Skipped uint64
	// NewEpochs counts the times the tier saw Redis in a new epoch (in cluster mode: a master
	// server process whose slots began new epochs counts once); EpochFillsRejected counts
	// fills refused because they began in an older one; OldEpochReads counts entries of an older
	// epoch that were read and not served.
	NewEpochs, EpochFillsRejected, OldEpochReads uint64
}

// Tier is the Redis tier. It is safe for concurrent use.
type Tier struct {
	cfg    Config
	rdb    redis.UniversalClient
	owned  bool
	closed atomic.Bool

	downUntil atomic.Int64 // unix nanos until which calls fail fast

	// Epochs: one for the whole tier, or one per hash slot in cluster mode. An epoch is learned
	// only from a read that began after the read it replaces (reads are numbered as they begin),
	// so a slow read of an old epoch never takes the tier back to it.
	epochs    []atomic.Pointer[learned]
	readSeq   atomic.Uint64
	epochKeys []string
	runID     atomic.Pointer[string] // of the server, read on the last connect
	nodes     sync.Map               // cluster mode: *clusterNode -> struct{}, one per node client

	hits, misses, fills, stale, errs, skipped atomic.Uint64
	newEpochs, epochFills, oldReads           atomic.Uint64

	closeOnce sync.Once
}

// New returns a Tier. It does not contact Redis: a Redis that is down at start-up makes calls
// fail with ErrUnavailable until it comes up.
func New(cfg Config) (*Tier, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Tier{cfg: cfg, rdb: cfg.Client}
	routeRedisLogs(cfg.Logger)
	_, isCluster := cfg.Client.(*redis.ClusterClient)
	if cfg.Client == nil {
		isCluster = cfg.Cluster || (cfg.MasterName == "" && len(cfg.Addrs) > 1)
	}
	if isCluster {
		t.epochKeys = slotEpochKeys(cfg.KeyPrefix)
	} else {
		t.epochKeys = []string{cfg.KeyPrefix + epochSuffix}
	}
	t.epochs = make([]atomic.Pointer[learned], len(t.epochKeys))
	if t.rdb == nil {
		var onConnect func(context.Context, *redis.Conn) error
		switch {
		case cfg.MasterName != "":
			// go-redis runs OnConnect on its connections to the Sentinels too, which hold no
			// epoch (and run no scripts): the hook is for the master only.
			onConnect = func(ctx context.Context, cn *redis.Conn) error {
				if isSentinel(ctx, cn, cfg.MasterName) {
					return nil
				}
				return t.onConnect(ctx, cn)
			}
		case !isCluster:
			onConnect = t.onConnect
		}
		uo := &redis.UniversalOptions{
			Addrs:                 cfg.Addrs,
			IsClusterMode:         cfg.Cluster,
			OnConnect:             onConnect,
			MasterName:            cfg.MasterName,
			Username:              cfg.Username,
			Password:              cfg.Password,
			SentinelUsername:      cfg.SentinelUsername,
			SentinelPassword:      cfg.SentinelPassword,
			TLSConfig:             cfg.TLS,
			DB:                    cfg.DB,
			DialTimeout:           cfg.DialTimeout,
			ReadTimeout:           cfg.ReadTimeout,
			WriteTimeout:          cfg.WriteTimeout,
			ContextTimeoutEnabled: true,
			PoolSize:              cfg.PoolSize,
			MaxRetries:            1,
		}
		if isCluster {
			// Each node's client gets hooks that know the node's address: the first use of a
			// master server process stamps the epochs of the slots it serves (clusterNode), so
			// a replica promoted after a failover starts new epochs for its slots.
			co := uo.Cluster()
			co.NewClient = t.newClusterClient
			// Each slot map go-redis reads is probed for nodes demoted and promoted again
			// (Tier.probe): read it more often than the minute go-redis defaults to.
			co.ClusterStateReloadInterval = 10 * time.Second
			t.rdb = redis.NewClusterClient(co)
		} else {
			t.rdb = redis.NewUniversalClient(uo)
		}
		t.owned = true
	}
	return t, nil
}

// isSentinel reports whether cn is a connection to a Redis Sentinel: only a Sentinel knows the
// SENTINEL command, which go-redis itself runs there (a data server rejects it as an unknown
// command, before any ACL check, so the probe costs one round trip and logs nothing).
func isSentinel(ctx context.Context, cn *redis.Conn, master string) bool {
	err := cn.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", master).Err()
	return err == nil || errors.Is(err, redis.Nil)
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
	if cc, ok := t.rdb.(*redis.ClusterClient); ok {
		// go-redis re-reads the slot map on MOVED only (or every minute): a master that died
		// refuses connections and sends no MOVED, and its promoted replica would be found a
		// minute late. Ask for the map again (in the background, at most every 200 ms).
		cc.ReloadState(context.WithoutCancel(ctx))
	}
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
	cur, err := t.epoch(ctx, t.epochIndex(key))
	if err != nil {
		return Entry{}, false, err
	}
	if e.OldEpoch || e.epoch != cur {
		t.misses.Add(1)
		t.oldReads.Add(1)
		return Entry{Version: e.Version, OldEpoch: true}, false, nil
	}
	if e.Tombstone {
		t.misses.Add(1)
		return e, false, nil
	}
	t.hits.Add(1)
	return e, true, nil
}

// Peek returns what Redis holds for key, for inspection (the node's Explain): unlike Get it
// returns tombstones, cached "not found" answers and entries of an older epoch as they are
// (OldEpoch set, Value nil), and counts no hit or miss. found is false when Redis holds nothing
// for key.
func (t *Tier) Peek(ctx context.Context, key string) (e Entry, found bool, err error) {
	if err := t.before(); err != nil {
		return Entry{}, false, err
	}
	raw, err := t.rdb.Get(ctx, t.Key(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, t.after(ctx, err)
	}
	if e, err = decode(raw); err != nil {
		return Entry{}, false, fmt.Errorf("redistier: key %q: %w", key, err)
	}
	cur, err := t.epoch(ctx, t.epochIndex(key))
	if err != nil {
		return Entry{}, false, err
	}
	if e.OldEpoch || e.epoch != cur {
		e.OldEpoch, e.Value = true, nil
	}
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
	switch raw[20] {
	case 'V', 'N', 'T':
		// Written before epochs: a version floor, never served.
		return Entry{Version: v, OldEpoch: true}, nil
	}
	if len(raw) < headerLen {
		return Entry{}, fmt.Errorf("entry of %d bytes is too short", len(raw))
	}
	e := Entry{Version: v, epoch: string(raw[21:headerLen])}
	switch raw[20] {
	case 'v':
		e.Value = raw[headerLen:]
	case 'n':
		e.Missing = true
	case 'w':
		e.Value, e.Leased = raw[headerLen:], true
	case 'u':
		e.Missing, e.Leased = true, true
	case 't':
		e.Tombstone = true
	default:
		return Entry{}, fmt.Errorf("unknown kind %q", raw[20])
	}
	return e, nil
}

func versionArg(v uint64) string { return fmt.Sprintf("%020d", v) }

func ms(d time.Duration) int64 { return d.Milliseconds() }

// BeginFill returns the token to pass to Fill for a load of key that reads the origin after this
// call. It reads the epoch from Redis only the first time; if that fails, the fill is refused.
func (t *Tier) BeginFill(ctx context.Context, key string) FillToken {
	if t.closed.Load() || time.Now().UnixNano() < t.downUntil.Load() {
		return FillToken{} // Fill will fail fast and count it
	}
	e, _ := t.epoch(ctx, t.epochIndex(key))
	return FillToken{Epoch: e}
}

// Fill stores value at version for key unless Redis has seen a newer version of it, or the key
// was evicted (an EVICT event) within TombstoneTTL (false, nil), or Redis started a new epoch
// since tok was taken (false, ErrEpochChanged: a restart, flush or failover may have lost newer
// versions). It reports whether the fill was accepted.
func (t *Tier) Fill(ctx context.Context, tok FillToken, key string, version uint64, value []byte) (bool, error) {
	return t.fill(ctx, tok, key, version, "v", value, t.cfg.TTL)
}

// FillMissing caches for NegativeTTL that the origin has no value for key at version, under the
// same rules as Fill.
func (t *Tier) FillMissing(ctx context.Context, tok FillToken, key string, version uint64) (bool, error) {
	return t.fill(ctx, tok, key, version, "n", nil, t.cfg.NegativeTTL)
}

func (t *Tier) fill(ctx context.Context, tok FillToken, key string, version uint64, kind string, value []byte, ttl time.Duration) (bool, error) {
	if err := t.before(); err != nil {
		return false, err
	}
	i := t.epochIndex(key)
	if tok.Epoch == "" {
		// The load began before the tier knew the epoch: it cannot prove it began in this one.
		if _, err := t.epoch(ctx, i); err != nil {
			return false, err
		}
		t.epochFills.Add(1)
		return false, ErrEpochChanged
	}
	n, err := applyScript.Run(ctx, t.rdb, []string{t.Key(key), t.epochKeys[i]},
		versionArg(version), "fill", kind, "", value, ms(ttl), ms(t.cfg.TombstoneTTL), tok.Epoch).Int()
	if err != nil {
		return false, t.after(ctx, err)
	}
	if n < 0 {
		t.epochFills.Add(1)
		if _, err := t.fetchEpoch(ctx, i); err != nil {
			return false, err
		}
		return false, ErrEpochChanged
	}
	if n == 0 {
		t.stale.Add(1)
		return false, nil
	}
	t.fills.Add(1)
	return true, nil
}

// Lease is what Redis held for a key when a load from a versionless origin began: see BeginLease.
type Lease struct {
	// Epoch is the epoch the load began in ("" when the tier could not read it: the fill is then
	// refused).
	Epoch string
	// Version is the version a fill under the lease is stored at: that of the entry held when it
	// was taken (of any epoch, a tombstone included), or 0 when there was none.
	Version uint64
	// Held identifies the entry held: its SHA-1, or "none" when there was none.
	Held   string
	refuse bool // the entry was an EVICT's tombstone, which refuses every fill
}

// BeginLease returns a lease on key for a load that reads a versionless origin after this call.
// FillLeased stores the answer at Lease.Version only if Redis still holds exactly the same entry
// then. An error means the fill will be refused.
func (t *Tier) BeginLease(ctx context.Context, key string) (Lease, error) {
	if err := t.before(); err != nil {
		return Lease{}, err
	}
	epoch, err := t.epoch(ctx, t.epochIndex(key))
	if err != nil {
		return Lease{}, err
	}
	raw, err := t.rdb.Get(ctx, t.Key(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Lease{Epoch: epoch, Held: "none"}, nil
	}
	if err != nil {
		return Lease{}, t.after(ctx, err)
	}
	l := Lease{Epoch: epoch, Held: fmt.Sprintf("%x", sha1.Sum(raw))}
	e, err := decode(raw)
	if err != nil {
		return Lease{}, fmt.Errorf("redistier: key %q: %w", key, err)
	}
	l.Version = e.Version
	l.refuse = e.Tombstone && len(raw) > headerLen && raw[headerLen] == 'x'
	return l, nil
}

// FillLeased stores an answer from a versionless origin (value, or with missing a not-found)
// at l.Version, if Redis holds exactly the entry it held when l was taken (true), and the epoch
// is the same (else false, ErrEpochChanged). It is refused while an EVICT's tombstone lives.
// Get returns it with Leased set; an event above l.Version evicts it, even one carrying a value
// under a refresh policy (that value may be older). Nodes from before leases cannot decode it,
// and read the key from the origin.
func (t *Tier) FillLeased(ctx context.Context, l Lease, key string, value []byte, missing bool) (bool, error) {
	if err := t.before(); err != nil {
		return false, err
	}
	if l.refuse {
		t.stale.Add(1)
		return false, nil
	}
	kind, ttl := "w", t.cfg.TTL
	if missing {
		kind, ttl, value = "u", t.cfg.NegativeTTL, nil
	}
	i := t.epochIndex(key)
	if l.Epoch == "" {
		if _, err := t.epoch(ctx, i); err != nil {
			return false, err
		}
		t.epochFills.Add(1)
		return false, ErrEpochChanged
	}
	n, err := applyScript.Run(ctx, t.rdb, []string{t.Key(key), t.epochKeys[i]},
		versionArg(l.Version), "lease", kind, l.Held, value, ms(ttl), ms(t.cfg.TombstoneTTL), l.Epoch).Int()
	if err != nil {
		return false, t.after(ctx, err)
	}
	switch {
	case n < 0:
		t.epochFills.Add(1)
		if _, err := t.fetchEpoch(ctx, i); err != nil {
			return false, err
		}
		return false, ErrEpochChanged
	case n == 0:
		t.stale.Add(1)
		return false, nil
	}
	t.fills.Add(1)
	return true, nil
}

// Drop evicts whatever Redis holds for key, keeping its version as a tombstone marked as
// FillLeased's evictions are (no event's value is written for the key while it lives). A node
// calls it when Redis did not take an answer from a versionless origin that it served: Redis may
// hold an older answer at the same or a higher version. Evicting is always safe.
func (t *Tier) Drop(ctx context.Context, key string) error {
	if err := t.before(); err != nil {
		return err
	}
	i := t.epochIndex(key)
	for range 2 {
		epoch, err := t.epoch(ctx, i)
		if err != nil {
			return err
		}
		n, err := applyScript.Run(ctx, t.rdb, []string{t.Key(key), t.epochKeys[i]},
			versionArg(0), "drop", "", "", newNonce(), ms(t.cfg.TTL), ms(t.cfg.TombstoneTTL), epoch).Int()
		if err != nil {
			return t.after(ctx, err)
		}
		if n >= 0 {
			return nil
		}
		if _, err := t.fetchEpoch(ctx, i); err != nil { // a new epoch: drop in it
			return err
		}
	}
	return ErrEpochChanged
}

// newNonce returns 16 random hex characters.
func newNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
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
		NewEpochs: t.newEpochs.Load(), EpochFillsRejected: t.epochFills.Load(), OldEpochReads: t.oldReads.Load(),
	}
}
