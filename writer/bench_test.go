package writer

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/cachewire/cachewire/internal/testenv"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// BenchmarkPut measures Puts per second through gRPC into a writer (bbolt with fsync, outbox,
// relay to Kafka), at 1 and 16 concurrent clients, with wait_published on and off.
//
//	go test -run XXX -bench Put -benchtime 3s ./writer/
//	CACHEWIRE_TEST_KAFKA=127.0.0.1:19092 go test -run XXX -bench Put -benchtime 3s ./writer/
func BenchmarkPut(b *testing.B) {
	for _, clients := range []int{1, 16} {
		for _, wait := range []bool{false, true} {
			b.Run(fmt.Sprintf("clients=%d/wait_published=%v", clients, wait), func(b *testing.B) {
				k := testenv.NewKafka(b)
				topic := k.CreateTopic(b, "bench", 3)
				w, err := New(Config{WriterID: "bench", DBPath: filepath.Join(b.TempDir(), "w.db"), GRPCAddr: "127.0.0.1:0",
					HTTPAddr: "-", Brokers: k.Brokers, Kafka: k.Conn, Topic: topic, Logger: logger()})
				if err != nil {
					b.Fatal(err)
				}
				if err := w.Start(); err != nil {
					b.Fatal(err)
				}
				defer w.Close()
				conn, err := grpc.NewClient(w.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				client := pb.NewWriterServiceClient(conn)
				value := make([]byte, 100)
				var seq, unpublished atomic.Int64
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := seq.Add(1)
							if i > int64(b.N) {
								return
							}
							r, err := client.Put(context.Background(), &pb.PutRequest{Key: "key-" + strconv.FormatInt(i%1000, 10),
								Value: value, WaitPublished: proto.Bool(wait)})
							if err != nil {
								b.Error(err)
								return
							}
							if wait && !r.Published {
								unpublished.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "puts/s")
				if unpublished.Load() > 0 {
					b.Logf("%d Puts timed out waiting for the ack", unpublished.Load())
				}
			})
		}
	}
}
