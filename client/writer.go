package client

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// Write is the result of a Put or Delete.
type Write struct {
	// Version is the new version of the key.
	Version uint64
	// Published is true when Kafka acked the change event before the call returned.
	Published bool
	// CommittedAt is when the writer committed the change.
	CommittedAt time.Time
}

// WriteOption tunes one write.
type WriteOption func(*writeOptions)

type writeOptions struct{ wait bool }

// NoWait returns as soon as the change is committed, without waiting for Kafka's ack
// (Published is then usually false).
func NoWait() WriteOption { return func(o *writeOptions) { o.wait = false } }

// Writer is a client of the writer (WriterService). It is safe for concurrent use.
type Writer struct {
	c   *conn
	api pb.WriterServiceClient
}

// NewWriter returns a client for the writer at target (for example "127.0.0.1:7080"). It
// connects lazily.
func NewWriter(target string, opts ...Option) (*Writer, error) {
	c, err := dial(target, "", opts)
	if err != nil {
		return nil, err
	}
	return &Writer{c: c, api: pb.NewWriterServiceClient(c.cc)}, nil
}

func writeOpts(opts []WriteOption) *bool {
	o := writeOptions{wait: true}
	for _, f := range opts {
		f(&o)
	}
	return proto.Bool(o.wait)
}

// Put stores value under key and returns its new version. By default it returns after Kafka
// acked the change event, so a read with MinVersion(version) on any node is served that value or
// a newer one. Put creates a version, so it is never retried.
func (w *Writer) Put(ctx context.Context, key string, value []byte, opts ...WriteOption) (Write, error) {
	var resp *pb.PutResponse
	err := w.c.call(ctx, "Put", false, func(ctx context.Context) (err error) {
		resp, err = w.api.Put(ctx, &pb.PutRequest{Key: key, Value: value, WaitPublished: writeOpts(opts)})
		return err
	})
	if err != nil {
		return Write{}, err
	}
	return Write{Version: resp.GetVersion(), Published: resp.GetPublished(), CommittedAt: resp.GetCommittedAt().AsTime()}, nil
}

// Delete deletes key and returns the version of the deletion. It is never retried.
func (w *Writer) Delete(ctx context.Context, key string, opts ...WriteOption) (Write, error) {
	var resp *pb.DeleteResponse
	err := w.c.call(ctx, "Delete", false, func(ctx context.Context) (err error) {
		resp, err = w.api.Delete(ctx, &pb.DeleteRequest{Key: key, WaitPublished: writeOpts(opts)})
		return err
	})
	if err != nil {
		return Write{}, err
	}
	return Write{Version: resp.GetVersion(), Published: resp.GetPublished(), CommittedAt: resp.GetCommittedAt().AsTime()}, nil
}

// Get reads key from the system of record, bypassing every cache. A key with no value gives an
// error matching ErrNotFound.
func (w *Writer) Get(ctx context.Context, key string) (Item, error) {
	var resp *pb.OriginGetResponse
	err := w.c.call(ctx, "Get", true, func(ctx context.Context) (err error) {
		resp, err = w.api.Get(ctx, &pb.OriginGetRequest{Key: key})
		return err
	})
	if err != nil {
		return Item{Key: key}, err
	}
	return Item{Key: key, Value: resp.GetValue(), Version: resp.GetVersion(), Found: true, Tier: TierOrigin, FreshAsOf: time.Now()}, nil
}

// Health returns nil when the writer reports SERVING.
func (w *Writer) Health(ctx context.Context) error { return w.c.check(ctx, "") }

// Close closes the connection.
func (w *Writer) Close() error { return w.c.cc.Close() }
