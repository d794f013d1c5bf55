package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/outbox"
)

// outboxBench: the outbox relay's throughput (rows committed, published with acks=all and
// deleted) against a raw kafka-go produce of the same messages in the same batches; and the
// latency from a commit to PostgreSQL until every node serves it, against the same through the
// reference writer, on one cluster. It needs PostgreSQL (Config.PostgresDSN).
func (r *runner) outboxBench(ctx context.Context) error {
	if r.cfg.PostgresDSN == "" {
		r.progress("  skipped: needs PostgreSQL (--postgres-dsn; scripts/postgres.sh start)")
		return nil
	}
	schema := strings.ReplaceAll(r.name("outbox"), "-", "_")
	dsn, db, err := r.schema(ctx, schema)
	if err != nil {
		return err
	}
	defer func() {
		_, _ = db.ExecContext(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
		db.Close()
	}()
	if err := outbox.Apply(ctx, db); err != nil {
		return err
	}
	if err := r.relayThroughput(ctx, dsn, db); err != nil {
		return err
	}
	return r.commitToFresh(ctx, dsn, db)
}

// schema creates a schema of the run's own and returns a DSN with it on the search_path.
func (r *runner) schema(ctx context.Context, schema string) (string, *sql.DB, error) {
	admin, err := sql.Open("pgx", r.cfg.PostgresDSN)
	if err != nil {
		return "", nil, err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		return "", nil, fmt.Errorf("create schema: %w", err)
	}
	u, err := url.Parse(r.cfg.PostgresDSN)
	if err != nil || u.Scheme == "" {
		return "", nil, fmt.Errorf("--postgres-dsn must be a postgres:// URL (%v)", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := sql.Open("pgx", u.String())
	return u.String(), db, err
}

const outboxBatch = 500

// relayThroughput preloads rows, then times one relay publishing and deleting all of them, and
// kafka-go producing the same messages in batches of the relay's size.
func (r *runner) relayThroughput(ctx context.Context, dsn string, db *sql.DB) error {
	rows := r.n(50_000, 1_000)
	if _, err := db.ExecContext(ctx, `INSERT INTO cachewire_outbox (key, op, version, value)
		SELECT 'b:' || (g % 1000), 'UPSERT', g, decode(repeat('00', 100), 'hex') FROM generate_series(1, $1) g`, rows); err != nil {
		return fmt.Errorf("preload the outbox: %w", err)
	}
	topic := r.name("relay")
	brokers, stop, err := r.kafkaFor(3, topic)
	if err != nil {
		return err
	}
	defer stop()
	relay, err := outbox.NewRelay(outbox.RelayConfig{DSN: dsn, Brokers: brokers, Kafka: r.cfg.Kafka, Topic: topic, DeadLetterTopic: topic + ".dead",
		Batch: outboxBatch, PollInterval: 100 * time.Millisecond, Logger: r.log})
	if err != nil {
		return err
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	for relay.Stats().Published < uint64(rows) {
		if time.Since(start) > 5*time.Minute {
			relay.Close()
			return fmt.Errorf("the relay published %d of %d rows in 5 minutes", relay.Stats().Published, rows)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	relay.Close()
	if err := <-done; err != nil {
		return err
	}

	// The anchor: the same messages, encoded the same way, in batches of the relay's size.
	tr := r.cfg.Kafka.Transport()
	defer tr.CloseIdleConnections()
	kw := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.Murmur2Balancer{}, Transport: tr,
		RequiredAcks: kafka.RequireAll, BatchSize: outboxBatch, BatchTimeout: time.Millisecond, MaxAttempts: 1}
	defer kw.Close()
	msgs := make([]kafka.Message, 0, outboxBatch)
	value := make([]byte, 100)
	rawStart := time.Now()
	for i := 1; i <= rows; i++ {
		e := invalidation.Event{Key: "b:" + strconv.Itoa(i%1000), Version: uint64(i), Op: invalidation.OpUpsert, Value: value, HasValue: true,
			CommittedAt: time.Now(), Source: "bench"}
		raw, err := invalidation.Encode(&e)
		if err != nil {
			return err
		}
		msgs = append(msgs, kafka.Message{Key: []byte(e.Key), Value: raw})
		if len(msgs) == outboxBatch || i == rows {
			if err := kw.WriteMessages(ctx, msgs...); err != nil {
				return err
			}
			msgs = msgs[:0]
		}
	}
	rawElapsed := time.Since(rawStart)
	got, want := float64(rows)/elapsed.Seconds(), float64(rows)/rawElapsed.Seconds()
	r.progress("  relay: %d rows in %v (%.0f rows/s) | raw produce %v (%.0f/s)", rows, elapsed.Round(time.Millisecond), got, rawElapsed.Round(time.Millisecond), want)
	r.rep.add(Row{Scenario: "outbox", Case: fmt.Sprintf("%d rows, batches of %d", rows, outboxBatch), Metric: "relay throughput (commit→ack, delete)",
		Unit: "rows/s", Cachewire: got, Anchor: "kafka-go produce, acks=all, same batches", AnchorVal: want})
	return nil
}

// commitToFresh measures, on one 3-node cluster that stores every event's value (refresh-all),
// how long after a commit every node serves it: committed to PostgreSQL with its outbox row and
// relayed, against a Put through the reference writer.
func (r *runner) commitToFresh(ctx context.Context, dsn string, db *sql.DB) error {
	rounds := r.n(300, 20)
	c, err := r.clusterWith(ctx, 3, 3, func(_ int, nc *node.Config) { nc.Policy = invalidation.RefreshAll })
	if err != nil {
		return err
	}
	defer c.Close()
	relay, err := outbox.NewRelay(outbox.RelayConfig{DSN: dsn, Brokers: c.Brokers, Kafka: r.cfg.Kafka, Topic: c.Topic, DeadLetterTopic: c.Topic + ".dead",
		PollInterval: 100 * time.Millisecond, Logger: r.log})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	defer func() { relay.Close(); <-done }()
	var caches []*client.Cache
	for _, a := range c.NodeAddrs {
		cc, err := client.NewCache(a, client.WithTimeout(10*time.Second))
		if err != nil {
			return err
		}
		defer cc.Close()
		caches = append(caches, cc)
	}
	// The writer's Put returns once it committed (NoWait: before its relay publishes), which is
	// where the outbox's rounds start too: at the commit.
	writerLat, err := r.propagateRounds(ctx, c, rounds, false, client.NoWait())
	if err != nil {
		return err
	}
	const keys = 16
	value := make([]byte, 100)
	version := uint64(0)
	commit := func(key string) (uint64, error) {
		version++
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		defer tx.Rollback()
		if err := outbox.Enqueue(ctx, tx, invalidation.Event{Key: key, Version: version, Op: invalidation.OpUpsert, Value: value, HasValue: true}); err != nil {
			return 0, err
		}
		return version, tx.Commit()
	}
	lat := make(Latencies, 0, rounds)
	for i := range keys + rounds { // the first round of each key warms it up, unmeasured
		key := "o:" + strconv.Itoa(i%keys)
		v, err := commit(key)
		if err != nil {
			return err
		}
		committed := time.Now()
		if err := everyNodeServes(ctx, caches, key, v); err != nil {
			return err
		}
		if i >= keys {
			lat = append(lat, time.Since(committed))
		}
	}
	s, ws := lat.Summarize(), writerLat.Summarize()
	r.progress("  commit→every node fresh, 3 nodes: outbox %v | reference writer %v", s, ws)
	for _, m := range []struct {
		name     string
		got, ref time.Duration
	}{{"p50", s.P50, ws.P50}, {"p99", s.P99, ws.P99}} {
		r.rep.add(Row{Scenario: "outbox", Case: "3 node(s), relay on LISTEN/NOTIFY", Metric: "commit→every node fresh " + m.name, Unit: "ns",
			Cachewire: float64(m.got), Anchor: "reference writer (commit→every node fresh)", AnchorVal: float64(m.ref)})
	}
	return nil
}

// everyNodeServes polls every node (plain Gets) until each serves key at version or newer.
func everyNodeServes(ctx context.Context, caches []*client.Cache, key string, version uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(caches))
	for j, cc := range caches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				it, err := cc.Get(ctx, key)
				if err != nil {
					errs[j] = fmt.Errorf("node %d: %s@%d: %w", j, key, version, err)
					return
				}
				if it.Version >= version {
					return
				}
				time.Sleep(50 * time.Microsecond) // gently: pollers spinning on two cores measure themselves
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
