package integration

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freePort(t *testing.T) string {
	_, port, _ := net.SplitHostPort(freeAddr(t))
	return port
}

// TestDemoAsANewUserWouldRunIt: the one-command demo prints the three nodes converging on the
// scenario's write, stays up serving cachectl, and exits 0 on SIGINT.
func TestDemoAsANewUserWouldRunIt(t *testing.T) {
	ports := map[string]string{"--kafka-port": freePort(t), "--redis-port": freePort(t), "--writer-port": freePort(t)}
	nodePort := freePort(t)
	// The nodes take three consecutive ports; find a free run.
	for i := 0; i < 50; i++ {
		p, _ := strconv.Atoi(nodePort)
		if portsFree(p, 3) {
			break
		}
		nodePort = freePort(t)
	}
	args := []string{"--node-port", nodePort}
	for k, v := range ports {
		args = append(args, k, v)
	}
	cmd := exec.Command(filepath.Join(binDir, "demo"), args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("demo stderr:\n%s", logs.String())
		}
	}()

	lines := make(chan string, 256)
	var out strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitFor := func(prefix string) {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("demo output ended before %q:\n%s", prefix, out.String())
				}
				out.WriteString(l + "\n")
				if strings.HasPrefix(l, prefix) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q within 60s:\n%s", prefix, out.String())
			}
		}
	}
	waitFor("All 3 nodes converged")
	waitFor("Serving.")
	for i := 1; i <= 3; i++ {
		if !strings.Contains(out.String(), fmt.Sprintf("node %d serves user:1@2", i)) {
			t.Fatalf("node %d did not report the scenario's write:\n%s", i, out.String())
		}
	}
	// It serves cachectl requests.
	ctl := func(args ...string) string {
		t.Helper()
		b, err := exec.Command(filepath.Join(binDir, "cachectl"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cachectl %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	ctl("--writer", "127.0.0.1:"+ports["--writer-port"], "put", "user:42", "Grace")
	p, _ := strconv.Atoi(nodePort)
	if got := ctl("--node", "127.0.0.1:"+strconv.Itoa(p+2), "get", "user:42"); !strings.Contains(got, ": Grace") {
		t.Fatalf("cachectl get through node 3: %q", got)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines { // keep draining so the demo never blocks writing its goodbye
		}
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo exit after SIGINT: %v, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not exit after SIGINT")
	}
}

func portsFree(first, n int) bool {
	for p := first; p < first+n; p++ {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}
