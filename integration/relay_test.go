package integration

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/outbox"
)

// relayProcess runs cmd/relay against the test's outbox; it is SIGKILLed when the test ends.
func relayProcess(t *testing.T, dsn string, k *testenv.Kafka, topic string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "relay"), append(k.Flags(t), "--postgres-dsn", dsn, "--topic", topic,
		"--poll-interval", "100ms", "--http-addr", "-", "--log-level", "warn")...)
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
	sub, err := invalidation.NewSubscriber(invalidation.SubscriberConfig{Brokers: k.Brokers, Kafka: k.Conn, Topics: []string{topic},
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

	a := relayProcess(t, p.DSN, k, topic)
	b := relayProcess(t, p.DSN, k, topic)
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
			relayProcess(t, p.DSN, k, topic)
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

// outboxWriter commits change events for keys k0..k9 at growing versions, one transaction each.
type outboxWriter struct {
	db     *sql.DB
	mu     sync.Mutex
	next   uint64
	latest map[string]uint64 // the newest committed version per key
}

func newOutboxWriter(db *sql.DB) *outboxWriter {
	return &outboxWriter{db: db, latest: map[string]uint64{}}
}

// commit commits the next change; an error leaves it uncommitted (the next call retries it).
func (w *outboxWriter) commit(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	v := w.next + 1
	key := fmt.Sprintf("k%d", v%10)
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := outbox.Enqueue(ctx, tx, invalidation.Event{Key: key, Version: v, Op: invalidation.OpUpsert, Value: []byte(fmt.Sprint("v", v)), HasValue: true}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err // whether it committed is unknown: the next call uses a higher version anyway
	}
	w.next = v
	w.latest[key] = v
	return nil
}

// committed returns how many changes committed and the newest version per key.
func (w *outboxWriter) committed() (uint64, map[string]uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := make(map[string]uint64, len(w.latest))
	for k, v := range w.latest {
		m[k] = v
	}
	return w.next, m
}

// nodesHold reports "" when every node serves, for every key, at least the newest committed
// version (refresh-all nodes hold every event's value).
func nodesHold(t *testing.T, nodes []*nodeProc, latest map[string]uint64) string {
	for i, n := range nodes {
		for key, v := range latest {
			if r := getKey(t, n, key, 0); !r.Found || r.Version < v {
				return fmt.Sprintf("node %d serves %s@%d (found %v), want version %d", i, key, r.Version, r.Found, v)
			}
		}
	}
	return ""
}

func outboxRows(db *sql.DB) (int, error) {
	var n int
	err := db.QueryRow(`SELECT count(*) FROM cachewire_outbox`).Scan(&n)
	return n, err
}

// TestRelayKilledBetweenPublishAndDeleteLosesNothing: the active relay process publishes a batch,
// and is SIGKILLed while its DELETE of the published rows waits (the test holds the rows' locks;
// its connection is then terminated, as a dead process's is). The rows stay in the outbox, a
// standby relay takes over and publishes them again, and every committed change, those and the
// ones after, reaches every node.
func TestRelayKilledBetweenPublishAndDeleteLosesNothing(t *testing.T) {
	p := testenv.NewPostgres(t)
	c := newCluster(t)
	db := p.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := outbox.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	nodes := []*nodeProc{c.startNode(false, "--refresh-policy", "refresh-all"), c.startNode(false, "--refresh-policy", "refresh-all")}
	w := newOutboxWriter(db)
	for range 20 {
		if err := w.commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	hold, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback()
	var locked int
	if err := hold.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT seq FROM cachewire_outbox FOR UPDATE) l`).Scan(&locked); err != nil || locked != 20 {
		t.Fatalf("locked %d rows (%v), want 20", locked, err)
	}
	active := relayProcess(t, p.DSN, c.kafka, c.topic)
	_, latest := w.committed()
	var backend int
	testenv.WaitFor(t, time.Minute, func() string {
		if s := nodesHold(t, nodes, latest); s != "" {
			return "not published yet: " + s
		}
		err := db.QueryRowContext(ctx, `SELECT pid FROM pg_stat_activity
			WHERE query LIKE 'DELETE FROM cachewire_outbox%' AND wait_event_type = 'Lock'`).Scan(&backend)
		if err != nil {
			return fmt.Sprintf("the relay's DELETE is not waiting yet (%v)", err)
		}
		return ""
	})
	// Between Kafka's ack and the delete: the process dies, and its session with it.
	_ = active.Process.Kill()
	_ = active.Wait()
	if _, err := db.ExecContext(ctx, `SELECT pg_terminate_backend($1)`, backend); err != nil {
		t.Fatal(err)
	}
	if err := hold.Rollback(); err != nil {
		t.Fatal(err)
	}
	if n, err := outboxRows(db); err != nil || n != 20 {
		t.Fatalf("%d rows in the outbox after the kill (%v), want all 20: nothing is deleted before the ack is followed by the delete", n, err)
	}
	relayProcess(t, p.DSN, c.kafka, c.topic) // the standby
	for range 20 {
		if err := w.commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, latest = w.committed()
	testenv.WaitFor(t, 2*time.Minute, func() string {
		if n, err := outboxRows(db); err != nil || n != 0 {
			return fmt.Sprintf("%d rows left in the outbox (%v)", n, err)
		}
		return nodesHold(t, nodes, latest)
	})
}

// TestRelayResumesAfterPostgresRestart: a service commits changes through the outbox while its
// PostgreSQL (a server of the test's own) is restarted; the relay process reconnects by itself,
// and every committed change reaches the node.
func TestRelayResumesAfterPostgresRestart(t *testing.T) {
	if os.Getenv("CACHEWIRE_TEST_POSTGRES") == "" {
		t.Skip("needs PostgreSQL: run scripts/postgres.sh start and set CACHEWIRE_TEST_POSTGRES=$(scripts/postgres.sh dsn)")
	}
	if os.Geteuid() != 0 {
		t.Skip("starts a PostgreSQL server of its own with scripts/postgres.sh, which runs it as the postgres user: needs root")
	}
	state, err := os.MkdirTemp("", "cachewire-pg-restart-")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(freeAddr(t))
	script := func(arg string) {
		t.Helper()
		cmd := exec.Command("../scripts/postgres.sh", arg)
		cmd.Env = append(os.Environ(), "CACHEWIRE_POSTGRES_PORT="+port, "CACHEWIRE_STATE_DIR="+state)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("postgres.sh %s: %v\n%s", arg, err, out)
		}
	}
	t.Cleanup(func() {
		cmd := exec.Command("../scripts/postgres.sh", "stop")
		cmd.Env = append(os.Environ(), "CACHEWIRE_POSTGRES_PORT="+port, "CACHEWIRE_STATE_DIR="+state)
		_ = cmd.Run()
		_ = os.RemoveAll(state)
	})
	script("start")
	dsn := "postgres://postgres@127.0.0.1:" + port + "/postgres?sslmode=disable"
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := outbox.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t)
	nodes := []*nodeProc{c.startNode(false, "--refresh-policy", "refresh-all")}
	relayProcess(t, dsn, c.kafka, c.topic) // one process throughout: it must reconnect by itself

	const n = 300
	w := newOutboxWriter(db)
	var failed atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for attempts := 0; attempts < 100*n && ctx.Err() == nil; attempts++ {
			if next, _ := w.committed(); next >= n {
				return
			}
			if w.commit(ctx) != nil {
				failed.Add(1)
			}
		}
	}()
	testenv.WaitFor(t, time.Minute, func() string {
		if next, _ := w.committed(); next < n/3 {
			return fmt.Sprintf("%d changes committed", next)
		}
		return ""
	})
	script("restart")
	<-writerDone
	if next, _ := w.committed(); next < n {
		t.Fatalf("only %d of %d changes committed", next, n)
	}
	_, latest := w.committed()
	testenv.WaitFor(t, 2*time.Minute, func() string {
		if n, err := outboxRows(db); err != nil || n != 0 {
			return fmt.Sprintf("%d rows left in the outbox (%v)", n, err)
		}
		return nodesHold(t, nodes, latest)
	})
	t.Logf("%d commits failed while PostgreSQL restarted, and were retried", failed.Load())
}
