package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cachewire-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", binDir, "./cmd/cachenode", "./cmd/writer", "./cmd/demo", "./cmd/cachectl", "./cmd/relay", "./examples/users")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: building the binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeOrigin is an in-memory WriterService (Get only) whose loads the test can hold back.
type fakeOrigin struct {
	pb.UnimplementedWriterServiceServer
	mu       sync.Mutex
	data     map[string]*pb.OriginGetResponse
	hold     chan struct{}
	received chan string
	addr     string
}

func startOrigin(t *testing.T) *fakeOrigin {
	t.Helper()
	o := &fakeOrigin{data: map[string]*pb.OriginGetResponse{}, received: make(chan string, 64)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterWriterServiceServer(s, o)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	o.addr = lis.Addr().String()
	return o
}

func (o *fakeOrigin) put(key string, version uint64, value string) {
	o.mu.Lock()
	o.data[key] = &pb.OriginGetResponse{Key: key, Value: []byte(value), Version: version, Found: true}
	o.mu.Unlock()
}

func (o *fakeOrigin) setHold(ch chan struct{}) {
	o.mu.Lock()
	o.hold = ch
	o.mu.Unlock()
}

func (o *fakeOrigin) Get(ctx context.Context, req *pb.OriginGetRequest) (*pb.OriginGetResponse, error) {
	o.mu.Lock()
	hold, r := o.hold, o.data[req.GetKey()]
	o.mu.Unlock()
	select {
	case o.received <- req.GetKey():
	default:
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if r == nil {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(invalidation.VersionTrailer, "0"))
		return nil, status.Error(codes.NotFound, "no such key")
	}
	return r, nil
}

// cluster is one test's Kafka, Redis, topic and origin, shared by the node processes it starts.
type cluster struct {
	t      *testing.T
	kafka  *testenv.Kafka
	redis  *testenv.Redis
	topic  string
	group  string
	origin *fakeOrigin
}

func newCluster(t *testing.T) *cluster {
	k := testenv.NewKafka(t)
	return &cluster{t: t, kafka: k, redis: testenv.NewRedis(t), topic: k.CreateTopic(t, "events", 3),
		group: testenv.TopicName(t, "l2"), origin: startOrigin(t)}
}

// proc is a cachewire process started by a test: its gRPC and HTTP addresses, its output, and
// a channel that receives its exit.
type proc struct {
	cmd    *exec.Cmd
	grpc   string
	http   string
	conn   *grpc.ClientConn
	logs   *syncBuffer
	exited chan error
}

// startProc runs binary with args (plus --grpc-addr and --http-addr on free ports), kills it
// when t ends (printing its log if t failed), and waits until its /readyz answers 200.
func startProc(t *testing.T, binary string, args ...string) *proc {
	t.Helper()
	p := &proc{grpc: freeAddr(t), http: freeAddr(t), logs: &syncBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(filepath.Join(binDir, binary), append(args, "--grpc-addr", p.grpc, "--http-addr", p.http)...)
	p.cmd.Env = os.Environ()
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s %s log:\n%s", binary, p.grpc, p.logs.String())
		}
	})
	var err error
	if p.conn, err = grpc.NewClient(p.grpc, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.conn.Close() })
	testenv.WaitFor(t, 60*time.Second, func() string {
		select {
		case err := <-p.exited:
			p.exited <- err
			t.Fatalf("%s exited early (%v):\n%s", binary, err, p.logs.String())
		default:
		}
		if code := httpStatus("http://" + p.http + "/readyz"); code != 200 {
			return fmt.Sprintf("/readyz = %d", code)
		}
		return ""
	})
	return p
}

// nodeProc is a cachenode process.
type nodeProc struct {
	*proc
	client pb.CacheServiceClient
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// startNode runs the cachenode binary and waits until /readyz says it is serving.
func (c *cluster) startNode(withOrigin bool, extra ...string) *nodeProc {
	c.t.Helper()
	args := append(append(c.kafka.Flags(c.t), c.redis.Flags(c.t)...),
		"--topics", c.topic, "--group-id", c.group, "--log-level", "debug",
		"--drain-delay", "0s", // tests that need one pass it again
	)
	if withOrigin {
		args = append(args, "--origin-addr", c.origin.addr)
	}
	p := startProc(c.t, "cachenode", append(args, extra...)...)
	return &nodeProc{proc: p, client: pb.NewCacheServiceClient(p.conn)}
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (c *cluster) publish(e invalidation.Event) {
	c.t.Helper()
	p, err := invalidation.NewPublisher(invalidation.PublisherConfig{Brokers: c.kafka.Brokers, Kafka: c.kafka.Conn, Topic: c.topic})
	if err != nil {
		c.t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, e); err != nil {
		c.t.Fatal(err)
	}
}

func getKey(t *testing.T, p *nodeProc, key string, minVersion uint64) *pb.GetResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := p.client.Get(ctx, &pb.GetRequest{Key: key, MinVersion: minVersion})
	if err != nil {
		t.Fatalf("Get(%q) from %s: %v", key, p.grpc, err)
	}
	return r
}

func TestNodesServeAPublishedWrite(t *testing.T) {
	c := newCluster(t)
	c.origin.put("user:1", 1, "v1")
	nodes := []*nodeProc{c.startNode(true), c.startNode(true), c.startNode(true)}
	for _, n := range nodes {
		if r := getKey(t, n, "user:1", 0); r.Version != 1 {
			t.Fatalf("initial read: %+v", r)
		}
	}
	c.origin.put("user:1", 2, "v2")
	c.publish(invalidation.Event{Key: "user:1", Version: 2, Op: invalidation.OpUpsert, Value: []byte("v2"), HasValue: true, CommittedAt: time.Now()})
	for i, n := range nodes {
		testenv.WaitFor(t, 30*time.Second, func() string {
			if r := getKey(t, n, "user:1", 0); r.Version != 2 || string(r.Value) != "v2" {
				return fmt.Sprintf("node %d serves %q@%d from %s", i, r.Value, r.Version, r.Tier)
			}
			return ""
		})
	}
}

func TestOriginMissFillsL1AndL2(t *testing.T) {
	c := newCluster(t)
	c.origin.put("k", 7, "seven")
	a, b := c.startNode(true), c.startNode(true)
	if r := getKey(t, a, "k", 0); r.Tier != pb.Tier_TIER_ORIGIN || r.Version != 7 {
		t.Fatalf("first read: %+v", r)
	}
	if r := getKey(t, a, "k", 0); r.Tier != pb.Tier_TIER_L1 || r.Version != 7 {
		t.Fatalf("second read: %+v, want L1", r)
	}
	tier, err := redistier.New(redistier.Config{Addrs: []string{c.redis.Addr}, TLS: c.redis.TLS, Username: c.redis.Username, Password: c.redis.Password, KeyPrefix: c.redis.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	if e, found, err := tier.Get(context.Background(), "k"); err != nil || !found || e.Version != 7 || string(e.Value) != "seven" {
		t.Fatalf("Redis holds %+v (found %v, err %v), want seven@7", e, found, err)
	}
	// b serves from Redis once it has seen the L2 group caught up with its own position.
	testenv.WaitFor(t, 20*time.Second, func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := b.client.Stats(ctx, &pb.StatsRequest{})
		if err != nil {
			return err.Error()
		}
		for _, p := range s.Partitions {
			if p.L2CaughtUpAt == nil {
				return fmt.Sprintf("partition %d: L2 not caught up yet", p.Partition)
			}
		}
		return ""
	})
	if r := getKey(t, b, "k", 0); r.Tier != pb.Tier_TIER_L2 || r.Version != 7 {
		t.Fatalf("other node's read: %+v, want L2", r)
	}
}

func TestMinVersionForcesAFreshRead(t *testing.T) {
	c := newCluster(t)
	c.origin.put("k", 1, "one")
	n := c.startNode(true)
	getKey(t, n, "k", 0)
	c.origin.put("k", 2, "two") // committed, event not published yet
	if r := getKey(t, n, "k", 0); r.Version != 1 || r.Tier != pb.Tier_TIER_L1 {
		t.Fatalf("without min_version: %+v", r)
	}
	if r := getKey(t, n, "k", 2); r.Version != 2 || r.Tier != pb.Tier_TIER_ORIGIN {
		t.Fatalf("with min_version 2: %+v, want two@2 from the origin", r)
	}
}

func TestKafkaUnreachableBeyondMaxStaleness(t *testing.T) {
	c := newCluster(t)
	c.origin.put("k", 1, "one")
	withOrigin := c.startNode(true, "--max-staleness", "500ms")
	aside := c.startNode(false, "--max-staleness", "500ms")
	getKey(t, withOrigin, "k", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := aside.client.Set(ctx, &pb.SetRequest{Key: "k", Value: []byte("one"), Version: 1}); err != nil {
		t.Fatal(err)
	}
	if r := getKey(t, withOrigin, "k", 0); r.Tier != pb.Tier_TIER_L1 {
		t.Fatalf("before the cut: %+v", r)
	}

	heal := c.kafka.CutFetches(t)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := getKey(t, withOrigin, "k", 0); r.Tier != pb.Tier_TIER_ORIGIN || r.Freshness.GetStale() {
			return fmt.Sprintf("node with origin: served from %s stale=%v", r.Tier, r.Freshness.GetStale())
		}
		return ""
	})
	testenv.WaitFor(t, 30*time.Second, func() string {
		if r := getKey(t, aside, "k", 0); !r.Found || !r.Freshness.GetStale() {
			return fmt.Sprintf("cache-aside node: %+v, want the cached value with stale=true", r)
		}
		return ""
	})
	heal()
	testenv.WaitFor(t, 60*time.Second, func() string {
		if r := getKey(t, aside, "k", 0); r.Freshness.GetStale() {
			return "cache-aside node still stale after Kafka came back"
		}
		return ""
	})
}

func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	c := newCluster(t)
	c.origin.put("slow", 1, "worth the wait")
	n := c.startNode(true)
	hold := make(chan struct{})
	c.origin.setHold(hold)
	result := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := n.client.Get(ctx, &pb.GetRequest{Key: "slow"})
		if err == nil && string(r.Value) != "worth the wait" {
			err = fmt.Errorf("got %+v", r)
		}
		result <- err
	}()
	select {
	case <-c.origin.received:
	case <-time.After(30 * time.Second):
		t.Fatal("the request never reached the origin")
	}
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, func() string {
		if code := httpStatus("http://" + n.http + "/readyz"); code == 200 {
			return "still ready after SIGTERM"
		}
		return ""
	})
	close(hold)
	if err := <-result; err != nil {
		t.Fatalf("in-flight request during SIGTERM: %v", err)
	}
	select {
	case err := <-n.exited:
		n.exited <- err
		if err != nil {
			t.Fatalf("cachenode exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cachenode did not exit after SIGTERM")
	}
}

func TestKeyOverTheLimitIsInvalidArgument(t *testing.T) {
	c := newCluster(t)
	n := c.startNode(false, "--max-key-bytes", "8")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := n.client.Get(ctx, &pb.GetRequest{Key: "123456789"})
	if status.Code(err) != codes.InvalidArgument || !bytes.Contains([]byte(err.Error()), []byte("max_key_bytes is 8")) {
		t.Fatalf("Get with a 9-byte key: %v, want InvalidArgument naming max_key_bytes", err)
	}
}
