package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachewire/cachewire/embedded"
)

var (
	clusterOnce sync.Once
	shared      *embedded.Cluster
	clusterErr  error
)

// cluster is one embedded cluster shared by this file's tests (they use distinct keys).
func cluster(t *testing.T) *embedded.Cluster {
	t.Helper()
	clusterOnce.Do(func() { shared, clusterErr = embedded.Start(embedded.Config{Nodes: 1}) })
	if clusterErr != nil {
		t.Fatal(clusterErr)
	}
	return shared
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Close()
	}
	os.Exit(code)
}

// ctl runs cachectl against the shared cluster and returns its exit code and output.
func ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	c := cluster(t)
	env := map[string]string{
		"CACHEWIRE_NODE": c.NodeAddrs[0], "CACHEWIRE_WRITER": c.WriterAddr,
		"CACHEWIRE_KAFKA_BROKERS": strings.Join(c.Brokers, ","), "CACHEWIRE_TOPIC": c.Topic,
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestPutGetDelete(t *testing.T) {
	code, out, _ := ctl(t, "put", "ctl:user", "Ada")
	if code != 0 || !strings.Contains(out, "put ctl:user at version") || !strings.Contains(out, "(published)") {
		t.Fatalf("put = %d %q", code, out)
	}
	code, out, _ = ctl(t, "get", "ctl:user")
	if code != 0 || !strings.Contains(out, "ctl:user@") || !strings.HasSuffix(out, ": Ada\n") {
		t.Fatalf("get = %d %q", code, out)
	}
	code, out, _ = ctl(t, "--json", "del", "ctl:user")
	var w writeJSON
	if code != 0 || json.Unmarshal([]byte(out), &w) != nil || w.Version == 0 || !w.Published {
		t.Fatalf("del --json = %d %q", code, out)
	}
	// Read at least the deletion's version: the node may not have applied its event yet.
	code, out, _ = ctl(t, "--json", "get", "ctl:user", "--min-version", strconv.FormatUint(w.Version, 10))
	var it itemJSON
	if code != exitNotFound || json.Unmarshal([]byte(out), &it) != nil || it.Found || it.Version != w.Version {
		t.Fatalf("get after del = %d %q, want exit 1 and found=false at the deletion's version", code, out)
	}
}

func TestInvalidate(t *testing.T) {
	ctl(t, "put", "ctl:inv", "x")
	if code, out, _ := ctl(t, "invalidate", "ctl:inv", "99"); code != 0 || !strings.Contains(out, "invalidated ctl:inv up to version 99") {
		t.Fatalf("invalidate = %d %q", code, out)
	}
	if code, _, errOut := ctl(t, "invalidate", "ctl:inv", "zero"); code != exitUsage || !strings.Contains(errOut, "positive integer") {
		t.Fatalf("invalidate with a bad version = %d %q", code, errOut)
	}
}

func TestStatsAndLag(t *testing.T) {
	ctl(t, "get", "ctl:stats")
	code, out, _ := ctl(t, "stats")
	if code != 0 || !strings.Contains(out, "origin loads") || !strings.Contains(out, "node-1") {
		t.Fatalf("stats = %d %q", code, out)
	}
	code, out, _ = ctl(t, "--json", "stats")
	var stats struct {
		NodeID string `json:"nodeId"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &stats) != nil || stats.NodeID != "node-1" {
		t.Fatalf("stats --json = %d %q", code, out)
	}
	code, out, _ = ctl(t, "lag")
	if code != 0 || !strings.Contains(out, "PARTITION") || !strings.Contains(out, "s ago") {
		t.Fatalf("lag = %d %q", code, out)
	}
	var rows []lagJSON
	code, out, _ = ctl(t, "--json", "lag")
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 3 {
		t.Fatalf("lag --json = %d %q, want 3 partitions", code, out)
	}
}

func TestTail(t *testing.T) {
	ctl(t, "put", "ctl:tail", "hello")
	code, out, errOut := ctl(t, "--json", "tail", "--from-beginning", "--count", "1")
	var e eventJSON
	if code != 0 || json.Unmarshal([]byte(strings.SplitN(out, "\n}", 2)[0]+"}"), &e) != nil || e.Key == "" || e.Version == 0 || e.Op == "" {
		t.Fatalf("tail --json = %d %q %q", code, out, errOut)
	}
	code, out, _ = ctl(t, "tail", "--from-beginning", "--count", "1")
	if code != 0 || !strings.HasPrefix(out, "p") || !strings.Contains(out, "@") {
		t.Fatalf("tail = %d %q, want p<partition>@<offset> ...", code, out)
	}
}

func TestHealth(t *testing.T) {
	if code, out, _ := ctl(t, "health"); code != 0 || !strings.Contains(out, "SERVING") {
		t.Fatalf("health = %d %q", code, out)
	}
	if code, out, _ := ctl(t, "health", "--writer"); code != 0 || !strings.Contains(out, "writer") {
		t.Fatalf("health --writer = %d %q", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"get"}, {"put", "only-key"}, {"stats", "extra"}} {
		if code, _, errOut := ctl(t, args...); code != exitUsage || errOut == "" {
			t.Errorf("cachectl %v = %d (%q), want exit 2 with a message", args, code, errOut)
		}
	}
	if code, _, _ := ctl(t, "--help"); code != 0 {
		t.Errorf("--help exited %d", code)
	}
}

func TestInvalidKeyIsExitFour(t *testing.T) {
	if code, _, errOut := ctl(t, "get", strings.Repeat("k", 2000)); code != exitInvalid || !strings.Contains(errOut, "max_key_bytes") {
		t.Fatalf("get with a long key = %d %q, want exit 4 naming the limit", code, errOut)
	}
}

func TestUnreachableTarget(t *testing.T) {
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := lis.Addr().String()
	lis.Close()
	for _, args := range [][]string{
		{"--node", dead, "--timeout", "500ms", "get", "k"},
		{"--writer", dead, "--timeout", "500ms", "put", "k", "v"},
		{"--node", dead, "--timeout", "500ms", "stats"},
		{"--kafka-brokers", dead, "--timeout", "500ms", "tail"},
		{"--node", dead, "--timeout", "500ms", "health"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, func(string) string { return "" }, &out, &errOut)
		if code != exitUnavailable || !strings.Contains(errOut.String(), "running and reachable") {
			t.Errorf("cachectl %v = %d %q, want exit 3 with a clear message", args, code, errOut.String())
		}
	}
}
