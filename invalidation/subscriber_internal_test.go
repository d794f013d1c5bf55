package invalidation

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestCloseWaitsForARunThatHasJustStarted holds Run right after it passed its closed check and
// calls Close: Close must wait for that Run to return (and close the dead-letter writer only
// after it), instead of returning while Run goes on.
func TestCloseWaitsForARunThatHasJustStarted(t *testing.T) {
	s, err := NewSubscriber(SubscriberConfig{
		Brokers: []string{"127.0.0.1:1"}, Topics: []string{"events"}, DeadLetterTopic: "dlq",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Dialer: &kafka.Dialer{DialFunc: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("no broker in this test")
		}},
		Sink: SinkFuncs{Apply: func(string, int, []Event) {}, ResetFunc: func(string, int, string) {}},
	})
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	s.onRunStart = func() { close(started); <-release }
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(context.Background()) }()
	<-started

	closeErr := make(chan error, 1)
	go func() {
		err := s.Close()
		select {
		case <-s.done:
		default:
			err = errors.New("Close returned while Run was still running")
		}
		closeErr <- err
	}()
	// Give a wrong Close time to return early; a right one waits however long this takes.
	select {
	case err := <-closeErr:
		close(release)
		t.Fatalf("Close returned (%v) while Run was held at its start", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-closeErr; err != nil {
		t.Fatal(err)
	}
	if err := <-runErr; err != nil {
		t.Fatalf("Run = %v, want nil (it started before Close)", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}
}
