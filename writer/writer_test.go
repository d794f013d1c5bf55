package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func logger() *slog.Logger {
	level := slog.LevelError
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

type env struct {
	t      *testing.T
	kafka  *testenv.Kafka
	topic  string
	dbPath string
}

func newEnv(t *testing.T) *env {
	k := testenv.NewKafka(t)
	return &env{t: t, kafka: k, topic: k.CreateTopic(t, "events", 3), dbPath: filepath.Join(t.TempDir(), "writer.db")}
}

type running struct {
	*Writer
	client pb.WriterServiceClient
}

func (e *env) start(mod func(*Config)) *running {
	e.t.Helper()
	cfg := Config{WriterID: "w1", DBPath: e.dbPath, GRPCAddr: "127.0.0.1:0", HTTPAddr: "-",
		Brokers: e.kafka.Brokers, Kafka: e.kafka.Conn, Topic: e.topic, WaitTimeout: 10 * time.Second, Logger: logger()}
	if mod != nil {
		mod(&cfg)
	}
	w, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		w.Close()
		e.t.Fatal(err)
	}
	conn, err := grpc.NewClient(w.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close(); w.Close() })
	return &running{Writer: w, client: pb.NewWriterServiceClient(conn)}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, w *running, key, value string, wait bool) *pb.PutResponse {
	t.Helper()
	r, err := w.client.Put(ctxT(t), &pb.PutRequest{Key: key, Value: []byte(value), WaitPublished: proto.Bool(wait)})
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return r
}

// collector reads the topic from its beginning and keeps every event per key, in order.
type collector struct {
	mu     sync.Mutex
	byKey  map[string][]invalidation.Event
	seq    []invalidation.Event // every event, in arrival order
	sub    *invalidation.Subscriber
	done   chan error
	events int
}

func (e *env) collect() *collector {
	e.t.Helper()
	c := &collector{byKey: map[string][]invalidation.Event{}, done: make(chan error, 1)}
	var err error
	c.sub, err = invalidation.NewSubscriber(invalidation.SubscriberConfig{
		Brokers: e.kafka.Brokers, Kafka: e.kafka.Conn, Topics: []string{e.topic}, FromBeginning: true, MaxWait: 50 * time.Millisecond, Logger: logger(),
		Sink: invalidation.SinkFuncs{
			Apply: func(_ string, _ int, events []invalidation.Event) {
				c.mu.Lock()
				for _, ev := range events {
					c.byKey[ev.Key] = append(c.byKey[ev.Key], ev)
					c.seq = append(c.seq, ev)
					c.events++
				}
				c.mu.Unlock()
			},
			ResetFunc: func(string, int, string) {},
		},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	go func() { c.done <- c.sub.Run(context.Background()) }()
	e.t.Cleanup(func() { c.sub.Close(); <-c.done })
	return c
}

// waitVersions waits until the newest event of every key in want is at that version, then
// checks that each key's events arrived in strictly growing version order.
func (c *collector) waitVersions(t *testing.T, want map[string]uint64) {
	t.Helper()
	testenv.WaitFor(t, 60*time.Second, func() string {
		c.mu.Lock()
		defer c.mu.Unlock()
		for k, v := range want {
			evs := c.byKey[k]
			if len(evs) == 0 || evs[len(evs)-1].Version < v {
				return fmt.Sprintf("key %s: %d events, want the last at version %d", k, len(evs), v)
			}
		}
		return ""
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	// Delivery is at-least-once: a batch the broker stored but did not ack in time is published
	// again, so an older version may reappear. Order is broken only if a version arrives for the
	// first time after a newer one.
	for k, evs := range c.byKey {
		seen := map[uint64]bool{}
		var newest uint64
		for _, e := range evs {
			if e.Version < newest && !seen[e.Version] {
				t.Fatalf("key %s: version %d arrived for the first time after %d (per-key order broken)", k, e.Version, newest)
			}
			seen[e.Version] = true
			newest = max(newest, e.Version)
		}
	}
}

func TestPutGetDelete(t *testing.T) {
	e := newEnv(t)
	w := e.start(nil)
	ctx := ctxT(t)
	p1 := put(t, w, "user:1", "ada", true)
	if !p1.Published || p1.Version == 0 {
		t.Fatalf("Put = %+v, want published with a version", p1)
	}
	g, err := w.client.Get(ctx, &pb.OriginGetRequest{Key: "user:1"})
	if err != nil || string(g.Value) != "ada" || g.Version != p1.Version || !g.Found {
		t.Fatalf("Get = %+v, %v", g, err)
	}
	d, err := w.client.Delete(ctx, &pb.DeleteRequest{Key: "user:1"})
	if err != nil || d.Version <= p1.Version || !d.Published {
		t.Fatalf("Delete = %+v, %v", d, err)
	}
	var trailer metadata.MD
	_, err = w.client.Get(ctx, &pb.OriginGetRequest{Key: "user:1"}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.NotFound || trailer.Get(invalidation.VersionTrailer)[0] != fmt.Sprint(d.Version) {
		t.Fatalf("Get after delete: %v, trailer %v; want NotFound with version %d", err, trailer, d.Version)
	}
	b, err := w.client.BatchGet(ctx, &pb.OriginBatchGetRequest{Keys: []string{"user:1", "never"}})
	if err != nil || b.Responses[0].Found || b.Responses[0].Version != d.Version || b.Responses[1].Found || b.Responses[1].Version != 0 {
		t.Fatalf("BatchGet = %+v, %v", b, err)
	}
	c := e.collect()
	c.waitVersions(t, map[string]uint64{"user:1": d.Version})
	evs := c.byKey["user:1"]
	if evs[0].Op != invalidation.OpUpsert || string(evs[0].Value) != "ada" || evs[1].Op != invalidation.OpDelete || evs[0].Source != "w1" {
		t.Fatalf("events = %+v", evs)
	}
}

func TestLargeValuesTravelAsInvalidate(t *testing.T) {
	e := newEnv(t)
	w := e.start(func(c *Config) { c.EventValueMax = 8 })
	small := put(t, w, "small", "12345678", true)
	big := put(t, w, "big", "123456789", true)
	c := e.collect()
	c.waitVersions(t, map[string]uint64{"small": small.Version, "big": big.Version})
	if ev := c.byKey["small"][0]; ev.Op != invalidation.OpUpsert || !ev.HasValue {
		t.Fatalf("small value event = %+v, want an UPSERT carrying it", ev)
	}
	if ev := c.byKey["big"][0]; ev.Op != invalidation.OpInvalidate || ev.HasValue {
		t.Fatalf("large value event = %+v, want an INVALIDATE without it", ev)
	}
}

func TestVersionsGrowAcrossRestart(t *testing.T) {
	e := newEnv(t)
	w := e.start(nil)
	before := put(t, w, "k", "a", false).Version
	if err := w.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	w2 := e.start(nil)
	after := put(t, w2, "k", "b", false).Version
	if after <= before {
		t.Fatalf("version after restart %d, before %d: must grow", after, before)
	}
	other := put(t, w2, "other", "x", false).Version
	if other <= after {
		t.Fatalf("versions are a store-wide sequence: %d after %d", other, after)
	}
}

func TestKafkaDownWritesStayDurableAndArriveInOrder(t *testing.T) {
	e := newEnv(t)
	w := e.start(func(c *Config) { c.WaitTimeout = 200 * time.Millisecond })
	put(t, w, "warm", "up", true) // the relay is connected before the outage
	resume := e.kafka.Pause(t)
	pauseStart := time.Now()
	want := map[string]uint64{}
	var puts, unpublished int
	// Keep writing for 10 seconds while Kafka is down (bounded in count too).
	for i := 0; time.Since(pauseStart) < 10*time.Second && i < 2000; i++ {
		key := fmt.Sprintf("key-%d", i%5)
		r := put(t, w, key, fmt.Sprint(i), true)
		want[key] = r.Version
		puts++
		if !r.Published {
			unpublished++
		}
	}
	if unpublished == 0 {
		t.Fatal("every Put was published while Kafka was paused: the outage did not happen")
	}
	if w.OutboxDepth() == 0 {
		t.Fatal("outbox empty during the outage")
	}
	resume()
	c := e.collect()
	c.waitVersions(t, want)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if d := w.OutboxDepth(); d != 0 {
			return fmt.Sprintf("outbox depth %d", d)
		}
		return ""
	})
	t.Logf("%d Puts during a %v outage; %d returned published=false", puts, 10*time.Second, unpublished)
}

func TestTopicCreation(t *testing.T) {
	e := newEnv(t)
	e.topic = testenv.TopicName(t, "missing")
	_, err := func() (*Writer, error) {
		w, err := New(Config{DBPath: e.dbPath, GRPCAddr: "127.0.0.1:0", HTTPAddr: "-", Brokers: e.kafka.Brokers, Kafka: e.kafka.Conn, Topic: e.topic, Logger: logger()})
		if err != nil {
			return nil, err
		}
		defer w.Close()
		return w, w.Start()
	}()
	if err == nil || !strings.Contains(err.Error(), e.topic) {
		t.Fatalf("Start with a missing topic and no creation: %v, want an error naming %s", err, e.topic)
	}
	w := e.start(func(c *Config) { c.CreateTopic = true; c.TopicPartitions = 2 })
	put(t, w, "k", "v", true)
	md, err := e.kafka.Client(t).Metadata(ctxT(t), &kafka.MetadataRequest{Topics: []string{e.topic}})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Topics) != 1 || len(md.Topics[0].Partitions) != 2 {
		t.Fatalf("created topic metadata %+v, want 2 partitions", md.Topics)
	}
}

func TestLimits(t *testing.T) {
	e := newEnv(t)
	w := e.start(func(c *Config) { c.Limits = invalidation.Limits{MaxKeyBytes: 4, MaxValueBytes: 4}; c.MaxBatch = 1 })
	ctx := ctxT(t)
	for _, tc := range []struct {
		call func() error
		want string
	}{
		{func() error { _, err := w.client.Put(ctx, &pb.PutRequest{Key: "12345"}); return err }, "max_key_bytes is 4"},
		{func() error {
			_, err := w.client.Put(ctx, &pb.PutRequest{Key: "k", Value: []byte("12345")})
			return err
		}, "max_value_bytes is 4"},
		{func() error { // a 5 MiB Put is refused as invalid, naming the limit, not as "back off"
			_, err := w.client.Put(ctx, &pb.PutRequest{Key: "k", Value: make([]byte, 5<<20)})
			return err
		}, "max_value_bytes is 4"},
		{func() error { _, err := w.client.Delete(ctx, &pb.DeleteRequest{}); return err }, "key is empty"},
		{func() error {
			_, err := w.client.BatchGet(ctx, &pb.OriginBatchGetRequest{Keys: []string{"a", "b"}})
			return err
		}, "max_batch is 1"},
	} {
		if err := tc.call(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) ||
			strings.Contains(err.Error(), "key: key") || strings.Contains(err.Error(), "invalidation:") {
			t.Errorf("got %v, want InvalidArgument mentioning %q", err, tc.want)
		}
	}
}

func TestConcurrentPutsAreGroupCommitted(t *testing.T) {
	e := newEnv(t)
	w := e.start(nil)
	var wg sync.WaitGroup
	versions := make(chan uint64, 16*20)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				versions <- put(t, w, fmt.Sprint("k", i), "v", false).Version
			}
		}()
	}
	wg.Wait()
	close(versions)
	seen := map[uint64]bool{}
	for v := range versions {
		if seen[v] {
			t.Fatalf("version %d given twice", v)
		}
		seen[v] = true
	}
	if len(seen) != 320 {
		t.Fatalf("%d distinct versions, want 320", len(seen))
	}
}

// TestStartTwiceAndAfterClose: a second Start fails clearly and leaves the first one serving; a
// Start after Close returns ErrClosed.
func TestStartTwiceAndAfterClose(t *testing.T) {
	e := newEnv(t)
	w := e.start(nil)
	addr := w.GRPCAddr()
	if err := w.Start(); err == nil || err.Error() != "writer: Start called twice" {
		t.Fatalf("second Start = %v, want %q", err, "writer: Start called twice")
	}
	if got := w.GRPCAddr(); got != addr {
		t.Fatalf("second Start moved the gRPC listener from %s to %s", addr, got)
	}
	put(t, w, "k", "v", true) // the first Start still serves

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
	w2, err := New(Config{DBPath: e.dbPath, GRPCAddr: "127.0.0.1:0", HTTPAddr: "-", Brokers: e.kafka.Brokers, Kafka: e.kafka.Conn, Topic: e.topic, Logger: logger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w2.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close (never started) = %v, want ErrClosed", err)
	}
}

// TestServesOriginService: the writer serves OriginService, the origin API a node reaches with
// --origin grpc://: found with its version, a deletion as found=false at its version.
func TestServesOriginService(t *testing.T) {
	e := newEnv(t)
	w := e.start(nil)
	ctx := ctxT(t)
	put, err := w.client.Put(ctx, &pb.PutRequest{Key: "k", Value: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(w.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	origin := pb.NewOriginServiceClient(conn)
	if r, err := origin.Load(ctx, &pb.LoadRequest{Key: "k"}); err != nil || !r.Found || r.Version != put.Version || string(r.Value) != "v1" {
		t.Fatalf("Load(k) = %v, %v", r, err)
	}
	del, err := w.client.Delete(ctx, &pb.DeleteRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := origin.BatchLoad(ctx, &pb.BatchLoadRequest{Keys: []string{"k", "never"}})
	if err != nil || len(r.Responses) != 2 || r.Responses[0].Found || r.Responses[0].Version != del.Version || r.Responses[1].Found || r.Responses[1].Version != 0 {
		t.Fatalf("BatchLoad = %v, %v", r, err)
	}
}
