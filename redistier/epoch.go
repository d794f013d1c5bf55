package redistier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

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
