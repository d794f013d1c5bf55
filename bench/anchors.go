package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// measured is one timed measurement of an anchor: operations per second and their latencies.
type measured struct {
	ops float64
	lat Summary
}

// measure drives op from conc workers for d, as drive does, and summarises the result. The rate
// is over d, or over the time taken when drive's per-worker sample cap ended it sooner (a
// client-side cache hit is fast enough to reach it).
func measure(ctx context.Context, conc int, d time.Duration, op func(rng *rand.Rand) error) (measured, error) {
	start := time.Now()
	n, lat, err := drive(ctx, conc, d, op)
	if err != nil {
		return measured{}, err
	}
	return measured{ops: float64(n) / min(time.Since(start), d).Seconds(), lat: lat.Summarize()}, nil
}

// errNoClientCache means the Redis cannot serve rueidis's client-side cache: it lacks RESP3 or
// CLIENT TRACKING, as miniredis does. Rows anchored on rueidis are then skipped, not failed.
var errNoClientCache = errors.New("redis does not support client-side caching (RESP3 CLIENT TRACKING)")

// rueidisHits measures rueidis DoCache hits: client-side caching with RESP3 tracking, the
// anchor for reads served without a network round trip. It connects to the Redis at addr (TLS
// when tlsCfg is set) as the default user, reads each of keys once with DoCache to fill the
// client-side cache, then drives DoCache of random keys from conc workers for d. Every key must
// hold a value. It fails if a read after the warm-up is not a cache hit, and with an error
// wrapping errNoClientCache when the server cannot track (as miniredis cannot). The client is
// closed before it returns.
func rueidisHits(ctx context.Context, addr string, tlsCfg *tls.Config, keys []string, conc int, d time.Duration) (measured, error) {
	if len(keys) == 0 {
		return measured{}, errors.New("rueidis: no keys")
	}
	c, err := rueidisClient(addr, tlsCfg)
	if errors.Is(err, rueidis.ErrNoCache) {
		return measured{}, fmt.Errorf("%w: %s", errNoClientCache, firstLine(err))
	}
	if err != nil {
		return measured{}, fmt.Errorf("rueidis: %w", err)
	}
	defer c.Close()
	// Long enough that no entry expires while the workers read.
	ttl := d + time.Minute
	get := func(k string) (hit bool, err error) {
		res := c.DoCache(ctx, c.B().Get().Key(k).Cache(), ttl)
		if _, err := res.ToString(); err != nil {
			return false, fmt.Errorf("rueidis: GET %s: %w", k, err)
		}
		return res.IsCacheHit(), nil
	}
	for _, k := range keys {
		if _, err := get(k); err != nil {
			return measured{}, err
		}
	}
	if hit, err := get(keys[0]); err != nil {
		return measured{}, err
	} else if !hit {
		return measured{}, fmt.Errorf("%w: a read after the warm-up was not a cache hit", errNoClientCache)
	}
	return measure(ctx, conc, d, func(rng *rand.Rand) error {
		k := keys[rng.IntN(len(keys))]
		hit, err := get(k)
		if err == nil && !hit {
			err = fmt.Errorf("rueidis: GET %s was not a client-side cache hit after the warm-up", k)
		}
		return err
	})
}

// rueidisClient connects rueidis to the Redis at addr (TLS when tlsCfg is set) as the default
// user, with client-side caching.
func rueidisClient(addr string, tlsCfg *tls.Config) (rueidis.Client, error) {
	return rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, TLSConfig: tlsCfg})
}

// firstLine is err's message up to its first newline (rueidis spreads ErrNoCache over lines).
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// echoFloor is a bare grpc-go unary server, in process on 127.0.0.1 in plaintext with no
// interceptors, and one client connection to it: the transport floor under the sidecar's Get.
// Its one method takes a pb.GetRequest and answers a pb.GetResponse holding a fixed value.
type echoFloor struct {
	srv    *grpc.Server
	cc     *grpc.ClientConn
	value  []byte
	served chan struct{} // closed when Serve has returned
}

// echoMethod is the full name of echoFloor's method, which cc.Invoke calls.
const echoMethod = "/bench.Echo/Echo"

// startEcho starts an echoFloor whose answers carry value, on a free port. Close stops it.
func startEcho(value []byte) (*echoFloor, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &echoFloor{srv: grpc.NewServer(), value: value, served: make(chan struct{})}
	e.srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "bench.Echo",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echoHandler}},
	}, e)
	go func() {
		defer close(e.served)
		_ = e.srv.Serve(lis) // nil after Stop; an accept error just ends the floor's calls
	}()
	e.cc, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// echoHandler is the unary handler of echoMethod. The server has no interceptors, so the
// interceptor argument is nil and ignored.
func echoHandler(srv any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	req := new(pb.GetRequest)
	if err := dec(req); err != nil {
		return nil, err
	}
	return &pb.GetResponse{Key: req.GetKey(), Value: srv.(*echoFloor).value, Version: 1, Found: true}, nil
}

// calls measures unary echo calls of random keys from conc workers for d.
func (e *echoFloor) calls(ctx context.Context, keys []string, conc int, d time.Duration) (measured, error) {
	return measure(ctx, conc, d, func(rng *rand.Rand) error {
		resp := new(pb.GetResponse)
		if err := e.cc.Invoke(ctx, echoMethod, &pb.GetRequest{Key: keys[rng.IntN(len(keys))]}, resp); err != nil {
			return fmt.Errorf("grpc echo: %w", err)
		}
		if len(resp.GetValue()) != len(e.value) {
			return fmt.Errorf("grpc echo: %d-byte value, want %d", len(resp.GetValue()), len(e.value))
		}
		return nil
	})
}

// Close closes the connection, stops the server at once and waits for it. It is safe to call
// twice.
func (e *echoFloor) Close() {
	if e.cc != nil {
		e.cc.Close()
	}
	e.srv.Stop()
	<-e.served
}

// addRueidisRows reports the sidecar's Get (cw, cs) beside rueidis DoCache hits (a) for
// caseName: throughput and p99.
func (r *runner) addRueidisRows(caseName string, cw float64, cs Summary, a measured) {
	const anchor = "rueidis DoCache hit"
	r.rep.add(Row{Scenario: "cached read", Case: caseName, Metric: "throughput", Unit: "ops/s",
		Cachewire: cw, Anchor: anchor, AnchorVal: a.ops})
	r.rep.add(Row{Scenario: "cached read", Case: caseName, Metric: "p99 latency", Unit: "ns",
		Cachewire: float64(cs.P99), Anchor: anchor, AnchorVal: float64(a.lat.P99)})
}

// addEchoRows reports the sidecar's Get (cw, cs) beside the bare gRPC echo (a) for caseName:
// throughput, with the goal of 0.9× the echo at concurrency 16, and p99.
func (r *runner) addEchoRows(caseName string, conc int, cw float64, cs Summary, a measured) {
	const anchor = "grpc-go unary echo"
	row := Row{Scenario: "cached read", Case: caseName, Metric: "throughput vs transport floor", Unit: "ops/s",
		Cachewire: cw, Anchor: anchor, AnchorVal: a.ops}
	if conc == 16 {
		row.Goal, row.Met = "≥ 0.9× echo", met(cw >= 0.9*a.ops)
	}
	r.rep.add(row)
	r.rep.add(Row{Scenario: "cached read", Case: caseName, Metric: "p99 latency vs transport floor", Unit: "ns",
		Cachewire: float64(cs.P99), Anchor: anchor, AnchorVal: float64(a.lat.P99)})
}
