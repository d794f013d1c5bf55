package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/grpc/codes"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/internal/topics"
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
		"CACHEWIRE_CTL_NODE": c.NodeAddrs[0], "CACHEWIRE_CTL_WRITER": c.WriterAddr,
		"CACHEWIRE_CTL_KAFKA_BROKERS": strings.Join(c.Brokers, ","), "CACHEWIRE_CTL_TOPIC": c.Topic,
	}
	return ctlIn(t, env, "", args...)
}

// ctlIn runs cachectl with env and stdin.
func ctlIn(t *testing.T, env map[string]string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := runIn(ctx, args, func(k string) string { return env[k] }, strings.NewReader(stdin), &out, &errOut)
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
	if code, out, _ := ctl(t, "invalidate", "ctl:inv", "99"); code != 0 || !strings.Contains(out, "INVALIDATE ctl:inv at version 99") {
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
		NodeID      string `json:"node_id"`
		OriginLoads uint64 `json:"origin_loads"` // a JSON number, not protojson's string
	}
	if code != 0 || json.Unmarshal([]byte(out), &stats) != nil || stats.NodeID != "node-1" || stats.OriginLoads == 0 {
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

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"help", "put"}, {"put", "--help"}, {"tail", "-h"}, {"--help"}} {
		code, out, errOut := ctl(t, args...)
		if code != 0 || out+errOut == "" {
			t.Errorf("cachectl %v = %d, want exit 0 with help", args, code)
		}
	}
	if _, out, _ := ctl(t, "put", "--help"); !strings.Contains(out, "--value-file") || !strings.Contains(out, "Usage: cachectl put") {
		t.Errorf("put --help printed %q", out)
	}
	if _, out, _ := ctl(t, "help"); !strings.Contains(out, "evict") || !strings.Contains(out, "invalidate") {
		t.Errorf("help printed %q", out)
	}
}

func TestUsageErrorListsTheCommands(t *testing.T) {
	for _, args := range [][]string{{"get"}, {"frobnicate"}, {}, {"get", "--no-such-flag", "k"}} {
		code, _, errOut := ctl(t, args...)
		if code != exitUsage || !strings.Contains(errOut, "Commands:") || !strings.Contains(errOut, "evict") {
			t.Errorf("cachectl %v = %d %q, want exit 2 and the command list", args, code, errOut)
		}
	}
}

func TestPutFromStdinAndFile(t *testing.T) {
	env := map[string]string{"CACHEWIRE_CTL_NODE": cluster(t).NodeAddrs[0], "CACHEWIRE_CTL_WRITER": cluster(t).WriterAddr}
	code, out, errOut := ctlIn(t, env, "from\nstdin\n", "--json", "put", "ctl:stdin", "-")
	var w writeJSON
	if code != 0 || json.Unmarshal([]byte(out), &w) != nil {
		t.Fatalf("put - = %d %q %q", code, out, errOut)
	}
	code, out, _ = ctl(t, "--json", "get", "ctl:stdin", "--min-version", strconv.FormatUint(w.Version, 10))
	var it itemJSON
	if code != 0 || json.Unmarshal([]byte(out), &it) != nil || it.Value != "from\nstdin\n" {
		t.Fatalf("get after put - = %d %q", code, out)
	}
	file := t.TempDir() + "/value"
	if err := os.WriteFile(file, []byte("from a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut = ctl(t, "--json", "put", "ctl:file", "--value-file", file); code != 0 || json.Unmarshal([]byte(out), &w) != nil {
		t.Fatalf("put --value-file = %d %q %q", code, out, errOut)
	}
	code, out, _ = ctl(t, "--json", "get", "ctl:file", "--min-version", strconv.FormatUint(w.Version, 10))
	if code != 0 || json.Unmarshal([]byte(out), &it) != nil || it.Value != "from a file" {
		t.Fatalf("get after put --value-file = %d %q", code, out)
	}
	if code, _, errOut = ctl(t, "put", "ctl:file", "x", "--value-file", file); code != exitUsage || !strings.Contains(errOut, "not both") {
		t.Fatalf("put with a value and --value-file = %d %q, want a usage error", code, errOut)
	}
	if code, _, errOut = ctl(t, "put", "ctl:file", "--value-file", file+".missing"); code != exitUsage || !strings.Contains(errOut, "--value-file") {
		t.Fatalf("put --value-file of a missing file = %d %q", code, errOut)
	}
}

func TestTailUntilEndStops(t *testing.T) {
	ctl(t, "put", "ctl:until-end", "last")
	code, out, errOut := ctl(t, "tail", "--from-beginning", "--until-end")
	if code != 0 || !strings.Contains(out, "ctl:until-end") {
		t.Fatalf("tail --until-end = %d %q %q, want exit 0 after printing the log", code, out, errOut)
	}
	if code, out, _ = ctl(t, "tail", "--until-end"); code != 0 || out != "" {
		t.Fatalf("tail --until-end from the log end = %d %q, want exit 0 and nothing", code, out)
	}
}

func TestTailOnAMissingTopicNamesIt(t *testing.T) {
	code, _, errOut := ctl(t, "--topic", "no.such.topic", "tail")
	if code != exitInvalid || !strings.Contains(errOut, `topic "no.such.topic" does not exist`) || !strings.Contains(errOut, "--topic") ||
		strings.Contains(errOut, "running and reachable") {
		t.Fatalf("tail on a missing topic = %d %q", code, errOut)
	}
}

func TestEvict(t *testing.T) {
	code, out, _ := ctl(t, "--json", "put", "ctl:evict", "suspect")
	var w writeJSON
	if code != 0 || json.Unmarshal([]byte(out), &w) != nil {
		t.Fatalf("put = %d %q", code, out)
	}
	ctl(t, "get", "ctl:evict", "--min-version", strconv.FormatUint(w.Version, 10))
	if code, out, errOut := ctl(t, "evict", "ctl:evict"); code != 0 || !strings.Contains(out, "EVICT ctl:evict") {
		t.Fatalf("evict = %d %q %q", code, out, errOut)
	}
	// The node applies the EVICT before it answers, so its next read loads from the origin.
	code, out, _ = ctl(t, "--json", "get", "ctl:evict")
	var it itemJSON
	if code != 0 || json.Unmarshal([]byte(out), &it) != nil || it.Tier != "ORIGIN" || it.Version != w.Version {
		t.Fatalf("get after evict = %d %q, want a load from the origin at version %d", code, out, w.Version)
	}
}

// TestHintsNameTheCause: each failure's hint names its real cause, not "is it running?".
func TestHintsNameTheCause(t *testing.T) {
	// An HTTP port (the node's /metrics, say) speaks HTTP/1, not gRPC.
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	env := map[string]string{"CACHEWIRE_CTL_NODE": strings.TrimPrefix(web.URL, "http://")}
	code, _, errOut := ctlIn(t, env, "", "--timeout", "2s", "get", "k")
	if code != exitUnavailable || !strings.Contains(errOut, "does not speak gRPC") || strings.Contains(errOut, "running and reachable") {
		t.Errorf("get against the HTTP port = %d %q", code, errOut)
	}
	// A version the origin does not have yet.
	code, _, errOut = ctl(t, "get", "ctl:behind", "--min-version", "999999999")
	if code != exitUnavailable || !strings.Contains(errOut, "has not yet reached the version") || strings.Contains(errOut, "running and reachable") {
		t.Errorf("get beyond the origin = %d %q", code, errOut)
	}
	for msg, want := range map[string]string{
		"node is starting: not yet positioned at the log end of every partition": "still catching up with Kafka",
		"origin unavailable: dial tcp: connection refused":                       "its origin",
	} {
		var errBuf bytes.Buffer
		g := &globals{errOut: &errBuf}
		err := &client.Error{Method: "Get", Code: codes.Unavailable, Message: msg}
		if code := g.fail("node 127.0.0.1:7070", err); code != exitUnavailable || !strings.Contains(errBuf.String(), want) ||
			strings.Contains(errBuf.String(), "running and reachable") {
			t.Errorf("%q gave %d %q, want a hint with %q", msg, code, errBuf.String(), want)
		}
	}
}

func TestLegacyEnvironmentStillWorks(t *testing.T) {
	env := map[string]string{"CACHEWIRE_NODE": cluster(t).NodeAddrs[0]}
	code, _, errOut := ctlIn(t, env, "", "health")
	if code != 0 || !strings.Contains(errOut, "CACHEWIRE_NODE is deprecated") || !strings.Contains(errOut, "CACHEWIRE_CTL_NODE") {
		t.Fatalf("health with CACHEWIRE_NODE = %d %q, want it to work with a warning", code, errOut)
	}
}

// TestTailSaysWhatIsNotAnEvent: a record that is not a change event (a dead-letter topic's JSON,
// say) is reported on stderr, not skipped without a word.
func TestTailSaysWhatIsNotAnEvent(t *testing.T) {
	c := cluster(t)
	topic := "ctl-not-events"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := topics.Create(ctx, c.Brokers, topics.Spec{Name: topic, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(c.Brokers...), Topic: topic, Transport: &kafka.Transport{}}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: []byte(`{"seq":7,"error":"key is empty"}`)}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := ctl(t, "--topic", topic, "tail", "--from-beginning", "--until-end")
	if code != 0 || out != "" || !strings.Contains(errOut, "p0@0 is not a change event") {
		t.Fatalf("tail = %d %q %q, want the record reported on stderr", code, out, errOut)
	}
}
