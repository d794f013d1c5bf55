package invalidation_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

// TestCloseWaitsForARunStartingConcurrently races Close against a Run that is just starting.
// Either Close wins and Run returns ErrClosed without doing anything, or Run wins and Close waits
// for it to return: no Run may still be talking to Kafka once Close has returned (Close closes
// the dead-letter writer next). A second Close returns ErrClosed.
func TestCloseWaitsForARunStartingConcurrently(t *testing.T) {
	const iterations = 500
	var ranFirst int
	for i := range iterations {
		var closeReturned, lateDial atomic.Bool
		dialer := &kafka.Dialer{Timeout: time.Second, DialFunc: func(context.Context, string, string) (net.Conn, error) {
			if closeReturned.Load() {
				lateDial.Store(true)
			}
			return nil, errors.New("no broker in this test")
		}}
		sub, err := invalidation.NewSubscriber(invalidation.SubscriberConfig{
			Brokers: []string{"127.0.0.1:1"}, Topics: []string{"events"}, DeadLetterTopic: "dlq",
			Dialer: dialer, Logger: quietLogger(),
			Sink: invalidation.SinkFuncs{
				Apply:     func(string, int, []invalidation.Event) {},
				ResetFunc: func(string, int, string) {},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		runErr := make(chan error, 1)
		go func() { runErr <- sub.Run(context.Background()) }()
		if err := sub.Close(); err != nil {
			t.Fatalf("iteration %d: Close: %v", i, err)
		}
		closeReturned.Store(true)
		if err := sub.Close(); !errors.Is(err, invalidation.ErrClosed) {
			t.Fatalf("iteration %d: second Close = %v, want ErrClosed", i, err)
		}
		select {
		case err := <-runErr:
			switch {
			case err == nil:
				ranFirst++
			case !errors.Is(err, invalidation.ErrClosed):
				t.Fatalf("iteration %d: Run = %v, want nil or ErrClosed", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("iteration %d: Run still running 10s after Close", i)
		}
		if lateDial.Load() {
			t.Fatalf("iteration %d: Run dialed Kafka after Close had returned", i)
		}
	}
	t.Logf("%d of %d Runs started before Close", ranFirst, iterations)
}

// syncBuffer is a log destination that tests can read while the subscriber writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestUnresolvedStartOffsetIsLogged: while the broker fails ListOffsets, a partition cannot find
// its log end; that is logged (once, not on every retry) with the topic, the partition and the
// offset being resolved, and the partition is positioned once the broker answers again.
func TestUnresolvedStartOffsetIsLogged(t *testing.T) {
	k := testenv.NewKafka(t)
	if k.Fake == nil {
		t.Skip("needs the in-process Kafka to fail ListOffsets")
	}
	topic := k.CreateTopic(t, "events", 1)
	var failures atomic.Int32
	failures.Store(3)
	k.Fake.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
		if failures.Add(-1) >= 0 {
			k.Fake.KeepControl()
			return nil, errors.New("ListOffsets failed by the test"), true
		}
		return nil, nil, false
	})
	var logs syncBuffer
	startNode(t, k, topic, invalidation.RefreshAll, func(c *invalidation.SubscriberConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}) // returns once the partition is positioned
	if failures.Load() >= 0 {
		t.Fatalf("the broker failed only %d ListOffsets requests: the fault did not happen", 3-failures.Load())
	}
	var lines []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "cannot resolve the starting offset") {
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d warnings about the starting offset, want 1 (rate-limited); log:\n%s", len(lines), logs.String())
	}
	for _, want := range []string{"topic=" + topic, "partition=0", `resolving="log end"`, "err=", "attempts=1"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("warning lacks %s: %s", want, lines[0])
		}
	}
}
