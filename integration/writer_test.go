package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// writerProc is a writer process.
type writerProc struct {
	*proc
	client pb.WriterServiceClient
}

// startWriter runs the writer binary; kafka are its Kafka flags (testenv's Kafka.Flags).
func startWriter(t *testing.T, kafka []string, topic, dbPath string, extra ...string) *writerProc {
	t.Helper()
	args := append(append(kafka, "--topic", topic, "--db-path", dbPath, "--writer-id", "crash-test"), extra...)
	p := startProc(t, "writer", args...)
	return &writerProc{proc: p, client: pb.NewWriterServiceClient(p.conn)}
}

// eventLog reads a topic from its beginning and records every (key, version) seen.
type eventLog struct {
	mu     sync.Mutex
	seen   map[string]map[uint64]bool
	latest map[string]uint64
	order  []string // violations of per-key order
}

func readTopic(t *testing.T, k *testenv.Kafka, topic string) *eventLog {
	t.Helper()
	l := &eventLog{seen: map[string]map[uint64]bool{}, latest: map[string]uint64{}}
	sub, err := invalidation.NewSubscriber(invalidation.SubscriberConfig{
		Brokers: k.Brokers, Kafka: k.Conn, Topics: []string{topic}, FromBeginning: true, MaxWait: 50 * time.Millisecond,
		Sink: invalidation.SinkFuncs{
			Apply: func(_ string, _ int, events []invalidation.Event) {
				l.mu.Lock()
				defer l.mu.Unlock()
				for _, e := range events {
					if l.seen[e.Key] == nil {
						l.seen[e.Key] = map[uint64]bool{}
					}
					// A version below one already seen is a redelivery if it was seen before, and
					// a per-key order violation if not.
					if e.Version < l.latest[e.Key] && !l.seen[e.Key][e.Version] {
						l.order = append(l.order, fmt.Sprintf("%s@%d after %d", e.Key, e.Version, l.latest[e.Key]))
					}
					l.seen[e.Key][e.Version] = true
					l.latest[e.Key] = max(l.latest[e.Key], e.Version)
				}
			},
			ResetFunc: func(string, int, string) {},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sub.Run(context.Background()) }()
	t.Cleanup(func() { sub.Close(); <-done })
	return l
}

// TestWriterCrashLosesNoCommittedChange: writes commit while Kafka is unreachable, the writer is
// SIGKILLed with them unpublished, and a restart with Kafka reachable publishes every one.
func TestWriterCrashLosesNoCommittedChange(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "events", 3)
	db := filepath.Join(t.TempDir(), "writer.db")
	dead := freeAddr(t) // nothing listens here: Kafka is unreachable for the first writer

	w := startWriter(t, []string{"--kafka-brokers", dead}, topic, db, "--wait-published-timeout", "10ms")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	committed := map[string][]uint64{}
	for i := range 200 {
		key := fmt.Sprintf("key-%d", i%10)
		var r *pb.PutResponse
		var err error
		if i%17 == 16 {
			var d *pb.DeleteResponse
			d, err = w.client.Delete(ctx, &pb.DeleteRequest{Key: key, WaitPublished: proto.Bool(false)})
			r = &pb.PutResponse{Version: d.GetVersion(), Published: d.GetPublished()}
		} else {
			r, err = w.client.Put(ctx, &pb.PutRequest{Key: key, Value: []byte(fmt.Sprint(i)), WaitPublished: proto.Bool(i%2 == 0)})
		}
		if err != nil {
			t.Fatalf("write %d with Kafka unreachable: %v", i, err)
		}
		if r.Published {
			t.Fatalf("write %d reported published with Kafka unreachable", i)
		}
		committed[key] = append(committed[key], r.Version)
	}
	if err := w.cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	<-w.exited
	w.exited <- nil

	w2 := startWriter(t, k.Flags(t), topic, db)
	r, err := w2.client.Put(ctx, &pb.PutRequest{Key: "key-0", Value: []byte("after restart")})
	if err != nil || !r.Published {
		t.Fatalf("Put after restart: %+v %v", r, err)
	}
	last := committed["key-0"][len(committed["key-0"])-1]
	if r.Version <= last {
		t.Fatalf("version after restart %d is not above %d", r.Version, last)
	}
	committed["key-0"] = append(committed["key-0"], r.Version)

	log := readTopic(t, k, topic)
	testenv.WaitFor(t, 60*time.Second, func() string {
		log.mu.Lock()
		defer log.mu.Unlock()
		for key, versions := range committed {
			for _, v := range versions {
				if !log.seen[key][v] {
					return fmt.Sprintf("committed %s@%d not published", key, v)
				}
			}
		}
		return ""
	})
	log.mu.Lock()
	defer log.mu.Unlock()
	for key, versions := range committed {
		if got, want := log.latest[key], versions[len(versions)-1]; got != want {
			t.Errorf("consumers end with %s@%d, want the latest committed %d", key, got, want)
		}
	}
	if len(log.order) > 0 {
		t.Errorf("per-key order broken: %v", log.order)
	}
}
