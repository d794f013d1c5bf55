package writer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	bolt "go.etcd.io/bbolt"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

// syncBuffer is a log destination that tests can read while the writer writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newEnv1 is newEnv with a one-partition topic, so that the order of all events is observable.
func newEnv1(t *testing.T) *env {
	k := testenv.NewKafka(t)
	return &env{t: t, kafka: k, topic: k.CreateTopic(t, "events", 1), dbPath: filepath.Join(t.TempDir(), "writer.db")}
}

// all returns every event the collector received, in the order it received them.
func (c *collector) all() []invalidation.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seq)
}

// appendRaw appends an outbox row holding raw at the next version, as if the store had been
// corrupted, and returns that version.
func appendRaw(t *testing.T, st *store, raw []byte) uint64 {
	t.Helper()
	var seq uint64
	err := st.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if b := meta.Get(keySeq); b != nil {
			seq = binary.BigEndian.Uint64(b)
		}
		seq++
		if err := tx.Bucket(bucketOutbox).Put(seqKey(seq), raw); err != nil {
			return err
		}
		return meta.Put(keySeq, seqKey(seq))
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func commitPut(t *testing.T, st *store, key, value string) uint64 {
	t.Helper()
	wr := &write{key: key, value: []byte(value)}
	if err := st.commit([]*write{wr}, "w1", 1<<20); err != nil {
		t.Fatal(err)
	}
	return wr.version
}

func counterValue(t *testing.T, w *Writer, name string) float64 {
	t.Helper()
	mfs, err := w.m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestBadOutboxRowsAreDeadLettered: corrupt and invalid rows between good ones are dead-lettered
// (kept in the outbox_dead bucket, or written to the dead-letter topic), counted and logged with
// their outbox sequence, and the good rows behind them are published, in order. A row whose value
// outgrew the event value max is published as INVALIDATE.
func TestBadOutboxRowsAreDeadLettered(t *testing.T) {
	for _, withTopic := range []bool{false, true} {
		t.Run(fmt.Sprintf("dead_letter_topic=%v", withTopic), func(t *testing.T) {
			e := newEnv1(t)
			st, err := openStore(e.dbPath)
			if err != nil {
				t.Fatal(err)
			}
			garbage := []byte("\xff\xfe garbage")
			invalid, err := invalidation.Encode(&invalidation.Event{Key: "bad", Version: 0, Op: invalidation.OpDelete})
			if err != nil {
				t.Fatal(err)
			}
			var good []uint64
			good = append(good, commitPut(t, st, "a", "1"))
			badGarbage := appendRaw(t, st, garbage)
			good = append(good, commitPut(t, st, "b", "1"))
			badInvalid := appendRaw(t, st, invalid)
			good = append(good, commitPut(t, st, "a", "2"))
			big := commitPut(t, st, "c", strings.Repeat("x", 100)) // more than EventValueMax below
			good = append(good, big, commitPut(t, st, "b", "2"))
			if err := st.close(); err != nil {
				t.Fatal(err)
			}

			dlqTopic := ""
			if withTopic {
				dlqTopic = e.kafka.CreateTopic(t, "dlq", 1)
			}
			var logs syncBuffer
			w := e.start(func(c *Config) {
				c.EventValueMax = 16
				c.DeadLetterTopic = dlqTopic
				c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			})
			c := e.collect()
			testenv.WaitFor(t, 60*time.Second, func() string {
				if n := len(c.all()); n < len(good) || w.OutboxDepth() != 0 {
					return fmt.Sprintf("%d events published, outbox depth %d", n, w.OutboxDepth())
				}
				return ""
			})
			var got []uint64
			for _, ev := range c.all() {
				got = append(got, ev.Version)
				if ev.Version == big && (ev.Op != invalidation.OpInvalidate || ev.HasValue) {
					t.Errorf("version %d (value over the event value max) published as %v (has value %v), want INVALIDATE", big, ev.Op, ev.HasValue)
				}
			}
			if !slices.Equal(got, good) {
				t.Fatalf("published versions %v, want %v in this order", got, good)
			}

			if n := w.DeadLettered(); n != 2 {
				t.Errorf("DeadLettered() = %d, want 2", n)
			}
			if v := counterValue(t, w.Writer, "cachewire_writer_outbox_dead_lettered_total"); v != 2 {
				t.Errorf("cachewire_writer_outbox_dead_lettered_total = %v, want 2", v)
			}
			log := logs.String()
			for _, want := range []string{fmt.Sprintf("outbox_seq=%d", badGarbage), fmt.Sprintf("outbox_seq=%d key=bad", badInvalid)} {
				if !strings.Contains(log, want) {
					t.Errorf("log lacks %q:\n%s", want, log)
				}
			}

			want := map[uint64][]byte{badGarbage: garbage, badInvalid: invalid}
			if !withTopic {
				rows, err := w.store.dead(10)
				if err != nil {
					t.Fatal(err)
				}
				if len(rows) != 2 || w.DeadRows() != 2 {
					t.Fatalf("outbox_dead holds %d rows (DeadRows %d), want 2", len(rows), w.DeadRows())
				}
				for _, r := range rows {
					if !bytes.Equal(r.raw, want[r.seq]) || r.reason == "" {
						t.Errorf("outbox_dead row %d = %q (reason %q), want %q with a reason", r.seq, r.raw, r.reason, want[r.seq])
					}
				}
				return
			}
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.kafka.Brokers, Dialer: e.kafka.Dialer(), Topic: dlqTopic, Partition: 0, MaxWait: 50 * time.Millisecond})
			defer r.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for range 2 {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var seq uint64
				for _, h := range m.Headers {
					if h.Key == "cachewire.outbox.seq" {
						fmt.Sscan(string(h.Value), &seq)
					}
				}
				if !bytes.Equal(m.Value, want[seq]) {
					t.Errorf("dead letter for outbox row %d = %q, want %q (headers %v)", seq, m.Value, want[seq], m.Headers)
				}
				delete(want, seq)
			}
			testenv.WaitFor(t, 30*time.Second, func() string {
				if n := w.DeadRows(); n != 0 {
					return fmt.Sprintf("outbox_dead still holds %d rows after the topic acked them", n)
				}
				return ""
			})
		})
	}
}

// TestRowsKafkaRefusesDoNotBlockTheOutbox: the topic refuses records over 1000 bytes. A value
// over that is published as INVALIDATE; a write refused even so (its key alone is too large) is
// dead-lettered and reported unpublished; the writes after it are published.
func TestRowsKafkaRefusesDoNotBlockTheOutbox(t *testing.T) {
	k := testenv.NewKafka(t)
	if k.Fake == nil {
		t.Skip("creates a topic with a small max.message.bytes on the in-process Kafka")
	}
	e := &env{t: t, kafka: k, topic: testenv.TopicName(t, "small"), dbPath: filepath.Join(t.TempDir(), "writer.db")}
	resp, err := k.Client(t).CreateTopics(ctxT(t), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: e.topic, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "1000"}},
	}}})
	if err != nil || resp.Errors[e.topic] != nil {
		t.Fatalf("create topic: %v %v", err, resp.Errors)
	}
	w := e.start(func(c *Config) { c.Limits.MaxKeyBytes = 4096 })
	c := e.collect()
	small := put(t, w, "small", "x", true)
	big := put(t, w, "big", strings.Repeat("v", 2000), true)
	huge := put(t, w, strings.Repeat("k", 1500), "y", true)
	after := put(t, w, "after", "z", true)
	if !small.Published || !big.Published || !after.Published {
		t.Errorf("published: small %v, big %v, after %v; want all true", small.Published, big.Published, after.Published)
	}
	if huge.Published {
		t.Errorf("a write Kafka refused (dead-lettered) was reported published")
	}
	c.waitVersions(t, map[string]uint64{"small": small.Version, "big": big.Version, "after": after.Version})
	if ev := c.byKey["big"][0]; ev.Op != invalidation.OpInvalidate || ev.HasValue {
		t.Errorf("the refused large value went out as %v (has value %v), want INVALIDATE", ev.Op, ev.HasValue)
	}
	if n := w.DeadLettered(); n != 1 {
		t.Errorf("DeadLettered() = %d, want 1", n)
	}
	rows, err := w.store.dead(10)
	if err != nil || len(rows) != 1 || rows[0].seq != huge.Version || !strings.Contains(rows[0].reason, "refused by Kafka") {
		t.Fatalf("outbox_dead = %+v, %v; want the row of version %d, refused by Kafka", rows, err, huge.Version)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if d := w.OutboxDepth(); d != 0 {
			return fmt.Sprintf("outbox depth %d", d)
		}
		return ""
	})
}

// TestPrepare: what the relay makes of a stored row.
func TestPrepare(t *testing.T) {
	limits := invalidation.Limits{MaxKeyBytes: 8, MaxValueBytes: 4}
	enc := func(e invalidation.Event) []byte {
		b, err := invalidation.Encode(&e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name      string
		raw       []byte
		wantOp    invalidation.Op
		wantValue bool
		wantErr   string
	}{
		{"upsert", enc(invalidation.Event{Key: "k", Version: 1, Op: invalidation.OpUpsert, Value: []byte("1234"), HasValue: true}), invalidation.OpUpsert, true, ""},
		{"value over the limit travels as INVALIDATE", enc(invalidation.Event{Key: "k", Version: 1, Op: invalidation.OpUpsert, Value: []byte("12345"), HasValue: true}), invalidation.OpInvalidate, false, ""},
		{"delete", enc(invalidation.Event{Key: "k", Version: 2, Op: invalidation.OpDelete}), invalidation.OpDelete, false, ""},
		{"garbage", []byte("\xff\xfe garbage"), 0, false, "not a ChangeEvent"},
		{"version zero", enc(invalidation.Event{Key: "k", Op: invalidation.OpDelete}), 0, false, "version must be greater than zero"},
		{"key too long", enc(invalidation.Event{Key: "123456789", Version: 1, Op: invalidation.OpDelete}), 0, false, "max_key_bytes is 8"},
		{"empty row", nil, 0, false, "key is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, err := prepare(tc.raw, limits)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("prepare = %+v, %v; want an error mentioning %q", e, err, tc.wantErr)
				}
				return
			}
			if err != nil || e.Op != tc.wantOp || e.HasValue != tc.wantValue {
				t.Fatalf("prepare = %+v, %v; want op %v, has value %v", e, err, tc.wantOp, tc.wantValue)
			}
		})
	}
}
