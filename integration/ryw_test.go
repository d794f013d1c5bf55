package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/internal/testenv"
)

// TestReadYourWritesAcrossNodes: sessions interleave Puts and Gets over shared keys, each read
// going through a different node; no read may return a version older than one the same session
// wrote (or already read) for that key.
func TestReadYourWritesAcrossNodes(t *testing.T) {
	k := testenv.NewKafka(t)
	r := testenv.NewRedis(t)
	topic := k.CreateTopic(t, "events", 3)
	c, err := embedded.Start(embedded.Config{Nodes: 3, Brokers: k.Brokers, Kafka: k.Conn, RedisAddr: r.Addr, RedisTLS: r.TLS, RedisUsername: r.Username, RedisPassword: r.Password, RedisPrefix: r.Prefix,
		GroupID: testenv.TopicName(t, "l2"), Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := client.NewWriter(c.WriterAddr, client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var caches []*client.Cache
	for _, addr := range c.NodeAddrs {
		cc, err := client.NewCache(addr, client.WithTimeout(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		caches = append(caches, cc)
	}

	const sessions, opsPerSession = 8, 150
	keys := []string{"k0", "k1", "k2", "k3", "k4"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var violations []string
	var reads, writes int
	var wg sync.WaitGroup
	for s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(s), 42))
			sess := client.NewSession(caches[s%len(caches)], w)
			for op := 0; op < opsPerSession && ctx.Err() == nil; op++ {
				key := keys[rng.IntN(len(keys))]
				if rng.IntN(10) < 4 {
					var opts []client.WriteOption
					if rng.IntN(2) == 0 {
						opts = append(opts, client.NoWait()) // the event may still be in flight
					}
					if _, err := sess.Put(ctx, key, []byte(fmt.Sprintf("s%d-op%d", s, op)), opts...); err != nil {
						t.Errorf("session %d Put: %v", s, err)
						return
					}
					mu.Lock()
					writes++
					mu.Unlock()
					continue
				}
				via := sess.Via(caches[rng.IntN(len(caches))])
				floor := sess.Version(key)
				it, err := via.Get(ctx, key)
				if err != nil {
					t.Errorf("session %d Get: %v", s, err)
					return
				}
				mu.Lock()
				reads++
				if it.Version < floor {
					violations = append(violations, fmt.Sprintf("session %d read %s@%d from %s after writing or reading @%d", s, key, it.Version, it.Tier, floor))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(violations) > 0 {
		t.Fatalf("%d read-your-writes violations, first: %s", len(violations), violations[0])
	}
	if reads < sessions*opsPerSession/3 || writes < sessions*opsPerSession/5 {
		t.Fatalf("workload too small to mean anything: %d reads, %d writes", reads, writes)
	}
	t.Logf("%d sessions: %d reads, %d writes across %d nodes, no session read older than its own writes", sessions, reads, writes, len(caches))
}
