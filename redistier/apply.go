package redistier

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/cachewire/cachewire/invalidation"
)

// eventKind is an event's kind for eventsScript: R (an UPSERT carrying its value), X (an
// EVICT) or E (anything else: evict).
func eventKind(e *invalidation.Event) string {
	switch {
	case e.Op == invalidation.OpUpsert && e.HasValue:
		return "R"
	case e.Op == invalidation.OpEvict:
		return "X"
	}
	return "E"
}

func policyArg(p invalidation.Policy) string {
	switch p {
	case invalidation.RefreshHeld:
		return "held"
	case invalidation.RefreshAll:
		return "all"
	}
	return "evict"
}

// maxScriptEvents bounds the events of one eventsScript call: Redis runs nothing else while a
// script runs, so a long batch is split to keep other clients' latency low.
const maxScriptEvents = 256

// scriptCall is one eventsScript call: events (indexes into the batch) that share epoch key idx.
type scriptCall struct {
	idx    int
	events []int
}

// scriptCalls groups a batch's events by epoch key, keeping their order within each group, in
// calls of at most maxScriptEvents.
func (t *Tier) scriptCalls(events []invalidation.Event) []scriptCall {
	var calls []scriptCall
	open := map[int]int{} // epoch key -> index in calls of its open call
	for i := range events {
		idx := t.epochIndex(events[i].Key)
		c, ok := open[idx]
		if !ok || len(calls[c].events) == maxScriptEvents {
			calls = append(calls, scriptCall{idx: idx})
			c = len(calls) - 1
			open[idx] = c
		}
		calls[c].events = append(calls[c].events, i)
	}
	return calls
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

// ApplyBatch applies valid events in order, one eventsScript call per epoch key (the tier, or
// each hash slot in cluster mode) of up to 256 events, all pipelined, and
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
	calls := t.scriptCalls(events)
	policy, ttl, tombTTL := policyArg(p), ms(t.cfg.TTL), ms(t.cfg.TombstoneTTL)
	for attempt := 0; ; attempt++ {
		epochs := make([]string, len(calls))
		for c := range calls {
			if epochs[c], err = t.epoch(ctx, calls[c].idx); err != nil {
				return 0, 0, err
			}
		}
		run := func() ([]redis.Cmder, error) {
			return t.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				for c, call := range calls {
					keys := make([]string, 1, 1+len(call.events))
					keys[0] = t.epochKeys[call.idx]
					args := make([]any, 4, 4+3*len(call.events))
					args[0], args[1], args[2], args[3] = epochs[c], policy, ttl, tombTTL
					for _, i := range call.events {
						e := &events[i]
						keys = append(keys, t.Key(e.Key))
						args = append(args, versionArg(e.Version), eventKind(e), e.Value)
					}
					eventsScript.EvalSha(ctx, pipe, keys, args...)
				}
				return nil
			})
		}
		cmds, err := run()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis restarted or its scripts were flushed: load them (on every Cluster master: a
			// replica runs no script, and a slow one must not fail the apply) and retry.
			if lerr := t.loadScript(ctx); lerr != nil {
				return 0, 0, t.after(ctx, lerr)
			}
			cmds, err = run()
		}
		if err != nil {
			return 0, 0, t.after(ctx, err)
		}
		results := make([]int64, len(events))
		var refused []int
		for c, cmd := range cmds {
			v, err := cmd.(*redis.Cmd).Result()
			if err != nil {
				return 0, 0, t.after(ctx, err)
			}
			rs, ok := v.([]any)
			if !ok || len(rs) != len(calls[c].events) {
				if n, isInt := v.(int64); isInt && n < 0 {
					refused = append(refused, calls[c].idx)
					continue
				}
				return 0, 0, fmt.Errorf("redistier: the events script answered %v for %d events", v, len(calls[c].events))
			}
			for j, i := range calls[c].events {
				results[i], _ = rs[j].(int64)
			}
		}
		if len(refused) > 0 {
			// An epoch changed under the batch: learn it, and apply the whole batch again
			// (applying an event twice changes nothing).
			for _, idx := range refused {
				if _, err := t.fetchEpoch(ctx, idx); err != nil {
					return 0, 0, err
				}
			}
			if attempt == 1 {
				return 0, 0, ErrEpochChanged
			}
			continue
		}
		applied, ignored = 0, 0
		for _, n := range results {
			if action(n) == invalidation.Ignore {
				ignored++
			} else {
				applied++
			}
			if each != nil {
				each(n)
			}
		}
		return applied, ignored, nil
	}
}

func (t *Tier) loadScript(ctx context.Context) error {
	if cc, ok := t.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return loadScripts(ctx, c) })
	}
	return loadScripts(ctx, t.rdb)
}

func loadScripts(ctx context.Context, c redis.Scripter) error {
	if err := applyScript.Load(ctx, c).Err(); err != nil {
		return err
	}
	return eventsScript.Load(ctx, c).Err()
}
