package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeNode is a CacheService whose answers the test scripts.
type fakeNode struct {
	pb.UnimplementedCacheServiceServer
	calls atomic.Int64
	get   func(n int64, req *pb.GetRequest) (*pb.GetResponse, error)
	set   func(n int64) error
}

func (f *fakeNode) Get(_ context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	return f.get(f.calls.Add(1), req)
}

func (f *fakeNode) Set(context.Context, *pb.SetRequest) (*pb.SetResponse, error) {
	if err := f.set(f.calls.Add(1)); err != nil {
		return nil, err
	}
	return &pb.SetResponse{Accepted: true}, nil
}

func serve(t *testing.T, f *fakeNode) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterCacheServiceServer(s, f)
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func TestErrorsMatchSentinels(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		want error
	}{
		{codes.InvalidArgument, ErrInvalidArgument},
		{codes.Unavailable, ErrUnavailable},
		{codes.NotFound, ErrNotFound},
		{codes.ResourceExhausted, ErrResourceExhausted},
	} {
		f := &fakeNode{get: func(int64, *pb.GetRequest) (*pb.GetResponse, error) { return nil, status.Error(tc.code, "scripted") }}
		c, err := NewCache(serve(t, f), WithRetries(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Get(context.Background(), "k")
		if !errors.Is(err, tc.want) {
			t.Errorf("code %s: error %v does not match %v", tc.code, err, tc.want)
		}
		var ce *Error
		if !errors.As(err, &ce) || ce.Code != tc.code || ce.Message != "scripted" {
			t.Errorf("code %s: errors.As gave %+v", tc.code, ce)
		}
		c.Close()
	}
}

func TestIdempotentCallsRetryOnUnavailable(t *testing.T) {
	f := &fakeNode{
		get: func(n int64, req *pb.GetRequest) (*pb.GetResponse, error) {
			if n < 3 {
				return nil, status.Error(codes.Unavailable, "try again")
			}
			return &pb.GetResponse{Key: req.Key, Found: true, Version: 1}, nil
		},
	}
	c, err := NewCache(serve(t, f), WithRetries(3, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	it, err := c.Get(context.Background(), "k")
	if err != nil || !it.Found || f.calls.Load() != 3 {
		t.Fatalf("Get = %+v, %v after %d calls; want success on the 3rd", it, err, f.calls.Load())
	}
}

func TestRetriesStopAtTheLimitAndNotForOtherCodes(t *testing.T) {
	f := &fakeNode{get: func(int64, *pb.GetRequest) (*pb.GetResponse, error) {
		return nil, status.Error(codes.Unavailable, "down")
	}}
	c, _ := NewCache(serve(t, f), WithRetries(2, time.Millisecond))
	defer c.Close()
	if _, err := c.Get(context.Background(), "k"); !errors.Is(err, ErrUnavailable) || f.calls.Load() != 3 {
		t.Fatalf("err %v after %d calls, want Unavailable after 3", err, f.calls.Load())
	}
	f2 := &fakeNode{set: func(int64) error { return status.Error(codes.InvalidArgument, "bad") }}
	c2, _ := NewCache(serve(t, f2), WithRetries(5, time.Millisecond))
	defer c2.Close()
	if _, err := c2.Set(context.Background(), "k", nil, 1); !errors.Is(err, ErrInvalidArgument) || f2.calls.Load() != 1 {
		t.Fatalf("err %v after %d calls, want InvalidArgument without retries", err, f2.calls.Load())
	}
}

func TestDefaultDeadline(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	f := &fakeNode{get: func(int64, *pb.GetRequest) (*pb.GetResponse, error) { <-block; return &pb.GetResponse{}, nil }}
	c, _ := NewCache(serve(t, f), WithTimeout(50*time.Millisecond))
	defer c.Close()
	if _, err := c.Get(context.Background(), "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get past the default deadline: %v, want DeadlineExceeded", err)
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := lis.Addr().String()
	lis.Close()
	c, _ := NewCache(addr, WithRetries(1, time.Millisecond), WithTimeout(time.Second))
	defer c.Close()
	if err := c.Health(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Health of nothing: %v, want ErrUnavailable", err)
	}
}

// TestRequestOverTheTransportBoundIsInvalid: a request larger than the server's gRPC message
// bound is refused by gRPC itself with ResourceExhausted; the client reports it as invalid,
// since backing off and retrying cannot help.
func TestRequestOverTheTransportBoundIsInvalid(t *testing.T) {
	f := &fakeNode{set: func(int64) error { return nil }}
	c, err := NewCache(serve(t, f), WithRetries(0, 0)) // gRPC's default bound: 4 MiB
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Set(context.Background(), "k", make([]byte, 5<<20), 1)
	if !errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrResourceExhausted) {
		t.Fatalf("Set of 5 MiB: %v, want ErrInvalidArgument", err)
	}
	if !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("error %q does not say the request was too large", err)
	}
}
