package invalidation_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/redistier"
)

func startGroupMember(t *testing.T, k *testenv.Kafka, topic, group string, tier *redistier.Tier) (*invalidation.GroupApplier, chan error) {
	t.Helper()
	g, err := invalidation.NewGroupApplier(invalidation.GroupApplierConfig{
		Brokers: k.Brokers, Kafka: k.Conn, Topics: []string{topic}, GroupID: group, Logger: quietLogger(),
		HeartbeatInterval: 200 * time.Millisecond, SessionTimeout: 6 * time.Second,
		Applier: invalidation.BatchApplierFunc(func(ctx context.Context, events []invalidation.Event) error {
			_, _, err := tier.ApplyBatch(ctx, events, invalidation.RefreshAll)
			return err
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Run(context.Background()) }()
	return g, errc
}

// TestGroupApplierSurvivesAMemberLeaving: two nodes share the L2 consumer group; one closes in
// the middle of the stream, and every key still ends at its newest version in Redis.
func TestGroupApplierSurvivesAMemberLeaving(t *testing.T) {
	k := testenv.NewKafka(t)
	r := testenv.NewRedis(t)
	topic := k.CreateTopic(t, "events", 4)
	group := testenv.TopicName(t, "group")
	ctx := testCtx(t)
	tier, err := redistier.New(redistier.Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()

	a, aerr := startGroupMember(t, k, topic, group, tier)
	b, berr := startGroupMember(t, k, topic, group, tier)
	defer func() {
		b.Close()
		if err := <-berr; err != nil {
			t.Errorf("member b: %v", err)
		}
	}()
	pub := newPublisher(t, k, topic)

	const keys = 20
	publishRound := func(round uint64) {
		t.Helper()
		batch := make([]invalidation.Event, 0, keys)
		for i := range keys {
			batch = append(batch, upsert(fmt.Sprintf("key-%d", i), round, fmt.Sprintf("r%d", round)))
		}
		if err := pub.Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	// Publish until both members have applied events, so that both hold partitions when one
	// leaves (bounded in rounds and time).
	round := uint64(0)
	deadline := time.Now().Add(30 * time.Second)
	for a.Stats().Events == 0 || b.Stats().Events == 0 {
		if round >= 3000 || time.Now().After(deadline) {
			t.Fatalf("after %d rounds the group never split the partitions: a applied %d, b %d", round, a.Stats().Events, b.Stats().Events)
		}
		round++
		publishRound(round)
	}
	appliedByA := a.Stats().Events
	if err := a.Close(); err != nil {
		t.Fatalf("close member a: %v", err)
	}
	if err := <-aerr; err != nil {
		t.Fatalf("member a: %v", err)
	}
	// The rest of the stream, with a gone: b must take over a's partitions.
	for range 5 {
		round++
		publishRound(round)
	}
	rounds := round
	testenv.WaitFor(t, 60*time.Second, func() string {
		for i := range keys {
			key := fmt.Sprintf("key-%d", i)
			e, found, err := tier.Get(ctx, key)
			if err != nil || !found || e.Version != rounds || string(e.Value) != fmt.Sprintf("r%d", rounds) {
				return fmt.Sprintf("%s in Redis: %+v found=%v err=%v; want version %d", key, e, found, err, rounds)
			}
		}
		return ""
	})
	t.Logf("%d rounds; member a applied %d events before leaving, member b %d", rounds, appliedByA, b.Stats().Events)
}

// TestGroupApplierRetriesUntilRedisIsBack: while the tier fails, nothing is committed; once it
// recovers, the held batch is applied.
func TestGroupApplierRetriesUntilRedisIsBack(t *testing.T) {
	k := testenv.NewKafka(t)
	r := testenv.NewRedis(t)
	topic := k.CreateTopic(t, "events", 1)
	ctx := testCtx(t)
	tier, err := redistier.New(redistier.Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	failing := make(chan struct{})
	var calls int
	g, err := invalidation.NewGroupApplier(invalidation.GroupApplierConfig{
		Brokers: k.Brokers, Kafka: k.Conn, Topics: []string{topic}, GroupID: testenv.TopicName(t, "group"), Logger: quietLogger(),
		Applier: invalidation.BatchApplierFunc(func(ctx context.Context, events []invalidation.Event) error {
			calls++
			select {
			case <-failing:
			default:
				if calls >= 3 {
					close(failing)
				}
				return redistier.ErrUnavailable
			}
			_, _, err := tier.ApplyBatch(ctx, events, invalidation.RefreshAll)
			return err
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Run(context.Background()) }()
	defer func() {
		g.Close()
		<-errc
	}()
	pub := newPublisher(t, k, topic)
	if err := pub.Publish(ctx, upsert("k", 1, "v")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if e, found, _ := tier.Get(ctx, "k"); !found || e.Version != 1 {
			return "k not applied"
		}
		// The applier counts the event once ApplyBatch has returned, a moment after Redis has it.
		if s := g.Stats(); s.Events != 1 {
			return fmt.Sprintf("k applied, stats %+v", s)
		}
		return ""
	})
	if s := g.Stats(); s.Retries < 3 {
		t.Fatalf("stats %+v: want at least 3 retries, then 1 event applied", s)
	}
}

// TestGroupApplierShrinksABatchThatKeepsFailing: a store that times out on any batch larger than
// 4 events (a slow Redis) would make the applier retry the same large batch forever; it retries
// in halves instead, and every event is applied.
func TestGroupApplierShrinksABatchThatKeepsFailing(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "events", 1)
	ctx := testCtx(t)
	pub := newPublisher(t, k, topic)
	for i := range 50 {
		if err := pub.Publish(ctx, upsert(fmt.Sprint("k", i), 1, "v")); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	applied := map[string]bool{}
	g, err := invalidation.NewGroupApplier(invalidation.GroupApplierConfig{
		Brokers: k.Brokers, Kafka: k.Conn, Topics: []string{topic}, GroupID: testenv.TopicName(t, "group"), Logger: quietLogger(),
		Linger: 500 * time.Millisecond, // the 50 events arrive as one batch
		Applier: invalidation.BatchApplierFunc(func(ctx context.Context, events []invalidation.Event) error {
			if len(events) > 4 {
				return redistier.ErrUnavailable // i/o timeout
			}
			mu.Lock()
			defer mu.Unlock()
			for _, e := range events {
				applied[e.Key] = true
			}
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Run(context.Background()) }()
	defer func() {
		g.Close()
		<-errc
	}()
	testenv.WaitFor(t, 30*time.Second, func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(applied) != 50 {
			return fmt.Sprintf("%d of 50 keys applied (stats %+v)", len(applied), g.Stats())
		}
		return ""
	})
}
