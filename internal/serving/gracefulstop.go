package serving

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
)

// gracefulStop lets the requests in flight on s finish, until ctx ends; then it stops s at once
// and returns an error saying requests were still in flight. It returns once s has stopped.
func gracefulStop(ctx context.Context, s *grpc.Server) error {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Stop()
		<-done
		return fmt.Errorf("requests still in flight after the shutdown bound: %w", ctx.Err())
	}
}
