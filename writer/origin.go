package writer

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// originService serves OriginService, the origin API cache nodes load from with
// --origin grpc://: the same reads as WriterService.Get and BatchGet, with found=false instead
// of NotFound.
type originService struct {
	pb.UnimplementedOriginServiceServer
	s *service
}

func (o *originService) load(key string) (*pb.LoadResponse, error) {
	if err := o.s.checkKey(key); err != nil {
		return nil, err
	}
	r, found, err := o.s.w.store.get(key)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read %q: %v", key, err)
	}
	resp := &pb.LoadResponse{Key: key, Version: r.Version, Found: found && !r.Deleted}
	if resp.Found {
		resp.Value = r.Value
	}
	return resp, nil
}

func (o *originService) Load(_ context.Context, req *pb.LoadRequest) (*pb.LoadResponse, error) {
	return o.load(req.GetKey())
}

func (o *originService) BatchLoad(_ context.Context, req *pb.BatchLoadRequest) (*pb.BatchLoadResponse, error) {
	keys := req.GetKeys()
	if len(keys) > o.s.w.cfg.MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "batch of %d keys is over the limit: max_batch is %d", len(keys), o.s.w.cfg.MaxBatch)
	}
	out := make([]*pb.LoadResponse, len(keys))
	for i, k := range keys {
		r, err := o.load(k)
		if err != nil {
			return nil, status.Errorf(status.Code(err), "keys[%d]: %v", i, status.Convert(err).Message())
		}
		out[i] = r
	}
	return &pb.BatchLoadResponse{Responses: out}, nil
}
