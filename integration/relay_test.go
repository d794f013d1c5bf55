package integration

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/outbox"
)

// relayProcess runs cmd/relay against the test's outbox; it is SIGKILLed when the test ends.
func relayProcess(t *testing.T, dsn string, brokers []string, topic string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "relay"), "--postgres-dsn", dsn, "--kafka-brokers", brokers[0], "--topic", topic,
		"--poll-interval", "100ms", "--http-addr", "-", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// TestRelaySIGKILLedLosesNothing: two relay processes share one outbox while a service commits
// 300 changes; one relay is SIGKILLed a third of the way (and a new one started), the other two
// thirds of the way, whichever was publishing. Every committed change reaches Kafka (at least
// once: a relay killed between Kafka's ack and its delete publishes those rows again), and the
// outbox ends empty.
func TestRelaySIGKILLedLosesNothing(t *testing.T) {
	p := testenv.NewPostgres(t)
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "outbox", 3)
	db := p.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := outbox.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	sub, err := invalidation.NewSubscriber(invalidation.SubscriberConfig{Brokers: k.Brokers, Topics: []string{topic},
		FromBeginning: true, MaxWait: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		Sink: invalidation.SinkFuncs{Apply: func(_ string, _ int, evs []invalidation.Event) {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range evs {
				seen[fmt.Sprintf("%s@%d", e.Key, e.Version)] = true
			}
		}}})
	if err != nil {
		t.Fatal(err)
	}
	subDone := make(chan error, 1)
	go func() { subDone <- sub.Run(ctx) }()
	defer func() { sub.Close(); <-subDone }()

	a := relayProcess(t, p.DSN, k.Brokers, topic)
	b := relayProcess(t, p.DSN, k.Brokers, topic)
	const n = 300
	for i := range n {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		e := invalidation.Event{Key: fmt.Sprintf("k%d", i%20), Version: uint64(i + 1), Op: invalidation.OpUpsert,
			Value: []byte(fmt.Sprint("v", i+1)), HasValue: true}
		if err := outbox.Enqueue(ctx, tx, e); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		switch i {
		case n / 3:
			_ = a.Process.Kill()
			relayProcess(t, p.DSN, k.Brokers, topic)
		case 2 * n / 3:
			_ = b.Process.Kill()
		}
	}
	testenv.WaitFor(t, 2*time.Minute, func() string {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		var left int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM cachewire_outbox`).Scan(&left); err != nil {
			return err.Error()
		}
		if got != n || left != 0 {
			return fmt.Sprintf("%d of %d committed changes reached Kafka; %d rows left in the outbox", got, n, left)
		}
		return ""
	})
}
