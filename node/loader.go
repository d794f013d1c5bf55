package node

import (
	"context"
	"fmt"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// Loaded is what the origin holds for a key.
type Loaded struct {
	Value   []byte
	Version uint64
	// Found is false when the origin has no value for the key: Version is then the version of its
	// deletion, or 0 if it was never written.
	Found bool
	// Versionless is true when the origin cannot say which version it returned (Version is then
	// ignored). The node fills such an answer under a lease: only if no tier changed for the key
	// while it was read, stored at the version the tiers knew when the load began, so that any
	// later event evicts it. A versionless answer cannot satisfy a read with min_version > 0.
	Versionless bool
}

// Loader reads keys from the origin (the system of record). Load must honour ctx: the node
// cancels it when every request waiting for it has given up.
type Loader interface {
	Load(ctx context.Context, key string) (Loaded, error)
}

// LoaderFunc adapts a function to a Loader.
type LoaderFunc func(ctx context.Context, key string) (Loaded, error)

// Load calls f.
func (f LoaderFunc) Load(ctx context.Context, key string) (Loaded, error) { return f(ctx, key) }

// WriterLoader loads from a WriterService (cmd/writer, or any service that implements it).
type WriterLoader struct {
	client pb.WriterServiceClient
	conn   *grpc.ClientConn // set by DialWriter, closed by Close
}

// NewWriterLoader returns a Loader that calls WriterService.Get over conn.
func NewWriterLoader(conn grpc.ClientConnInterface) *WriterLoader {
	return &WriterLoader{client: pb.NewWriterServiceClient(conn)}
}

// DialWriter returns a Loader for the WriterService at addr (plaintext gRPC, plus opts: say,
// telemetry's tracing); Close releases it. It connects lazily.
func DialWriter(addr string, opts ...grpc.DialOption) (*WriterLoader, error) {
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("node: origin address %q: %w", addr, err)
	}
	return &WriterLoader{client: pb.NewWriterServiceClient(conn), conn: conn}, nil
}

// Close closes the connection DialWriter opened; it does nothing for NewWriterLoader.
func (w *WriterLoader) Close() error {
	if w.conn == nil {
		return nil
	}
	return w.conn.Close()
}

// Load calls WriterService.Get. NotFound is not an error: it gives Found=false with the
// deletion's version from the trailer.
func (w *WriterLoader) Load(ctx context.Context, key string) (Loaded, error) {
	var trailer metadata.MD
	resp, err := w.client.Get(ctx, &pb.OriginGetRequest{Key: key}, grpc.Trailer(&trailer))
	if status.Code(err) == codes.NotFound {
		var v uint64
		if vals := trailer.Get(invalidation.VersionTrailer); len(vals) > 0 {
			v, _ = strconv.ParseUint(vals[0], 10, 64)
		}
		return Loaded{Version: v}, nil
	}
	if err != nil {
		return Loaded{}, err
	}
	return Loaded{Value: resp.GetValue(), Version: resp.GetVersion(), Found: resp.GetFound()}, nil
}
