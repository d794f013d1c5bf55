package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func logger() *slog.Logger {
	level := slog.LevelError
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// origin is an in-memory origin whose loads can be held back by the test.
type origin struct {
	mu      sync.Mutex
	data    map[string]Loaded
	calls   atomic.Int64
	hold    chan struct{} // when non-nil, loads wait for it to close (or their ctx to end)
	started chan struct{} // receives once per load that starts waiting
	down    atomic.Bool
	ctxErrs atomic.Int64 // loads that ended because their context was cancelled
}

func newOrigin() *origin { return &origin{data: map[string]Loaded{}} }

func (o *origin) put(key string, version uint64, value string) {
	o.mu.Lock()
	o.data[key] = Loaded{Value: []byte(value), Version: version, Found: true}
	o.mu.Unlock()
}

func (o *origin) Load(ctx context.Context, key string) (Loaded, error) {
	o.calls.Add(1)
	o.mu.Lock()
	hold, started := o.hold, o.started
	o.mu.Unlock()
	if hold != nil {
		if started != nil {
			started <- struct{}{}
		}
		select {
		case <-hold:
		case <-ctx.Done():
			o.ctxErrs.Add(1)
			return Loaded{}, ctx.Err()
		}
	}
	if o.down.Load() {
		return Loaded{}, status.Error(codes.Unavailable, "origin is down (test)")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.data[key], nil
}

type harness struct {
	t      testing.TB
	kafka  *testenv.Kafka
	redis  *testenv.Redis
	topic  string
	origin *origin
}

func newHarness(t testing.TB) *harness {
	k := testenv.NewKafka(t)
	return &harness{t: t, kafka: k, redis: testenv.NewRedis(t), topic: k.CreateTopic(t, "events", 3), origin: newOrigin()}
}

type testNode struct {
	*Node
	client pb.CacheServiceClient
	health healthpb.HealthClient
}

func (h *harness) start(mod func(*Config)) *testNode {
	h.t.Helper()
	cfg := Config{
		NodeID: fmt.Sprintf("node-%d", time.Now().UnixNano()), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Brokers: h.kafka.Brokers, Kafka: h.kafka.Conn, Topics: []string{h.topic}, GroupID: testenv.TopicName(h.t, "l2"),
		L2:                redistier.Config{Addrs: []string{h.redis.Addr}, TLS: h.redis.TLS, Username: h.redis.Username, Password: h.redis.Password, KeyPrefix: h.redis.Prefix},
		Loader:            h.origin,
		SubscriberMaxWait: 50 * time.Millisecond,
		Logger:            logger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		h.t.Fatal(err)
	}
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		conn.Close()
		n.Close()
	})
	tn := &testNode{Node: n, client: pb.NewCacheServiceClient(conn), health: healthpb.NewHealthClient(conn)}
	testenv.WaitFor(h.t, 30*time.Second, func() string {
		if !n.Ready() {
			return "node not ready"
		}
		return ""
	})
	return tn
}

func (h *harness) publisher() *invalidation.Publisher {
	p, err := invalidation.NewPublisher(invalidation.PublisherConfig{Brokers: h.kafka.Brokers, Kafka: h.kafka.Conn, Topic: h.topic})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { p.Close() })
	return p
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func get(t *testing.T, n *testNode, key string, minVersion uint64) *pb.GetResponse {
	t.Helper()
	resp, err := n.client.Get(ctxT(t), &pb.GetRequest{Key: key, MinVersion: minVersion})
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return resp
}

func expect(t *testing.T, r *pb.GetResponse, tier pb.Tier, version uint64, value string) {
	t.Helper()
	if !r.Found || r.Tier != tier || r.Version != version || string(r.Value) != value {
		t.Fatalf("got %q@%d from %s (found %v), want %q@%d from %s", r.Value, r.Version, r.Tier, r.Found, value, version, tier)
	}
}

func TestReadPathL1L2Origin(t *testing.T) {
	h := newHarness(t)
	h.origin.put("user:1", 3, "ada")
	a := h.start(nil)
	expect(t, get(t, a, "user:1", 0), pb.Tier_TIER_ORIGIN, 3, "ada")
	expect(t, get(t, a, "user:1", 0), pb.Tier_TIER_L1, 3, "ada")
	// A second node sharing Redis finds it in L2 (once it has seen that the L2 group is caught
	// up with its own position), then in its own L1.
	b := h.start(nil)
	testenv.WaitFor(t, 10*time.Second, func() string {
		if !b.l2Fresh("user:1") {
			return "node b does not trust L2 yet"
		}
		return ""
	})
	expect(t, get(t, b, "user:1", 0), pb.Tier_TIER_L2, 3, "ada")
	expect(t, get(t, b, "user:1", 0), pb.Tier_TIER_L1, 3, "ada")
	if got := h.origin.calls.Load(); got != 1 {
		t.Fatalf("origin loaded %d times, want 1", got)
	}
	if r := get(t, a, "user:1", 0); r.Freshness.GetStale() || r.Freshness.GetFreshAsOf() == nil {
		t.Fatalf("freshness = %+v, want fresh with a fresh_as_of", r.Freshness)
	}
}

func TestPublishedWriteRefreshesEveryNode(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 1, "v1")
	nodes := []*testNode{h.start(nil), h.start(nil), h.start(nil)}
	for _, n := range nodes {
		get(t, n, "k", 0)
	}
	h.origin.put("k", 2, "v2")
	if err := h.publisher().Publish(ctxT(t), invalidation.Event{Key: "k", Version: 2, Op: invalidation.OpUpsert, Value: []byte("v2"), HasValue: true}); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		testenv.WaitFor(t, 30*time.Second, func() string {
			if r := get(t, n, "k", 0); r.Version != 2 || string(r.Value) != "v2" {
				return fmt.Sprintf("node %d serves %q@%d from %s", i, r.Value, r.Version, r.Tier)
			}
			return ""
		})
	}
}

func TestMinVersionForcesAFreshRead(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 1, "v1")
	n := h.start(nil)
	expect(t, get(t, n, "k", 0), pb.Tier_TIER_ORIGIN, 1, "v1")
	h.origin.put("k", 2, "v2") // written, event not yet seen
	expect(t, get(t, n, "k", 0), pb.Tier_TIER_L1, 1, "v1")
	expect(t, get(t, n, "k", 2), pb.Tier_TIER_ORIGIN, 2, "v2")
	expect(t, get(t, n, "k", 2), pb.Tier_TIER_L1, 2, "v2")
	// The origin cannot produce a version that does not exist yet.
	_, err := n.client.Get(ctxT(t), &pb.GetRequest{Key: "k", MinVersion: 9})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "at least 9") {
		t.Fatalf("Get min_version=9: %v, want Unavailable naming the version", err)
	}
}

func TestNotFoundIsCachedBriefly(t *testing.T) {
	h := newHarness(t)
	n := h.start(nil)
	for range 3 {
		if r := get(t, n, "nobody", 0); r.Found {
			t.Fatalf("found %+v", r)
		}
	}
	if got := h.origin.calls.Load(); got != 1 {
		t.Fatalf("origin loaded %d times for a missing key, want 1 (negative caching)", got)
	}
}

func TestConcurrentMissesShareOneLoad(t *testing.T) {
	h := newHarness(t)
	h.origin.put("hot", 1, "v")
	n := h.start(nil)
	h.origin.mu.Lock()
	h.origin.hold = make(chan struct{})
	h.origin.mu.Unlock()
	const callers = 8
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := n.client.Get(ctxT(t), &pb.GetRequest{Key: "hot"})
			if err == nil && (!r.Found || string(r.Value) != "v") {
				err = fmt.Errorf("got %+v", r)
			}
			errs <- err
		}()
	}
	testenv.WaitFor(t, 10*time.Second, func() string {
		n.flight.mu.Lock()
		defer n.flight.mu.Unlock()
		if c := n.flight.calls["hot"]; c == nil || c.waiters != callers {
			return "waiting for all callers to join the load"
		}
		return ""
	})
	close(h.origin.hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := h.origin.calls.Load(); got != 1 {
		t.Fatalf("%d origin loads for %d concurrent misses, want 1", got, callers)
	}
}

func TestCancelledRequestStopsItsLoadUnlessShared(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 1, "v")
	n := h.start(nil)
	h.origin.mu.Lock()
	h.origin.hold = make(chan struct{})
	h.origin.started = make(chan struct{}, 4)
	h.origin.mu.Unlock()

	// Alone: cancelling the request cancels the load.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := n.client.Get(ctx, &pb.GetRequest{Key: "k"}); done <- err }()
	<-h.origin.started
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled Get: %v", err)
	}
	testenv.WaitFor(t, 10*time.Second, func() string {
		if h.origin.ctxErrs.Load() != 1 {
			return "the load was not cancelled"
		}
		return ""
	})

	// Shared: one caller gives up, the other still gets the value from the same load.
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := n.client.Get(ctx1, &pb.GetRequest{Key: "k"}); first <- err }()
	<-h.origin.started
	second := make(chan *pb.GetResponse, 1)
	go func() {
		r, _ := n.client.Get(ctxT(t), &pb.GetRequest{Key: "k"})
		second <- r
	}()
	testenv.WaitFor(t, 10*time.Second, func() string {
		n.flight.mu.Lock()
		defer n.flight.mu.Unlock()
		if c := n.flight.calls["k"]; c == nil || c.waiters != 2 {
			return "second caller has not joined"
		}
		return ""
	})
	cancel1()
	<-first
	close(h.origin.hold)
	if r := <-second; r == nil || string(r.Value) != "v" {
		t.Fatalf("second caller got %+v", r)
	}
	if got := h.origin.ctxErrs.Load(); got != 1 {
		t.Fatalf("%d loads cancelled, want 1 (the shared one must survive)", got)
	}
}

func TestLimitsGiveInvalidArgument(t *testing.T) {
	h := newHarness(t)
	n := h.start(func(c *Config) {
		c.Limits = invalidation.Limits{MaxKeyBytes: 16, MaxValueBytes: 32}
		c.MaxBatch = 2
	})
	ctx := ctxT(t)
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"key over the limit", func() error {
			_, err := n.client.Get(ctx, &pb.GetRequest{Key: strings.Repeat("k", 17)})
			return err
		}, "max_key_bytes is 16"},
		{"empty key", func() error { _, err := n.client.Get(ctx, &pb.GetRequest{}); return err }, "key is empty"},
		{"batch over the limit", func() error {
			_, err := n.client.BatchGet(ctx, &pb.BatchGetRequest{Requests: []*pb.GetRequest{{Key: "a"}, {Key: "b"}, {Key: "c"}}})
			return err
		}, "max_batch is 2"},
		{"value over the limit", func() error {
			_, err := n.client.Set(ctx, &pb.SetRequest{Key: "k", Value: make([]byte, 33), Version: 1})
			return err
		}, "max_value_bytes is 32"},
		// Far over the value limit and over gRPC's default 4 MiB message limit: still
		// InvalidArgument naming the limit, never ResourceExhausted ("back off").
		{"value of 5 MiB", func() error {
			_, err := n.client.Set(ctx, &pb.SetRequest{Key: "k", Value: make([]byte, 5<<20), Version: 1})
			return err
		}, "max_value_bytes is 32"},
		{"set without a version", func() error {
			_, err := n.client.Set(ctx, &pb.SetRequest{Key: "k", Value: []byte("v")})
			return err
		}, "version"},
		{"invalidate without a version", func() error {
			_, err := n.client.Invalidate(ctx, &pb.InvalidateRequest{Key: "k"})
			return err
		}, "version"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want InvalidArgument mentioning %q", err, c.want)
			}
			if msg := status.Convert(err).Message(); strings.Contains(msg, "key: key") || strings.Contains(msg, "invalidation:") {
				t.Fatalf("message %q stutters or names an internal package", msg)
			}
		})
	}
}

func TestOriginDownWithNothingCachedIsUnavailable(t *testing.T) {
	h := newHarness(t)
	n := h.start(nil)
	h.origin.down.Store(true)
	_, err := n.client.Get(ctxT(t), &pb.GetRequest{Key: "k"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "origin unavailable") {
		t.Fatalf("Get with the origin down: %v, want Unavailable", err)
	}
}

func TestCacheAsideSetAndInvalidate(t *testing.T) {
	h := newHarness(t)
	a := h.start(func(c *Config) { c.Loader = nil })
	b := h.start(func(c *Config) { c.Loader = nil })
	ctx := ctxT(t)
	if r := get(t, a, "k", 0); r.Found || r.Tier != pb.Tier_TIER_UNSPECIFIED {
		t.Fatalf("cache-aside miss = %+v", r)
	}
	for _, n := range []*testNode{a, b} {
		resp, err := n.client.Set(ctx, &pb.SetRequest{Key: "k", Value: []byte("v5"), Version: 5})
		if err != nil || !resp.Accepted {
			t.Fatalf("Set: %v %v", resp, err)
		}
	}
	expect(t, get(t, b, "k", 0), pb.Tier_TIER_L1, 5, "v5")
	if _, err := a.client.Invalidate(ctx, &pb.InvalidateRequest{Key: "k", Version: 6}); err != nil {
		t.Fatal(err)
	}
	// Every node evicts, through the published event.
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := get(t, b, "k", 0); r.Found {
			return fmt.Sprintf("node b still serves %q@%d", r.Value, r.Version)
		}
		return ""
	})
	// And the stale value cannot come back.
	resp, err := b.client.Set(ctx, &pb.SetRequest{Key: "k", Value: []byte("v5"), Version: 5})
	if err != nil || resp.Accepted {
		t.Fatalf("stale Set after invalidation: %v %v, want accepted=false", resp, err)
	}
}

func TestBeyondMaxStalenessReadsGoToTheOrigin(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 1, "v1")
	n := h.start(func(c *Config) { c.MaxStaleness = 300 * time.Millisecond })
	aside := h.start(func(c *Config) { c.MaxStaleness = 300 * time.Millisecond; c.Loader = nil })
	expect(t, get(t, n, "k", 0), pb.Tier_TIER_ORIGIN, 1, "v1")
	expect(t, get(t, n, "k", 0), pb.Tier_TIER_L1, 1, "v1")
	aside.client.Set(ctxT(t), &pb.SetRequest{Key: "k", Value: []byte("v1"), Version: 1})

	heal := h.kafka.CutFetches(t)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := get(t, n, "k", 0); r.Tier != pb.Tier_TIER_ORIGIN {
			return fmt.Sprintf("still served from %s", r.Tier)
		}
		return ""
	})
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := get(t, aside, "k", 0); !r.Found || !r.Freshness.GetStale() || string(r.Value) != "v1" {
			return fmt.Sprintf("cache-aside node beyond max_staleness: %+v, want the cached value with stale=true", r)
		}
		return ""
	})
	heal()
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := get(t, n, "k", 0); r.Tier != pb.Tier_TIER_L1 {
			return fmt.Sprintf("after healing, served from %s", r.Tier)
		}
		return ""
	})
}

func TestHealthAndReadiness(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 1, "v")
	n := h.start(func(c *Config) { c.DrainDelay = time.Minute })
	ctx := ctxT(t)
	resp, err := n.health.Check(ctx, &healthpb.HealthCheckRequest{Service: pb.CacheService_ServiceDesc.ServiceName})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v; want SERVING", resp, err)
	}
	if code, _ := httpGet(t, "http://"+n.HTTPAddr()+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d, want 200", code)
	}
	if code, body := httpGet(t, "http://"+n.HTTPAddr()+"/metrics"); code != 200 || !strings.Contains(body, "cachewire_partition_freshness_seconds") {
		t.Fatalf("/metrics = %d without the freshness gauge", code)
	}
	// Shutdown first reports NOT_SERVING for the drain delay, while requests still succeed.
	sctx, cancel := context.WithCancel(context.Background())
	shut := make(chan error, 1)
	go func() { shut <- n.Shutdown(sctx) }()
	testenv.WaitFor(t, 10*time.Second, func() string {
		resp, err := n.health.Check(ctx, &healthpb.HealthCheckRequest{Service: pb.CacheService_ServiceDesc.ServiceName})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			return fmt.Sprintf("health during the drain delay = %v, %v; want NOT_SERVING", resp, err)
		}
		return ""
	})
	if code, _ := httpGet(t, "http://"+n.HTTPAddr()+"/readyz"); code != 503 {
		t.Fatalf("/readyz while draining = %d, want 503", code)
	}
	if r, err := n.client.Get(ctx, &pb.GetRequest{Key: "k"}); err != nil || r.Version != 1 {
		t.Fatalf("Get during the drain delay: %v, %v; want it served", r, err)
	}
	cancel() // stop now: the delay ends early and nothing is waited for
	if err := <-shut; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v", err)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestShutdownDrainsInFlightRequests(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 1, "v")
	n := h.start(nil)
	h.origin.mu.Lock()
	h.origin.hold = make(chan struct{})
	h.origin.started = make(chan struct{}, 1)
	h.origin.mu.Unlock()
	got := make(chan error, 1)
	go func() {
		r, err := n.client.Get(ctxT(t), &pb.GetRequest{Key: "k"})
		if err == nil && string(r.Value) != "v" {
			err = fmt.Errorf("got %+v", r)
		}
		got <- err
	}()
	<-h.origin.started
	shut := make(chan error, 1)
	go func() { shut <- n.Shutdown(context.Background()) }()
	testenv.WaitFor(t, 10*time.Second, func() string {
		if srv := n.srv.Get(); srv == nil || !srv.Draining() {
			return "not draining"
		}
		return ""
	})
	close(h.origin.hold)
	if err := <-got; err != nil {
		t.Fatalf("in-flight request failed during shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := n.Close(); err != ErrClosed {
		t.Fatalf("Close after Shutdown = %v, want ErrClosed", err)
	}
}

func TestTooManyRequestsAreRefused(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 1, "v")
	n := h.start(func(c *Config) { c.MaxInFlight = 1 })
	h.origin.mu.Lock()
	h.origin.hold = make(chan struct{})
	h.origin.started = make(chan struct{}, 1)
	h.origin.mu.Unlock()
	done := make(chan struct{})
	go func() { n.client.Get(ctxT(t), &pb.GetRequest{Key: "k"}); close(done) }()
	<-h.origin.started
	_, err := n.client.Get(ctxT(t), &pb.GetRequest{Key: "other"})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_in_flight") {
		t.Fatalf("second request: %v, want ResourceExhausted", err)
	}
	close(h.origin.hold)
	<-done
}

// TestBadEventsAreCountedAndSkipped: garbage, invalid and oversize records on the topic are
// counted and skipped; the node keeps serving and applies the valid event behind them.
func TestBadEventsAreCountedAndSkipped(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 1, "v1")
	dlq := h.kafka.CreateTopic(t, "dlq", 1)
	n := h.start(func(c *Config) { c.Limits = invalidation.Limits{MaxValueBytes: 16}; c.DeadLetterTopic = dlq })
	get(t, n, "k", 0)
	ctx := ctxT(t)
	zero, _ := invalidation.Encode(&invalidation.Event{Key: "k", Op: invalidation.OpDelete})
	big, _ := invalidation.Encode(&invalidation.Event{Key: "k", Version: 9, Op: invalidation.OpUpsert, Value: make([]byte, 17), HasValue: true})
	w := h.kafka.Writer(t, h.topic)
	if err := w.WriteMessages(ctx,
		kafka.Message{Key: []byte("k"), Value: []byte("not protobuf \xff\xff")},
		kafka.Message{Key: []byte("k"), Value: zero},
		kafka.Message{Key: []byte("k"), Value: big},
	); err != nil {
		t.Fatal(err)
	}
	if err := h.publisher().Publish(ctx, invalidation.Event{Key: "k", Version: 2, Op: invalidation.OpUpsert, Value: []byte("v2"), HasValue: true}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := get(t, n, "k", 0); r.Version != 2 || r.Tier != pb.Tier_TIER_L1 {
			return fmt.Sprintf("serves %q@%d from %s", r.Value, r.Version, r.Tier)
		}
		return ""
	})
	s, err := n.client.Stats(ctx, &pb.StatsRequest{})
	if err != nil || s.EventsInvalid != 3 {
		t.Fatalf("Stats = %v, %v; want 3 invalid events", s, err)
	}
	if code, body := httpGet(t, "http://"+n.HTTPAddr()+"/metrics"); code != 200 || !strings.Contains(body, `cachewire_events_total{result="invalid"} 3`) {
		t.Fatalf("/metrics does not count the 3 invalid events")
	}
	// The L2 group sends each bad record to the dead-letter topic once.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: h.kafka.Brokers, Dialer: h.kafka.Dialer(), Topic: dlq, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	for i := range 3 {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("dead letter %d: %v", i, err)
		}
		if i == 0 && string(m.Value) != "not protobuf \xff\xff" {
			t.Fatalf("first dead letter = %q", m.Value)
		}
	}
}

// TestFloodIsRefusedNotQueued: far more concurrent requests than max_in_flight get answers or
// ResourceExhausted, never another error, and memory stays bounded.
func TestFloodIsRefusedNotQueued(t *testing.T) {
	h := newHarness(t)
	n := h.start(func(c *Config) { c.MaxInFlight = 4 })
	for i := range 50 {
		h.origin.put(fmt.Sprint("k", i), 1, "v")
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var ok, exhausted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := n.client.Get(ctxT(t), &pb.GetRequest{Key: fmt.Sprint("k", i%50)})
			switch status.Code(err) {
			case codes.OK:
				ok.Add(1)
			case codes.ResourceExhausted:
				exhausted.Add(1)
			default:
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("flooded request failed with something other than ResourceExhausted: %v", err)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 64<<20 {
		t.Fatalf("heap grew by %d MiB under the flood", grown>>20)
	}
	if ok.Load() == 0 {
		t.Fatal("no request got through")
	}
	t.Logf("400 concurrent requests: %d answered, %d refused with ResourceExhausted", ok.Load(), exhausted.Load())
}

// TestEvictDropsTheValueEverywhereAndKeepsTheVersion: Evict needs no version; every node drops
// the value from L1, and the group from Redis, so the next read on any node loads from the
// origin; the version stays known, so an older cache-aside fill is still refused.
func TestEvictDropsTheValueEverywhereAndKeepsTheVersion(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 3, "suspect")
	a, b := h.start(nil), h.start(nil)
	expect(t, get(t, a, "k", 0), pb.Tier_TIER_ORIGIN, 3, "suspect")
	testenv.WaitFor(t, 10*time.Second, func() string {
		if r := get(t, b, "k", 0); r.Tier != pb.Tier_TIER_L2 && r.Tier != pb.Tier_TIER_L1 {
			return "node b does not read k from L2 yet: " + r.Tier.String()
		}
		return ""
	})
	expect(t, get(t, b, "k", 0), pb.Tier_TIER_L1, 3, "suspect")
	h.origin.put("k", 3, "repaired") // the origin's value was fixed in place, at the same version
	if _, err := a.client.Evict(ctxT(t), &pb.EvictRequest{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]*testNode{"a": a, "b": b} {
		testenv.WaitFor(t, 30*time.Second, func() string {
			if r := get(t, n, "k", 0); string(r.Value) != "repaired" || r.Version != 3 {
				return fmt.Sprintf("node %s serves %q@%d from %s", name, r.Value, r.Version, r.Tier)
			}
			return ""
		})
	}
	if resp, err := b.client.Set(ctxT(t), &pb.SetRequest{Key: "k", Value: []byte("old"), Version: 2}); err != nil || resp.Accepted {
		t.Fatalf("Set of version 2 after the evict: %v %v, want accepted=false", resp, err)
	}
	if _, err := a.client.Evict(ctxT(t), &pb.EvictRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Evict without a key: %v, want InvalidArgument", err)
	}
}

// TestStatsAndMetricsCountHitsAlike: a min_version read that L1 holds only at an older version is
// a miss in the Stats RPC and in /metrics alike; a read L1 answers is a hit in both.
func TestStatsAndMetricsCountHitsAlike(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 1, "v1")
	n := h.start(nil)
	expect(t, get(t, n, "k", 0), pb.Tier_TIER_ORIGIN, 1, "v1") // L1 miss
	expect(t, get(t, n, "k", 0), pb.Tier_TIER_L1, 1, "v1")     // L1 hit
	h.origin.put("k", 2, "v2")
	expect(t, get(t, n, "k", 2), pb.Tier_TIER_ORIGIN, 2, "v2") // L1 holds v1 < 2: a miss
	st, err := n.client.Stats(ctxT(t), &pb.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.L1.Hits != 1 || st.L1.Misses != 2 {
		t.Errorf("Stats: L1 hits %d misses %d, want 1 and 2", st.L1.Hits, st.L1.Misses)
	}
	_, body := httpGet(t, "http://"+n.HTTPAddr()+"/metrics")
	for _, want := range []string{`cachewire_tier_reads_total{result="hit",tier="l1"} 1`, `cachewire_tier_reads_total{result="miss",tier="l1"} 2`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestInvalidateAboveTheOriginSaysSo: an INVALIDATE at a version the origin has not reached
// (a typo) leaves reads of the key failing until the tombstone expires; the error names the
// version the origin answered and the one the node has seen, not only "keeps changing". (It
// stays the retryable keeps-changing class: from one node's view, a key changing under every
// load looks the same.)
func TestInvalidateAboveTheOriginSaysSo(t *testing.T) {
	h := newHarness(t)
	h.origin.put("k", 6, "v6")
	n := h.start(nil)
	expect(t, get(t, n, "k", 0), pb.Tier_TIER_ORIGIN, 6, "v6")
	if _, err := n.client.Invalidate(ctxT(t), &pb.InvalidateRequest{Key: "k", Version: 100}); err != nil {
		t.Fatal(err)
	}
	_, err := n.client.Get(ctxT(t), &pb.GetRequest{Key: "k"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "the origin answered version 6") ||
		!strings.Contains(err.Error(), "has seen version 100") || !strings.Contains(err.Error(), "--l1-tombstone-ttl") {
		t.Fatalf("Get after INVALIDATE@100 with the origin at 6: %v", err)
	}
}
