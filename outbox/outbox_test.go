package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/outbox"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func upsert(key string, v uint64, val string) invalidation.Event {
	return invalidation.Event{Key: key, Version: v, Op: invalidation.OpUpsert, Value: []byte(val), HasValue: true}
}

// startRelay runs a relay until the test ends.
func startRelay(t *testing.T, dsn string, k *testenv.Kafka, topic string, mods ...func(*outbox.RelayConfig)) *outbox.Relay {
	t.Helper()
	cfg := outbox.RelayConfig{DSN: dsn, Brokers: k.Brokers, Kafka: k.Conn, Topic: topic, PollInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
	for _, m := range mods {
		m(&cfg)
	}
	r, err := outbox.NewRelay(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- r.Run(context.Background()) }()
	t.Cleanup(func() {
		r.Close()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// readEvents reads n events from the start of a one-partition topic.
func readEvents(t *testing.T, k *testenv.Kafka, topic string, n int) []invalidation.Event {
	t.Helper()
	var out []invalidation.Event
	for _, m := range readMessages(t, k, topic, n) {
		e, err := invalidation.Decode(m.Value, invalidation.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// readMessages reads n messages from the start of a one-partition topic.
func readMessages(t *testing.T, k *testenv.Kafka, topic string, n int) []kafka.Message {
	t.Helper()
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Dialer: k.Dialer(), Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []kafka.Message
	for len(out) < n {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read message %d of %d from %s: %v", len(out)+1, n, topic, err)
		}
		out = append(out, m)
	}
	return out
}

func pending(t *testing.T, p *testenv.Postgres, table string) int {
	t.Helper()
	var n int
	if err := p.Open(t).QueryRowContext(ctxT(t), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCommittedChangesArePublishedInOrderAndDeleted: rows enqueued in a transaction that
// commits are published in order, then deleted; a rolled-back transaction publishes nothing.
func TestCommittedChangesArePublishedInOrderAndDeleted(t *testing.T) {
	p := testenv.NewPostgres(t)
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "outbox", 1)
	db := p.Open(t)
	ctx := ctxT(t)
	if err := outbox.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Apply(ctx, db); err != nil { // idempotent
		t.Fatalf("second Apply: %v", err)
	}
	rolledBack, _ := db.BeginTx(ctx, nil)
	if err := outbox.Enqueue(ctx, rolledBack, upsert("user:9", 1, "never")); err != nil {
		t.Fatal(err)
	}
	rolledBack.Rollback()
	tx, _ := db.BeginTx(ctx, nil)
	if err := outbox.Enqueue(ctx, tx, upsert("user:1", 1, "ada"), upsert("user:2", 1, "grace"),
		invalidation.Event{Key: "user:1", Version: 2, Op: invalidation.OpDelete}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, p.DSN, k, topic)
	got := readEvents(t, k, topic, 3)
	want := []string{"user:1@1 UPSERT ada", "user:2@1 UPSERT grace", "user:1@2 DELETE "}
	for i, e := range got {
		if s := fmt.Sprintf("%s@%d %s %s", e.Key, e.Version, e.Op, e.Value); s != want[i] {
			t.Errorf("event %d = %q, want %q", i, s, want[i])
		}
		if e.CommittedAt.IsZero() || e.Source != "outbox-relay" {
			t.Errorf("event %d: committed_at %v, source %q", i, e.CommittedAt, e.Source)
		}
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if n := pending(t, p, "cachewire_outbox"); n != 0 {
			return fmt.Sprintf("%d rows still in the outbox", n)
		}
		return ""
	})
	if s := r.Stats(); !s.Active || s.Published != 3 {
		t.Fatalf("stats %+v, want active and 3 published", s)
	}
	// A commit wakes the relay (LISTEN/NOTIFY; it also polls).
	tx, _ = db.BeginTx(ctx, nil)
	outbox.Enqueue(ctx, tx, upsert("user:2", 2, "hopper"))
	tx.Commit()
	if e := readEvents(t, k, topic, 4)[3]; e.Key != "user:2" || e.Version != 2 {
		t.Fatalf("fourth event %s@%d", e.Key, e.Version)
	}
}

// TestInvalidRowsDoNotBlockTheOutbox: a row inserted with plain SQL that can never be published
// (an unknown op, an empty key) goes to the dead-letter topic and cachewire_outbox_dead, and is
// counted; the rows behind it are published.
func TestInvalidRowsDoNotBlockTheOutbox(t *testing.T) {
	p := testenv.NewPostgres(t)
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "outbox", 1)
	deadTopic := k.CreateTopic(t, "outbox-dead", 1)
	db := p.Open(t)
	ctx := ctxT(t)
	if err := outbox.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO cachewire_outbox (key, op, version) VALUES ('k', 'UPSRET', 1)`,
		`INSERT INTO cachewire_outbox (key, op, version) VALUES ('', 'DELETE', 1)`,
		`INSERT INTO cachewire_outbox (key, op, version, value) VALUES ('ok', 'UPSERT', 3, 'v3')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	r := startRelay(t, p.DSN, k, topic, func(c *outbox.RelayConfig) { c.DeadLetterTopic = deadTopic })
	if e := readEvents(t, k, topic, 1)[0]; e.Key != "ok" || e.Version != 3 || string(e.Value) != "v3" {
		t.Fatalf("published %s@%d %q, want ok@3 v3", e.Key, e.Version, e.Value)
	}
	wantDead := []string{`k UPSRET@1: unknown op "UPSRET"`, ` DELETE@1: `}
	for i, m := range readMessages(t, k, deadTopic, 2) {
		var dl outbox.DeadLetter
		if err := json.Unmarshal(m.Value, &dl); err != nil {
			t.Fatalf("dead letter %d: %v: %s", i, err, m.Value)
		}
		if got := fmt.Sprintf("%s %s@%d: %s", dl.Key, dl.Op, dl.Version, dl.Error); !strings.HasPrefix(got, wantDead[i]) || dl.Seq == 0 || dl.Error == "" {
			t.Errorf("dead letter %d = %s (%+v), want it to start %q", i, got, dl, wantDead[i])
		}
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if n, d := pending(t, p, "cachewire_outbox"), pending(t, p, "cachewire_outbox_dead"); n != 0 || d != 2 {
			return fmt.Sprintf("outbox %d rows, dead %d rows; want 0 and 2", n, d)
		}
		return ""
	})
	if s := r.Stats(); s.Dead != 2 || s.Published != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestOneRelayIsActiveAndAStandbyTakesOver: two relays share one outbox; one publishes, and when
// it stops the other takes over within its poll interval, and nothing is lost.
func TestOneRelayIsActiveAndAStandbyTakesOver(t *testing.T) {
	p := testenv.NewPostgres(t)
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "outbox", 1)
	db := p.Open(t)
	ctx := ctxT(t)
	if err := outbox.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	a := startRelay(t, p.DSN, k, topic)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if !a.Stats().Active {
			return "relay a not active"
		}
		return ""
	})
	b := startRelay(t, p.DSN, k, topic)
	tx, _ := db.BeginTx(ctx, nil)
	outbox.Enqueue(ctx, tx, upsert("k", 1, "v1"))
	tx.Commit()
	readEvents(t, k, topic, 1)
	// Kafka's ack comes before the delete: wait for it, or b publishes k@1 again (at least once).
	testenv.WaitFor(t, 30*time.Second, func() string {
		if n := pending(t, p, "cachewire_outbox"); n != 0 {
			return fmt.Sprintf("%d rows still in the outbox", n)
		}
		return ""
	})
	if b.Stats().Active || b.Stats().Published != 0 {
		t.Fatalf("standby stats %+v while a is active", b.Stats())
	}
	a.Close()
	tx, _ = db.BeginTx(ctx, nil)
	outbox.Enqueue(ctx, tx, upsert("k", 2, "v2"))
	tx.Commit()
	if e := readEvents(t, k, topic, 2)[1]; e.Version != 2 {
		t.Fatalf("second event at version %d", e.Version)
	}
	if !b.Stats().Active || b.Stats().Published != 1 {
		t.Fatalf("standby stats %+v after a stopped, want active with 1 published", b.Stats())
	}
}

func TestEnqueueRefusesBadEvents(t *testing.T) {
	p := testenv.NewPostgres(t)
	db := p.Open(t)
	ctx := ctxT(t)
	if err := outbox.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	tx, _ := db.BeginTx(ctx, nil)
	defer tx.Rollback()
	err := outbox.Enqueue(ctx, tx, upsert("ok", 1, "v"), invalidation.Event{Key: "k", Op: invalidation.OpUpsert})
	if !errors.Is(err, invalidation.ErrInvalidEvent) || !strings.Contains(err.Error(), "event 1") {
		t.Fatalf("Enqueue of a versionless UPSERT: %v", err)
	}
	err = outbox.Enqueue(ctx, tx, upsert("big", 1<<63, "v"))
	if !errors.Is(err, outbox.ErrVersionTooLarge) {
		t.Fatalf("Enqueue of version 2^63: %v", err)
	}
	var n int
	tx.QueryRowContext(ctx, `SELECT count(*) FROM cachewire_outbox`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d rows written, want none: a bad event writes nothing", n)
	}
}

// TestRelayDyingBetweenAckAndDeleteLosesNothing: the active relay stops right after Kafka acked a
// batch and before it deleted the rows; they stay in the outbox, the next relay publishes them
// again (at least once), and the outbox ends empty.
func TestRelayDyingBetweenAckAndDeleteLosesNothing(t *testing.T) {
	p := testenv.NewPostgres(t)
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "outbox", 1)
	db := p.Open(t)
	ctx := ctxT(t)
	if err := outbox.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	tx, _ := db.BeginTx(ctx, nil)
	outbox.Enqueue(ctx, tx, upsert("a", 1, "v1"), upsert("b", 1, "v1"))
	tx.Commit()
	first, err := outbox.NewRelay(outbox.RelayConfig{DSN: p.DSN, Brokers: k.Brokers, Kafka: k.Conn, Topic: topic, PollInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	dies, cancel := context.WithCancel(context.Background())
	first.SetAfterPublish(cancel) // acked, then gone before the delete
	if err := first.Run(dies); err != nil {
		t.Fatal(err)
	}
	if got := readEvents(t, k, topic, 2); got[0].Key != "a" || got[1].Key != "b" {
		t.Fatalf("published %v", got)
	}
	if n := pending(t, p, "cachewire_outbox"); n != 2 {
		t.Fatalf("%d rows left after a relay died between ack and delete, want both", n)
	}
	startRelay(t, p.DSN, k, topic)
	if got := readEvents(t, k, topic, 4); got[2].Key != "a" || got[3].Key != "b" {
		t.Fatalf("republished %v", got[2:])
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if n := pending(t, p, "cachewire_outbox"); n != 0 {
			return fmt.Sprintf("%d rows still in the outbox", n)
		}
		return ""
	})
}
