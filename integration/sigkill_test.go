package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cachewire/cachewire/checker"
	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/redistier"
)

// TestNodeSIGKILLUnderLoad: the checker's workload runs against a writer process and three
// cachenode processes; one node is SIGKILLed mid-run and a new one started in its place. The
// checker must find no min_version violation, no stale read outside the fault, no session or
// node going back in time, no lost write, and every node and Redis converged once quiet.
func TestNodeSIGKILLUnderLoad(t *testing.T) {
	c := newCluster(t)
	w := startWriter(t, c.kafka.Flags(t), c.topic, filepath.Join(t.TempDir(), "w.db"), "--create-topic=false")
	nodeArgs := func() []string {
		return append(append(c.kafka.Flags(t), c.redis.Flags(t)...), "--topics", c.topic, "--group-id", c.group,
			"--origin", "grpc://"+w.grpc, "--max-staleness", "1s", "--log-level", "warn")
	}
	var mu sync.Mutex
	var caches []*client.Cache
	connect := func(p *proc) *client.Cache {
		cc, err := client.NewCache(p.grpc, client.WithTimeout(5*time.Second), client.WithRetries(4, 100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	var procs []*proc
	for range 3 {
		p := startProc(t, "cachenode", nodeArgs()...)
		procs = append(procs, p)
		caches = append(caches, connect(p))
	}
	writer, err := client.NewWriter(w.grpc, client.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()

	h := checker.NewHistory(1_000_000)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		checker.Workload{Sessions: 4, Keys: 6}.Run(ctx, h, writer, func() []*client.Cache {
			mu.Lock()
			defer mu.Unlock()
			return append([]*client.Cache(nil), caches...)
		})
	}()
	time.Sleep(1500 * time.Millisecond) // let the workload warm up before the fault
	h.FaultStart("SIGKILL node 1")
	if err := procs[1].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	replacement := startProc(t, "cachenode", nodeArgs()...)
	mu.Lock()
	caches[1] = connect(replacement)
	mu.Unlock()
	time.Sleep(time.Second) // the restarted node may lag by max_staleness
	h.FaultEnd("SIGKILL node 1")
	<-done

	keys := make([]string, 6)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	tier, err := redistier.New(redistier.Config{Addrs: []string{c.redis.Addr}, TLS: c.redis.TLS, Username: c.redis.Username, Password: c.redis.Password, KeyPrefix: c.redis.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	var finals []checker.Final
	testenv.WaitFor(t, 30*time.Second, func() string {
		finals = finals[:0]
		fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer fcancel()
		for _, k := range keys {
			f := checker.Final{Key: k}
			if it, err := writer.Get(fctx, k); err == nil {
				f.Origin = it.Version
			}
			for _, cc := range caches {
				it, err := cc.Get(fctx, k)
				if err != nil {
					return err.Error()
				}
				f.Nodes = append(f.Nodes, it.Version)
				if it.Version != f.Origin {
					return fmt.Sprintf("%s: a node serves %d, origin has %d", k, it.Version, f.Origin)
				}
			}
			e, found, err := tier.Get(fctx, k)
			if err != nil {
				return err.Error()
			}
			f.Redis, f.RedisValue = e.Version, found
			if found && e.Version != f.Origin {
				return fmt.Sprintf("%s: Redis holds %d, origin has %d", k, e.Version, f.Origin)
			}
			finals = append(finals, f)
		}
		return ""
	})
	ops, faults := h.Snapshot()
	r := checker.Check(ops, faults, 1500*time.Millisecond, finals)
	t.Log(r.Summary())
	if r.Puts < 20 || r.Gets < 50 {
		t.Fatalf("workload too small: %s", r.Summary())
	}
	if !r.OK() {
		for _, l := range [][]string{r.MinVersionViolations, r.StaleReads, r.NonMonotonicSession, r.NonMonotonicNode, r.LostWrites, r.NotConverged} {
			for i, v := range l {
				if i < 3 {
					t.Error(v)
				}
			}
		}
		t.Fatal(r.Summary())
	}
}
