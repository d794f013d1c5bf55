package redistier

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachewire/cachewire/internal/fault"
	"github.com/cachewire/cachewire/invalidation"
)

// TestRedisClusterFailoverStartsNewEpochs, on a real Redis Cluster (CACHEWIRE_TEST_REDIS_CLUSTER,
// controlled by scripts/redis.sh with CACHEWIRE_REDIS_NODES set: .ci/run's cluster stage): a
// master acknowledges a tombstone its replica never got (the replica is paused), then dies, and
// the replica is promoted holding the value the tombstone replaced. The promoted replica is
// another server process, so the tier must see new epochs for its slots: the old value is not
// served, and a fill whose load began before the failover is refused. Without per-node epoch
// stamps in cluster mode the tier serves the old value: a node that applied the tombstone would
// go back in time.
func TestRedisClusterFailoverStartsNewEpochs(t *testing.T) {
	seeds, ctl := os.Getenv("CACHEWIRE_TEST_REDIS_CLUSTER"), fault.Script(os.Getenv("CACHEWIRE_TEST_REDIS_CTL"))
	if seeds == "" || ctl == "" {
		t.Skip("needs a real Redis Cluster: CACHEWIRE_TEST_REDIS_CLUSTER and CACHEWIRE_TEST_REDIS_CTL (.ci/run's cluster stage sets them)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prefix := "cwtest:failover:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	addrs := strings.Split(seeds, ",")
	var epochs int
	tier, err := New(Config{Addrs: addrs, Cluster: true, KeyPrefix: prefix, Backoff: 50 * time.Millisecond,
		OnNewEpoch: func() { epochs++ }})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer admin.Close()

	const key = "user:7"
	if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, key), key, 5, []byte("old")); err != nil || !ok {
		t.Fatalf("fill v5: accepted=%v err=%v", ok, err)
	}
	if e, found, err := tier.Get(ctx, key); err != nil || !found || e.Version != 5 {
		t.Fatalf("get before the failover: %+v found=%v err=%v", e, found, err)
	}
	master, replica := nodesOf(t, ctx, admin, tier.Key(key))
	mNode, rNode := nodeNumber(t, ctl, master), nodeNumber(t, ctl, replica)
	// The replica has v5 (WAIT), then stops replicating: the tombstone reaches the master only.
	mc := redis.NewClient(&redis.Options{Addr: master})
	defer mc.Close()
	rc := redis.NewClient(&redis.Options{Addr: replica})
	defer rc.Close()
	// A replica that rejoined (an earlier scenario's killed master) may still be syncing.
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := rc.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not in sync with its master within 30s: %v\n%s", replica, err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, err := mc.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT for the replica: %d %v", n, err)
	}
	rpid, err := strconv.Atoi(mustOutput(t, ctl, "pid", rNode))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(rpid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = syscall.Kill(rpid, syscall.SIGCONT)
		}
	}()
	// A paused replica still receives what the master sends into its socket: the master drops
	// the link instead, so the tombstone goes into the replication backlog only.
	if err := mc.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatalf("dropping the replication link: %v", err)
	}
	tok := tier.BeginFill(ctx, key) // a slow load reads v5 from the origin ...
	if _, err := tier.Apply(ctx, &invalidation.Event{Key: key, Version: 6, Op: invalidation.OpDelete}, invalidation.RefreshHeld); err != nil {
		t.Fatal(err)
	}
	if e, found, _ := tier.Get(ctx, key); found || !e.Tombstone || e.Version != 6 {
		t.Fatalf("after the delete at v6: %+v found=%v, want a tombstone at 6", e, found)
	}
	// ... the master dies with the tombstone, and the replica (which never got it) takes over.
	if err := ctl.Run("kill", mNode); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ctl.Run("start-node", mNode); err != nil {
			t.Errorf("restarting the killed master: %v", err)
		}
	}()
	_ = syscall.Kill(rpid, syscall.SIGCONT)
	resumed = true
	if err := ctl.Run("failover-wait", mNode); err != nil {
		t.Fatal(err)
	}
	raw, err := rc.Get(ctx, tier.Key(key)).Result()
	if err != nil || !strings.Contains(raw, "old") {
		t.Fatalf("the promoted replica holds %q (%v): the test did not lose the tombstone", raw, err)
	}
	var e Entry
	var found bool
	deadline = time.Now().Add(30 * time.Second)
	for {
		e, found, err = tier.Get(ctx, key)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the tier backs off while the cluster heals
	}
	if err != nil {
		t.Fatalf("get after the failover: %v", err)
	}
	if found {
		t.Fatalf("after the failover the tier serves %q at v%d: the tombstone at 6 was lost and the promoted replica's old value came back", e.Value, e.Version)
	}
	if !e.OldEpoch || e.Version != 5 {
		t.Fatalf("after the failover: %+v, want the old value at 5 marked as of an old epoch", e)
	}
	if ok, err := tier.Fill(ctx, tok, key, 5, []byte("old")); ok || !errors.Is(err, ErrEpochChanged) {
		t.Fatalf("fill begun before the failover: accepted=%v err=%v, want refused with ErrEpochChanged", ok, err)
	}
	if epochs == 0 {
		t.Fatal("OnNewEpoch was not called")
	}
	if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, key), key, 6, nil); err != nil || !ok {
		t.Fatalf("a fill begun after the failover: accepted=%v err=%v", ok, err)
	}
}

// nodesOf returns the master serving key's slot and one of its replicas.
func nodesOf(t *testing.T, ctx context.Context, c *redis.ClusterClient, key string) (master, replica string) {
	t.Helper()
	shards, err := c.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	s := int64(Slot(key))
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if s < r.Start || s > r.End {
				continue
			}
			for _, n := range sh.Nodes {
				addr := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
				switch {
				case n.Role == "master":
					master = addr
				case n.Role == "replica":
					replica = addr
				}
			}
			if master != "" && replica != "" {
				return master, replica
			}
		}
	}
	t.Fatalf("no master with a replica serves slot %d: %+v", s, shards)
	return "", ""
}

func nodeNumber(t *testing.T, ctl fault.Script, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return mustOutput(t, ctl, "node-of", port)
}

func mustOutput(t *testing.T, ctl fault.Script, verb string, args ...string) string {
	t.Helper()
	out, err := ctl.Output(verb, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
