package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

// service implements CacheService on a Node.
type service struct {
	pb.UnimplementedCacheServiceServer
	n *Node
}

func (n *Node) checkKey(key string) error {
	if err := n.cfg.Limits.CheckKey(key); err != nil {
		return fmt.Errorf("%w: %s", errInvalidArgument, strings.TrimPrefix(err.Error(), "invalidation: "))
	}
	return nil
}

func (s *service) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	if err := s.n.checkKey(req.GetKey()); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.n.get(ctx, req.GetKey(), req.GetMinVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	if s.n.tracer != nil {
		trace.SpanFromContext(ctx).SetAttributes(attribute.String("cachewire.key", req.GetKey()), attribute.String("cachewire.tier", tierName(r.tier)),
			attribute.Int64("cachewire.version", int64(r.version)), attribute.Bool("cachewire.stale", r.stale))
	}
	return response(req.GetKey(), r), nil
}

func response(key string, r loaded) *pb.GetResponse {
	resp := &pb.GetResponse{Key: key, Value: r.value, Version: r.version, Found: r.found, Tier: r.tier,
		Freshness: &pb.Freshness{Stale: r.stale}, Versionless: r.versionless || r.leasedL2 || r.leasedL1}
	if !r.freshAsOf.IsZero() {
		resp.Freshness.FreshAsOf = timestamppb.New(r.freshAsOf)
	}
	return resp
}

func (s *service) BatchGet(ctx context.Context, req *pb.BatchGetRequest) (*pb.BatchGetResponse, error) {
	reqs := req.GetRequests()
	if len(reqs) > s.n.cfg.MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "batch of %d keys is over the limit: max_batch is %d", len(reqs), s.n.cfg.MaxBatch)
	}
	for i, r := range reqs {
		if err := s.n.checkKey(r.GetKey()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "request %d: %v", i, err)
		}
	}
	out := make([]*pb.GetResponse, len(reqs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, r := range reqs {
		g.Go(func() error {
			res, err := s.n.get(gctx, r.GetKey(), r.GetMinVersion())
			if err != nil {
				return fmt.Errorf("key %q: %w", r.GetKey(), err)
			}
			out[i] = response(r.GetKey(), res)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, toStatus(err)
	}
	return &pb.BatchGetResponse{Responses: out}, nil
}

func (s *service) Set(ctx context.Context, req *pb.SetRequest) (*pb.SetResponse, error) {
	n := s.n
	if err := n.checkKey(req.GetKey()); err != nil {
		return nil, toStatus(err)
	}
	if err := n.cfg.Limits.CheckValue(len(req.GetValue())); err != nil {
		return nil, status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), "invalidation: "))
	}
	if req.GetVersion() == 0 {
		return nil, status.Error(codes.InvalidArgument, "version: must be greater than zero (the version read from the system of record)")
	}
	if !n.ready.Load() {
		return nil, toStatus(errNotReady)
	}
	value := req.GetValue()
	if value == nil {
		value = []byte{}
	}
	var l2tok redistier.FillToken
	if n.l2 != nil {
		l2tok = n.l2.BeginFill(ctx, req.GetKey())
	}
	ok, _ := n.fill(ctx, req.GetKey(), req.GetVersion(), value, n.l1.BeginFill(), l2tok)
	if ok {
		n.watchLearned(req.GetKey(), req.GetVersion())
	}
	return &pb.SetResponse{Accepted: ok}, nil
}

func (s *service) Invalidate(ctx context.Context, req *pb.InvalidateRequest) (*pb.InvalidateResponse, error) {
	n := s.n
	if err := n.checkKey(req.GetKey()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetVersion() == 0 {
		return nil, status.Error(codes.InvalidArgument, "version: must be greater than zero (the version at which the key changed)")
	}
	e := invalidation.Event{Key: req.GetKey(), Version: req.GetVersion(), Op: invalidation.OpInvalidate,
		CommittedAt: time.Now(), Source: n.cfg.NodeID}
	// Publish first: every node (this one included, through its subscriber) evicts. Applying
	// locally too only makes this node's own next read see it at once.
	if err := n.pub.Publish(ctx, e); err != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot publish the invalidation to Kafka; nothing was evicted: %v", err)
	}
	n.l1.Apply(&e, n.cfg.Policy)
	n.watchLocal(e)
	if n.l2 != nil {
		_, _ = n.l2.Apply(ctx, &e, n.cfg.Policy)
	}
	return &pb.InvalidateResponse{}, nil
}

func (s *service) Evict(ctx context.Context, req *pb.EvictRequest) (*pb.EvictResponse, error) {
	n := s.n
	if err := n.checkKey(req.GetKey()); err != nil {
		return nil, toStatus(err)
	}
	e := invalidation.Event{Key: req.GetKey(), Op: invalidation.OpEvict, CommittedAt: time.Now(), Source: n.cfg.NodeID}
	// As Invalidate: every node drops the value when the event reaches it; applying it here too
	// makes this node's next read see it at once.
	if err := n.pub.Publish(ctx, e); err != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot publish the eviction to Kafka; nothing was evicted: %v", err)
	}
	if n.l2 != nil {
		// Redis first: L1 would accept its value back. If Redis refuses, it keeps the value
		// until the group applies the EVICT, and nothing holds L2 on this node until its own
		// subscriber delivers it: do not read the key from Redis until then.
		if _, err := n.l2.Apply(ctx, &e, n.cfg.Policy); err != nil {
			n.gaps.evictPending(e.Key)
		}
	}
	n.l1.Apply(&e, n.cfg.Policy)
	n.watchLocal(e)
	return &pb.EvictResponse{}, nil
}

func (s *service) Stats(context.Context, *pb.StatsRequest) (*pb.StatsResponse, error) {
	n := s.n
	l1 := n.l1.Stats()
	resp := &pb.StatsResponse{
		NodeId: n.cfg.NodeID,
		L1: &pb.TierStats{Hits: n.m.l1Hit.Load(), Misses: n.m.l1Miss.Load(), Entries: uint64(l1.Entries), Bytes: uint64(l1.Bytes),
			StaleFillsRejected: l1.StaleFillsRejected, Evictions: l1.Evictions},
		OriginLoads:   n.loads.Load(),
		EventsApplied: n.applied.Load(),
		EventsIgnored: n.ignored.Load(),
		EventsInvalid: n.sub.Stats().Invalid,
	}
	if n.l2 != nil {
		l2 := n.l2.Stats()
		resp.L2 = &pb.TierStats{Hits: n.m.l2Hit.Load(), Misses: n.m.l2Miss.Load(), StaleFillsRejected: l2.StaleFillsRejected}
	}
	n.l2mu.Lock()
	defer n.l2mu.Unlock()
	for _, p := range n.sub.Partitions() {
		pf := &pb.PartitionFreshness{Topic: p.Topic, Partition: int32(p.Partition), Offset: p.Offset, HighWatermark: p.HighWatermark}
		if !p.CaughtUpAt.IsZero() {
			pf.CaughtUpAt = timestamppb.New(p.CaughtUpAt)
		}
		if st, ok := n.l2parts[tp{p.Topic, p.Partition}]; ok {
			pf.L2CommittedOffset = st.committed
			if !st.caughtUpAt.IsZero() {
				pf.L2CaughtUpAt = timestamppb.New(st.caughtUpAt)
			}
		}
		resp.Partitions = append(resp.Partitions, pf)
	}
	return resp, nil
}

// toStatus maps the node's errors to gRPC status codes, in one place.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	switch {
	case errors.Is(err, errInvalidArgument):
		return status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), errInvalidArgument.Error()+": "))
	case errors.Is(err, errNotReady), errors.Is(err, errOriginUnavailable), errors.Is(err, errOriginBehind), errors.Is(err, errChanging), errors.Is(err, errVersionless):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// limit refuses requests beyond MaxInFlight with ResourceExhausted instead of queueing them
// without bound. Health checks are never refused.
func (n *Node) limit(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, "/grpc.health.") {
		return handler(ctx, req)
	}
	select {
	case n.sem <- struct{}{}:
		defer func() { <-n.sem }()
		return handler(ctx, req)
	default:
		n.m.rejected.Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "node is at max_in_flight (%d requests); retry with back-off", n.cfg.MaxInFlight)
	}
}
