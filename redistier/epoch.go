package redistier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

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
	tok, changed, old := t.learnQuiet(i, v, seq)
	if changed {
		t.newEpochs.Add(1)
		t.cfg.Logger.Warn("Redis is in a new epoch: entries and writes from before it are not trusted",
			"epoch_key", i, "old", old, "new", tok)
		if t.cfg.OnNewEpoch != nil {
			t.cfg.OnNewEpoch()
		}
	}
	return tok
}

// learnQuiet is learn without the log line and the OnNewEpoch call: it reports whether the
// epoch changed, and from which.
func (t *Tier) learnQuiet(i int, v string, seq uint64) (tok string, changed bool, was string) {
	tok = v
	if len(tok) > epochLen {
		tok = tok[:epochLen]
	}
	next := &learned{epoch: tok, seq: seq}
	for {
		old := t.epochs[i].Load()
		if old != nil && old.seq > seq {
			return old.epoch, false, "" // a later read already answered
		}
		if !t.epochs[i].CompareAndSwap(old, next) {
			continue
		}
		if old != nil && old.epoch != tok {
			return tok, true, old.epoch
		}
		return tok, false, ""
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

// runIDOf returns the run_id INFO server reports on cn, or "" (miniredis, or INFO denied).
func runIDOf(ctx context.Context, c infoer) string {
	rid, _ := runID(ctx, c)
	return rid
}

type infoer interface {
	Info(ctx context.Context, section ...string) *redis.StringCmd
}

// runID returns the run_id INFO server reports on c ("" when it reports none), or INFO's error.
func runID(ctx context.Context, c infoer) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v, nil
		}
	}
	return "", nil
}

// clusterNode watches one Redis Cluster node's server process for the tier. go-redis keeps a
// client per node, and opens connections to replicas too (it reads the slot map from any
// node), so a replica's pooled connections outlive its promotion: stamping on connect alone
// would miss it. So the node's first command after it was last seen as a master of an unknown
// process (and every new connection) checks which process it is, and the first check of a
// master process stamps the epochs of the slots it serves (stampSlots).
type clusterNode struct {
	t      *Tier
	addr   string
	client *redis.Client
	mu     sync.Mutex             // one check at a time; the others wait for it
	run    atomic.Pointer[string] // the run_id of the master process whose slots were stamped
	id     atomic.Pointer[string] // the node's cluster id (CLUSTER MYID), once checked
}

type bypassKey struct{}

// newClusterClient is go-redis's NewClient for each cluster node, with the node's hooks.
func (t *Tier) newClusterClient(opt *redis.Options) *redis.Client {
	n := &clusterNode{t: t, addr: opt.Addr}
	opt.OnConnect = n.onConnect
	n.client = redis.NewClient(opt)
	n.client.AddHook(n)
	t.nodes.Store(n, struct{}{})
	return n.client
}

func (n *clusterNode) onConnect(ctx context.Context, cn *redis.Conn) error {
	if ctx.Value(bypassKey{}) != nil {
		return nil // a connection dialled for a check, which holds n.mu
	}
	return n.check(ctx, cn)
}

// check reads the process's run_id on c and, unless it is the one stamped, stamps its slots.
// A node is known by its cluster id, not its address: go-redis may name it by another one
// (a seed's host name for a loopback address, NAT).
func (n *clusterNode) check(ctx context.Context, c stampConn) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	ctx = context.WithValue(ctx, bypassKey{}, true)
	rid, err := runID(ctx, c)
	if err != nil {
		return fmt.Errorf("redistier: reading the run_id of %s: %w", n.addr, err)
	}
	if rid == "" {
		return nil // only a lost epoch key starts a new epoch (as on a single server)
	}
	if p := n.run.Load(); p != nil && *p == rid {
		return nil
	}
	n.run.Store(nil)
	id, err := c.ClusterMyID(ctx).Result()
	if err != nil {
		return fmt.Errorf("redistier: reading the cluster id of %s: %w", n.addr, err)
	}
	n.id.Store(&id)
	owned, err := n.t.stampSlots(ctx, c, n.addr, id, rid)
	if err == nil && owned {
		n.run.Store(&rid)
	}
	return err
}

func (n *clusterNode) DialHook(next redis.DialHook) redis.DialHook { return next }

func (n *clusterNode) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "cluster" {
			err := next(ctx, cmd)
			if sc, ok := cmd.(*redis.ClusterSlotsCmd); ok && err == nil && ctx.Value(bypassKey{}) == nil {
				n.t.probe(ctx, sc.Val()) // go-redis read the slot map: before it is used
			}
			return err
		}
		if n.run.Load() == nil && ctx.Value(bypassKey{}) == nil {
			if err := n.recheck(ctx); err != nil {
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}

func (n *clusterNode) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if n.run.Load() == nil && ctx.Value(bypassKey{}) == nil {
			if err := n.recheck(ctx); err != nil {
				for _, c := range cmds {
					c.SetErr(err)
				}
				return err
			}
		}
		return next(ctx, cmds)
	}
}

// recheck checks the node through its own client (a replica's pooled connection after its
// promotion, or a master that owned no slot when it was last checked).
func (n *clusterNode) recheck(ctx context.Context) error {
	return n.check(ctx, n.client)
}

// probe runs on every slot map go-redis reads, before it uses it. A node stamped as a master
// may have been demoted and promoted again since, with no restart (a manual failover, a
// partition): the same process, so no new connection or run_id says so, yet it may lack writes
// its master in between acknowledged. So each stamped node is checked again unless the map
// names it a master and its first slot's epoch key still names its own process; a node that is
// checked again stamps its slots (their epoch keys name another process, or none).
func (t *Tier) probe(ctx context.Context, slots []redis.ClusterSlot) {
	ctx = context.WithValue(ctx, bypassKey{}, true)
	first := map[string]int{} // master id -> a slot it serves
	for _, r := range slots {
		if len(r.Nodes) > 0 {
			if _, ok := first[r.Nodes[0].ID]; !ok {
				first[r.Nodes[0].ID] = r.Start
			}
		}
	}
	t.nodes.Range(func(k, _ any) bool {
		n := k.(*clusterNode)
		run, id := n.run.Load(), n.id.Load()
		if run == nil || id == nil {
			return true
		}
		s, master := first[*id]
		if master && s < len(t.epochKeys) {
			v, err := n.client.Get(ctx, t.epochKeys[s]).Result()
			if err == nil && len(v) > epochLen+1 && v[epochLen+1:] == *run {
				return true
			}
		}
		n.run.CompareAndSwap(run, nil)
		return true
	})
}

// stampConn is what stampSlots needs of a connection or a node's client.
type stampConn interface {
	Info(ctx context.Context, section ...string) *redis.StringCmd
	ClusterSlots(ctx context.Context) *redis.ClusterSlotsCmd
	ClusterMyID(ctx context.Context) *redis.StringCmd
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	redis.Scripter
}

// stampSlots stamps, as onConnect does for a single server, the epoch of every slot the master
// at addr (cluster id id, the server process rid) serves, and reports whether it serves any. A replica
// promoted after its master died (which may have acknowledged writes it never replicated) is
// another server process, so its slots begin new epochs, and entries from before are not
// served. A replica, or a master the slot map names by another address, stamps nothing.
func (t *Tier) stampSlots(ctx context.Context, c stampConn, addr, id, rid string) (bool, error) {
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return false, fmt.Errorf("redistier: reading the slot map of %s: %w", addr, err)
	}
	var owned []int
	for _, r := range slots {
		if len(r.Nodes) == 0 || r.Nodes[0].ID != id {
			continue
		}
		for s := r.Start; s <= r.End && s < len(t.epochKeys); s++ {
			owned = append(owned, s)
		}
	}
	if len(owned) == 0 {
		return false, nil
	}
	if err := epochScript.Load(ctx, c).Err(); err != nil {
		return false, fmt.Errorf("redistier: loading the epoch script on %s: %w", addr, err)
	}
	seq := t.readSeq.Add(1)
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, s := range owned {
			epochScript.EvalSha(ctx, p, []string{t.epochKeys[s]}, newEpoch(), rid, "stamp")
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("redistier: stamping the epochs of %d slots on %s: %w", len(owned), addr, err)
	}
	changed := 0
	for i, cmd := range cmds {
		if v, err := cmd.(*redis.Cmd).Text(); err == nil {
			if _, ch, _ := t.learnQuiet(owned[i], v, seq); ch {
				changed++
			}
		}
	}
	if changed > 0 {
		t.newEpochs.Add(1)
		t.cfg.Logger.Warn("Redis Cluster master is another server process (a replica promoted, or a restart): its slots are in new epochs; entries and writes from before are not trusted",
			"addr", addr, "run_id", rid, "slots", len(owned), "new_epochs", changed)
		if t.cfg.OnNewEpoch != nil {
			t.cfg.OnNewEpoch()
		}
	}
	return true, nil
}

// onConnect runs on every new connection (single server and Sentinel): it reads the server's
// run_id and starts a new epoch if the one Redis holds was started by another server process.
func (t *Tier) onConnect(ctx context.Context, cn *redis.Conn) error {
	rid := runIDOf(ctx, cn)
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
