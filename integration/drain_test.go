package integration

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TestSIGTERMReportsNotServingBeforeItStops: right after SIGTERM, cachectl health sees
// NOT_SERVING (so a load balancer or readiness probe takes the node out), requests are still
// served for the drain delay, and then the process exits 0.
func TestSIGTERMReportsNotServingBeforeItStops(t *testing.T) {
	c := newCluster(t)
	c.origin.put("k", 1, "one")
	const delay = 3 * time.Second
	n := c.startNode(true, "--drain-delay", delay.String())
	if r := getKey(t, n, "k", 0); r.Version != 1 {
		t.Fatalf("before SIGTERM: %+v", r)
	}
	health := func() (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "cachectl"), "--node", n.grpc, "--timeout", "1s", "health")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		if err != nil {
			t.Fatalf("cachectl health: %v", err)
		}
		return string(out), 0
	}
	if out, code := health(); code != 0 {
		t.Fatalf("cachectl health before SIGTERM: exit %d: %s", code, out)
	}
	sent := time.Now()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	out, code := health()
	if code == 0 || !strings.Contains(out, "NOT_SERVING") {
		t.Fatalf("cachectl health right after SIGTERM: exit %d: %s; want NOT_SERVING", code, out)
	}
	// Requests are still served during the drain delay.
	for i := 0; time.Since(sent) < delay/2; i++ {
		if r := getKey(t, n, "k", 0); r.Version != 1 {
			t.Fatalf("Get %d during the drain delay: %+v", i, r)
		}
		if _, err := n.client.Stats(context.Background(), &pb.StatsRequest{}); err != nil {
			t.Fatalf("Stats during the drain delay: %v", err)
		}
	}
	select {
	case err := <-n.exited:
		n.exited <- err
		if err != nil {
			t.Fatalf("cachenode exit after SIGTERM: %v, want status 0", err)
		}
		if d := time.Since(sent); d < delay {
			t.Fatalf("exited %v after SIGTERM, before the drain delay of %v", d, delay)
		}
	case <-time.After(delay + 30*time.Second):
		t.Fatal("cachenode did not exit after SIGTERM")
	}
}
