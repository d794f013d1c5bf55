package bench

import (
	"context"
	"testing"
	"time"
)

// TestEchoFloor checks that the transport floor answers with its value and stops cleanly; it
// asserts no speed.
func TestEchoFloor(t *testing.T) {
	e, err := startEcho(make([]byte, 100))
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.calls(context.Background(), []string{"a", "b"}, 2, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if m.ops <= 0 || m.lat.N == 0 {
		t.Errorf("no calls measured: %+v", m)
	}
	e.Close()
	e.Close() // safe twice
}
