package redistier

import (
	"context"
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

// TestReview2ClusterRepromotedMasterStartsNewEpochs: a master M is demoted to a replica without
// a restart (a manual CLUSTER FAILOVER, or a partition after which it rejoins as a replica of
// its promoted replica R), so its server process (run_id) stays the same. Later R acknowledges
// a tombstone M never gets, R dies, and M is promoted again. M is then a replica promoted after
// its master died, and must start new epochs for its slots (invariant 11), but the tier's
// clusterNode for M still remembers M's run_id as "stamped" from the first time it was master,
// so it never checks M again: the entry the tombstone replaced is served.
func TestReview2ClusterRepromotedMasterStartsNewEpochs(t *testing.T) {
	seeds, ctl := os.Getenv("CACHEWIRE_TEST_REDIS_CLUSTER"), fault.Script(os.Getenv("CACHEWIRE_TEST_REDIS_CTL"))
	if seeds == "" || ctl == "" {
		t.Skip("needs a real Redis Cluster: CACHEWIRE_TEST_REDIS_CLUSTER and CACHEWIRE_TEST_REDIS_CTL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prefix := "cwtest:repromote:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	addrs := strings.Split(seeds, ",")
	tier, err := New(Config{Addrs: addrs, Cluster: true, KeyPrefix: prefix, Backoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer admin.Close()

	const key = "user:9"
	getEventually := func() (Entry, bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			e, found, err := tier.Get(ctx, key)
			if err == nil {
				return e, found
			}
			if time.Now().After(deadline) {
				t.Fatalf("get: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitLink := func(c *redis.Client) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			info, err := c.Info(ctx, "replication").Result()
			if err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not a synced replica within 30s: %v\n%s", c.Options().Addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, key), key, 5, []byte("old")); err != nil || !ok {
		t.Fatalf("fill v5: accepted=%v err=%v", ok, err)
	}
	if _, found := getEventually(); !found {
		t.Fatal("v5 not found")
	}
	m, r := nodesOf(t, ctx, admin, tier.Key(key))
	rNode := nodeNumber(t, ctl, r)
	mc := redis.NewClient(&redis.Options{Addr: m})
	defer mc.Close()
	rc := redis.NewClient(&redis.Options{Addr: r})
	defer rc.Close()
	waitLink(rc)

	// 1. M is demoted without a restart: R takes over by a manual failover.
	if err := rc.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER on %s: %v", r, err)
	}
	waitLink(mc)
	// The tier follows to R (R is another process: its slots start new epochs), and the
	// value is filled again in R's epoch.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := tier.Fill(ctx, tier.BeginFill(ctx, key), key, 5, []byte("old"))
		if err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fill v5 on R: accepted=%v err=%v", ok, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e, found := getEventually(); !found || e.Version != 5 {
		t.Fatalf("v5 on R: %+v found=%v", e, found)
	}
	waitLink(mc)
	if n, err := rc.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT for M: %d %v", n, err)
	}

	// 2. R acknowledges a tombstone that M (paused, its link dropped) never gets.
	mpid, err := strconv.Atoi(mustOutput(t, ctl, "pid", nodeNumber(t, ctl, m)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(mpid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = syscall.Kill(mpid, syscall.SIGCONT)
		}
	}()
	if err := rc.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatalf("dropping the replication link: %v", err)
	}
	if _, err := tier.Apply(ctx, &invalidation.Event{Key: key, Version: 6, Op: invalidation.OpDelete}, invalidation.RefreshHeld); err != nil {
		t.Fatal(err)
	}
	if e, found := getEventually(); found || !e.Tombstone || e.Version != 6 {
		t.Fatalf("after the delete at v6: %+v found=%v, want a tombstone at 6", e, found)
	}

	// 3. R dies; M (the same process as when the tier first stamped it) is promoted again.
	if err := ctl.Run("kill", rNode); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ctl.Run("start-node", rNode); err != nil {
			t.Errorf("restarting the killed node: %v", err)
		}
	}()
	_ = syscall.Kill(mpid, syscall.SIGCONT)
	resumed = true
	if err := ctl.Run("failover-wait", rNode); err != nil {
		t.Fatal(err)
	}
	raw, err := mc.Get(ctx, tier.Key(key)).Result()
	if err != nil || !strings.Contains(raw, "old") {
		t.Fatalf("the re-promoted M holds %q (%v): the test did not lose the tombstone", raw, err)
	}
	if e, found := getEventually(); found {
		t.Fatalf("after M was promoted again the tier serves %q at v%d: the tombstone at 6 was lost and M's slots did not start new epochs (clusterNode.run still names M's run_id from its first term as master)", e.Value, e.Version)
	}
}

// TestReview2ClusterSeedByHostnameNeverStamps: go-redis replaces a loopback address in the
// slot map by the seed's host when the seed is not a loopback address (replaceLoopbackHost), and
// a node may also be reached under any other address than the one CLUSTER SLOTS reports (NAT,
// hostnames, TLS port 0). clusterNode.addr is then never equal to the slot map's address, so
// stampSlots finds no slot "owned", n.run stays nil, and (1) no master's slots are ever stamped
// (a failover is not noticed: invariant 11), (2) every command to every master runs INFO and
// CLUSTER SLOTS first, one at a time under the node's mutex. Here the seeds use this machine's
// hostname, which /etc/hosts resolves to 127.0.0.1 (CACHEWIRE_TEST_LOOPBACK_HOST overrides it).
func TestReview2ClusterSeedByHostnameNeverStamps(t *testing.T) {
	seeds := os.Getenv("CACHEWIRE_TEST_REDIS_CLUSTER")
	if seeds == "" {
		t.Skip("needs a real Redis Cluster: CACHEWIRE_TEST_REDIS_CLUSTER")
	}
	host := os.Getenv("CACHEWIRE_TEST_LOOPBACK_HOST")
	if host == "" {
		host, _ = os.Hostname()
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 || !ips[0].IsLoopback() || host == "localhost" {
		t.Skipf("needs a host name other than localhost that resolves to a loopback address (%q: %v %v)", host, ips, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var addrs []string
	for _, a := range strings.Split(seeds, ",") {
		_, port, _ := net.SplitHostPort(a)
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	prefix := "cwtest:hostseed:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	tier, err := New(Config{Addrs: addrs, Cluster: true, KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(seeds, ",")})
	defer admin.Close()
	const key = "user:11"
	if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, key), key, 5, []byte("v")); err != nil || !ok {
		t.Fatalf("fill: %v %v", ok, err)
	}
	m, _ := nodesOf(t, ctx, admin, tier.Key(key))
	mc := redis.NewClient(&redis.Options{Addr: m})
	defer mc.Close()
	infoCalls := func() int {
		s, err := mc.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(s, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_info:calls="); ok {
				n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
				return n
			}
		}
		return 0
	}
	before := infoCalls()
	const gets = 50
	for range gets {
		if _, _, err := tier.Get(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	extra := infoCalls() - before - 1 // our own INFO
	rid := runIDOf(ctx, mc)
	ep, err := mc.Get(ctx, tier.epochKeys[Slot(tier.Key(key))]).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(ep, ":"+rid) || extra >= gets {
		t.Fatalf("seeds %v: the epoch key of the key's slot on master %s is %q, not stamped with its run_id %s; %d GETs made the tier run INFO %d times on it (a check before every command)",
			addrs, m, ep, rid, gets, extra)
	}
}
