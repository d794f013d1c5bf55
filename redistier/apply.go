package redistier

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/cachewire/cachewire/invalidation"
)

func (t *Tier) eventArgs(e *invalidation.Event, p invalidation.Policy, epoch string) []any {
	kind, policy := "E", "evict"
	switch {
	case e.Op == invalidation.OpUpsert && e.HasValue:
		kind = "R"
	case e.Op == invalidation.OpEvict:
		kind = "X"
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
