package writer

import (
	"context"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cachewire/cachewire/internal/serving"
	"github.com/cachewire/cachewire/internal/tracectx"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

type service struct {
	pb.UnimplementedWriterServiceServer
	w *Writer
}

func (s *service) checkKey(key string) error {
	if err := s.w.cfg.Limits.CheckKey(key); err != nil {
		return status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), "invalidation: "))
	}
	return nil
}

func (s *service) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	if err := s.checkKey(req.GetKey()); err != nil {
		return nil, err
	}
	if err := s.w.cfg.Limits.CheckValue(len(req.GetValue())); err != nil {
		return nil, status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), "invalidation: "))
	}
	value := req.GetValue()
	if value == nil {
		value = []byte{}
	}
	v, at, published, err := s.write(ctx, &write{key: req.GetKey(), value: value, client: serving.ClientName(ctx)}, req.WaitPublished)
	if err != nil {
		return nil, err
	}
	s.w.m.puts.Inc()
	return &pb.PutResponse{Version: v, Published: published, CommittedAt: timestamppb.New(at)}, nil
}

func (s *service) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	if err := s.checkKey(req.GetKey()); err != nil {
		return nil, err
	}
	v, at, published, err := s.write(ctx, &write{key: req.GetKey(), deleted: true, client: serving.ClientName(ctx)}, req.WaitPublished)
	if err != nil {
		return nil, err
	}
	s.w.m.deletes.Inc()
	return &pb.DeleteResponse{Version: v, Published: published, CommittedAt: timestamppb.New(at)}, nil
}

// write commits wr and, unless the caller turned wait_published off, waits (bounded) for Kafka's
// ack. A write that committed is never reported as an error: on timeout published is false.
func (s *service) write(ctx context.Context, wr *write, wait *bool) (uint64, time.Time, bool, error) {
	var span trace.Span
	if t := s.w.tracer; t != nil {
		wr.trace = tracectx.Inject(ctx, nil) // the call's span: the relay's publish is its child
		ctx, span = t.Start(ctx, "commit", trace.WithAttributes(attribute.String("cachewire.key", wr.key)))
	}
	err := s.w.submit(ctx, wr)
	if span != nil {
		endSpan(span, err, attribute.Int64("cachewire.version", int64(wr.version)))
	}
	if err != nil {
		if err == ErrClosed {
			return 0, time.Time{}, false, status.Error(codes.Unavailable, "writer is shutting down; nothing was written")
		}
		if ctx.Err() != nil {
			return 0, time.Time{}, false, status.FromContextError(ctx.Err()).Err()
		}
		return 0, time.Time{}, false, status.Errorf(codes.Internal, "commit failed; nothing was written: %v", err)
	}
	published := false
	if wait == nil || *wait {
		if t := s.w.tracer; t != nil {
			var span trace.Span
			ctx, span = t.Start(ctx, "wait published")
			defer func() { endSpan(span, nil, attribute.Bool("cachewire.published", published)) }()
		}
		published = s.w.waitPublished(ctx, wr.version)
	} else {
		published = s.w.isPublished(wr.version)
	}
	return wr.version, wr.committedAt, published, nil
}

func (s *service) Get(ctx context.Context, req *pb.OriginGetRequest) (*pb.OriginGetResponse, error) {
	if err := s.checkKey(req.GetKey()); err != nil {
		return nil, err
	}
	r, found, err := s.w.store.get(req.GetKey())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read %q: %v", req.GetKey(), err)
	}
	if !found || r.Deleted {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(invalidation.VersionTrailer, strconv.FormatUint(r.Version, 10)))
		if !found {
			return nil, status.Errorf(codes.NotFound, "key %q was never written", req.GetKey())
		}
		return nil, status.Errorf(codes.NotFound, "key %q was deleted at version %d", req.GetKey(), r.Version)
	}
	return &pb.OriginGetResponse{Key: req.GetKey(), Value: r.Value, Version: r.Version, Found: true}, nil
}

func (s *service) BatchGet(ctx context.Context, req *pb.OriginBatchGetRequest) (*pb.OriginBatchGetResponse, error) {
	keys := req.GetKeys()
	if len(keys) > s.w.cfg.MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "batch of %d keys is over the limit: max_batch is %d", len(keys), s.w.cfg.MaxBatch)
	}
	out := make([]*pb.OriginGetResponse, len(keys))
	for i, k := range keys {
		if err := s.checkKey(k); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "keys[%d]: %v", i, status.Convert(err).Message())
		}
		r, found, err := s.w.store.get(k)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "read %q: %v", k, err)
		}
		out[i] = &pb.OriginGetResponse{Key: k, Version: r.Version, Found: found && !r.Deleted}
		if out[i].Found {
			out[i].Value = r.Value
		}
	}
	return &pb.OriginBatchGetResponse{Responses: out}, nil
}

// endSpan ends span with attrs, recording err when there is one.
func endSpan(span trace.Span, err error, attrs ...attribute.KeyValue) {
	span.SetAttributes(attrs...)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}
