package redistier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachewire/cachewire/invalidation"
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
	// Username and Password authenticate, when set.
	Username, Password string
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

// Entry is what the tier holds for a key.
type Entry struct {
	Value   []byte
	Version uint64
	// Tombstone is true when the key was evicted at Version (Value is nil).
	Tombstone bool
	// Missing is true for a cached "not found" from the origin at Version.
	Missing bool
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
	// NewEpochs counts the times the tier saw Redis in a new epoch; EpochFillsRejected counts
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
		if !isCluster {
			onConnect = t.onConnect
		}
		t.rdb = redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs:                 cfg.Addrs,
			IsClusterMode:         cfg.Cluster,
			OnConnect:             onConnect,
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

// epochSuffix follows the prefix in the epoch key. 0xff never occurs in UTF-8, and keys must be
// UTF-8, so no cache key can collide with it.
const epochSuffix = "\xffepoch"

func newEpoch() string {
	var b [epochLen / 2]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// epochIndex returns which epoch covers key: the tier's only one, or its hash slot's.
func (t *Tier) epochIndex(key string) int {
	if len(t.epochKeys) == 1 {
		return 0
	}
	return int(Slot(t.Key(key)))
}

type learned struct {
	epoch string
	seq   uint64 // of the read that returned it
}

// learn records the epoch value v (as epochScript returns it), read by the read numbered seq,
// for index i, unless a read that began later already taught the tier an epoch. It reports a new
// epoch when it replaces a different known one, and returns the epoch the tier now holds.
func (t *Tier) learn(i int, v string, seq uint64) string {
	tok := v
	if len(tok) > epochLen {
		tok = tok[:epochLen]
	}
	next := &learned{epoch: tok, seq: seq}
	for {
		old := t.epochs[i].Load()
		if old != nil && old.seq > seq {
			return old.epoch // a later read already answered
		}
		if !t.epochs[i].CompareAndSwap(old, next) {
			continue
		}
		if old != nil && old.epoch != tok {
			t.newEpochs.Add(1)
			t.cfg.Logger.Warn("Redis is in a new epoch: entries and writes from before it are not trusted",
				"epoch_key", i, "old", old.epoch, "new", tok)
			if t.cfg.OnNewEpoch != nil {
				t.cfg.OnNewEpoch()
			}
		}
		return tok
	}
}

// fetchEpoch reads (or starts) the epoch for index i.
func (t *Tier) fetchEpoch(ctx context.Context, i int) (string, error) {
	rid := ""
	if p := t.runID.Load(); p != nil {
		rid = *p
	}
	seq := t.readSeq.Add(1)
	v, err := epochScript.Run(ctx, t.rdb, []string{t.epochKeys[i]}, newEpoch(), rid, "get").Text()
	if err != nil {
		return "", t.after(ctx, err)
	}
	return t.learn(i, v, seq), nil
}

// epoch returns the epoch the tier believes index i is in, reading it once if unknown.
func (t *Tier) epoch(ctx context.Context, i int) (string, error) {
	if p := t.epochs[i].Load(); p != nil {
		return p.epoch, nil
	}
	return t.fetchEpoch(ctx, i)
}

// onConnect runs on every new connection (single server and Sentinel): it reads the server's
// run_id and starts a new epoch if the one Redis holds was started by another server process.
func (t *Tier) onConnect(ctx context.Context, cn *redis.Conn) error {
	rid := ""
	if info, err := cn.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
				rid = v
			}
		}
	}
	if rid == "" {
		// miniredis, or a user without INFO: a flush or an empty restart is still noticed.
		if t.runID.Load() == nil {
			t.cfg.Logger.Debug("Redis does not report a run_id: only a lost epoch key starts a new L2 epoch")
		}
	}
	t.runID.Store(&rid)
	seq := t.readSeq.Add(1)
	v, err := epochScript.Run(ctx, cn, []string{t.epochKeys[0]}, newEpoch(), rid, "stamp").Text()
	if err != nil {
		return fmt.Errorf("redistier: reading the epoch on connect: %w", err)
	}
	t.learn(0, v, seq)
	return nil
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

// Fill stores value at version for key unless Redis has seen a newer version of it (false, nil),
// or started a new epoch since tok was taken (false, ErrEpochChanged: a restart, flush or
// failover may have lost newer versions). It reports whether the fill was accepted.
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

func (t *Tier) eventArgs(e *invalidation.Event, p invalidation.Policy, epoch string) []any {
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
	return []any{versionArg(e.Version), "event", kind, policy, e.Value, ms(t.cfg.TTL), ms(t.cfg.TombstoneTTL), epoch}
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
	a := invalidation.Ignore
	_, _, err := t.applyBatch(ctx, []invalidation.Event{*e}, p, func(n int64) { a = action(n) })
	return a, err
}

// ApplyBatch applies valid events in order, pipelined (one round trip per Redis node), and
// reports how many changed the tier and how many were ignored. On error none or some of the
// events were applied; applying them again is harmless. Events are applied in the epoch Redis is
// in: an apply that began in an older one is refused by the script and run again, once, in the
// new epoch (ErrEpochChanged if Redis changed epochs again meanwhile).
func (t *Tier) ApplyBatch(ctx context.Context, events []invalidation.Event, p invalidation.Policy) (applied, ignored int, err error) {
	return t.applyBatch(ctx, events, p, nil)
}

func (t *Tier) applyBatch(ctx context.Context, events []invalidation.Event, p invalidation.Policy, each func(int64)) (applied, ignored int, err error) {
	if len(events) == 0 {
		return 0, 0, nil
	}
	if err := t.before(); err != nil {
		return 0, 0, err
	}
	idx := make([]int, len(events))
	for i := range events {
		idx[i] = t.epochIndex(events[i].Key)
	}
	for attempt := 0; ; attempt++ {
		epochs := make([]string, len(events))
		for i := range events {
			if epochs[i], err = t.epoch(ctx, idx[i]); err != nil {
				return 0, 0, err
			}
		}
		run := func() ([]redis.Cmder, error) {
			return t.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				for i := range events {
					applyScript.EvalSha(ctx, pipe, []string{t.Key(events[i].Key), t.epochKeys[idx[i]]}, t.eventArgs(&events[i], p, epochs[i])...)
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
		applied, ignored = 0, 0
		refreshed := map[int]bool{}
		for i, c := range cmds {
			n, _ := c.(*redis.Cmd).Int64()
			switch {
			case n < 0:
				refreshed[idx[i]] = true
			case action(n) == invalidation.Ignore:
				ignored++
			default:
				applied++
			}
			if each != nil {
				each(n)
			}
		}
		if len(refreshed) == 0 {
			return applied, ignored, nil
		}
		for i := range refreshed {
			if _, err := t.fetchEpoch(ctx, i); err != nil {
				return 0, 0, err
			}
		}
		if attempt == 1 {
			return 0, 0, ErrEpochChanged
		}
	}
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
		NewEpochs: t.newEpochs.Load(), EpochFillsRejected: t.epochFills.Load(), OldEpochReads: t.oldReads.Load(),
	}
}
