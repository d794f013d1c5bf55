package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/internal/topics"
	"github.com/cachewire/cachewire/invalidation"
)

// javaClasspath compiles examples/java-json-producer into a temp dir and returns the classpath
// to run it with (the Kafka client jars scripts/kafka.sh resolved), or skips the test.
func javaClasspath(t *testing.T) string {
	t.Helper()
	if os.Getenv(testenv.EnvKafka) == "" {
		t.Skip("needs a real Kafka (scripts/kafka.sh start; " + testenv.EnvKafka + "), whose jars give the Java client")
	}
	if _, err := exec.LookPath("javac"); err != nil {
		t.Skip("needs a JDK (javac) for the Java producer")
	}
	out, err := exec.Command("../scripts/kafka.sh", "classpath").Output()
	if err != nil {
		t.Fatalf("scripts/kafka.sh classpath: %v", err)
	}
	cp := strings.TrimSpace(string(out))
	dir := t.TempDir()
	if out, err := exec.Command("javac", "-cp", cp, "-d", dir, "../examples/java-json-producer/JsonProducer.java").CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	return dir + string(filepath.ListSeparator) + cp
}

// TestJavaProducerJSONRefreshesEveryNode: the plain Apache Kafka Java client (default
// partitioner, String keys) sends JSON change events with contentType: application/json, as
// Spring Cloud Stream does; three node processes with no format configured refresh (UPSERT with its value),
// then evict (INVALIDATE) and load the new version from the origin.
func TestJavaProducerJSONRefreshesEveryNode(t *testing.T) {
	cp := javaClasspath(t)
	c := newCluster(t)
	c.origin.put("user:7", 1, "v1")
	nodes := []*nodeProc{c.startNode(true), c.startNode(true), c.startNode(true)}
	for _, n := range nodes {
		if r := getKey(t, n, "user:7", 0); r.Version != 1 {
			t.Fatalf("initial read: %+v", r)
		}
	}
	send := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "java", append([]string{"-cp", cp, "JsonProducer", c.kafka.JVMBootstrap(), c.topic}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("java JsonProducer %v: %v\n%s", args, err, out)
		}
	}
	c.origin.put("user:7", 2, "Ada")
	send("user:7", "2", "UPSERT", "Ada")
	for i, n := range nodes {
		testenv.WaitFor(t, 30*time.Second, func() string {
			if r := getKey(t, n, "user:7", 0); r.Version != 2 || string(r.Value) != "Ada" {
				return fmt.Sprintf("node %d serves %q@%d from %s", i, r.Value, r.Version, r.Tier)
			}
			return ""
		})
	}
	c.origin.put("user:7", 3, "Grace")
	send("user:7", "3", "INVALIDATE") // evicts: the next read loads v3 from the origin
	for i, n := range nodes {
		testenv.WaitFor(t, 30*time.Second, func() string {
			if r := getKey(t, n, "user:7", 0); r.Version != 3 || string(r.Value) != "Grace" {
				return fmt.Sprintf("node %d serves %q@%d from %s", i, r.Value, r.Version, r.Tier)
			}
			return ""
		})
	}
}

// TestSpringCloudStreamProducerRefreshesEveryNode: examples/spring-cloud-stream, a Spring Boot 3
// service publishing with StreamBridge through the Kafka binder (source -> channel -> binder ->
// Kafka, JSON with contentType application/json), built with Maven and run against the real
// broker. Its record key is the cache key, so the record lands on the partition nodes compute
// (murmur2); three node processes, with the service's HTTP endpoint as origin and no topic
// setting, refresh on an update and evict on a delete within the freshness bound.
func TestSpringCloudStreamProducerRefreshesEveryNode(t *testing.T) {
	if os.Getenv(testenv.EnvKafka) == "" {
		t.Skip("needs a real Kafka (scripts/kafka.sh start; " + testenv.EnvKafka + ")")
	}
	for _, tool := range []string{"java", "mvn"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s to build and run the Spring Boot example", tool)
		}
	}
	build := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "mvn", "-q", "-B", "-f", "../examples/spring-cloud-stream/pom.xml", "package",
		"-DskipTests", "-Dbuild.dir="+build).CombinedOutput(); err != nil {
		t.Fatalf("mvn package: %v\n%s", err, out)
	}
	c := newCluster(t)
	topic := testenv.TopicName(t, "spring")
	if err := c.kafka.Admin().Create(ctx, topics.Spec{Name: topic, Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.kafka.Admin().Delete(context.Background(), topic) })
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	app := exec.Command("java", "-Xmx256m", "-jar", filepath.Join(build, "users-stream.jar"))
	app.Env = append(os.Environ(), "PORT="+port, "TOPIC="+topic, "KAFKA_BROKERS="+c.kafka.JVMBootstrap())
	logs := &syncBuffer{}
	app.Stdout, app.Stderr = logs, logs
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = app.Process.Kill()
		_ = app.Wait()
		if t.Failed() {
			t.Logf("users-stream log:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	testenv.WaitFor(t, 2*time.Minute, func() string {
		if code := httpStatus(base + "/healthz"); code != 200 {
			return fmt.Sprintf("the Spring app's /healthz = %d", code)
		}
		return ""
	})
	write := func(method, body string) uint64 {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+"/users/42", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Version uint64 }
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&out) != nil || out.Version == 0 {
			t.Fatalf("%s /users/42: %s", method, resp.Status)
		}
		return out.Version
	}
	const maxStaleness = 5 * time.Second
	var nodes []*nodeProc
	for range 3 {
		nodes = append(nodes, c.startNode(false, "--topics", topic, "--origin", base+"/cache/{key}", "--max-staleness", maxStaleness.String()))
	}
	v1 := write(http.MethodPut, "Ada")
	for _, n := range nodes {
		if r := getKey(t, n, "user:42", v1); r.Version != v1 || string(r.Value) != "Ada" {
			t.Fatalf("read your write: %+v", r)
		}
	}
	// The record is on the partition every node computes for the key.
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: c.kafka.Brokers, Dialer: c.kafka.Dialer(), Topic: topic, Partition: invalidation.PartitionFor("user:42", 3), MaxWait: 50 * time.Millisecond})
	defer rd.Close()
	mctx, mcancel := context.WithTimeout(ctx, 30*time.Second)
	m, err := rd.ReadMessage(mctx)
	mcancel()
	if err != nil || string(m.Key) != "user:42" {
		t.Fatalf("partition %d: %q, %v; want the user:42 record (murmur2 of the key)", invalidation.PartitionFor("user:42", 3), m.Key, err)
	}
	// The freshness bound: a node serves what was published more than max_staleness ago, or
	// says it is stale (this node is healthy, so it never says so).
	bound := maxStaleness + 500*time.Millisecond
	v2 := write(http.MethodPut, "Grace")
	for i, n := range nodes {
		testenv.WaitFor(t, bound, func() string {
			if r := getKey(t, n, "user:42", 0); r.Version != v2 || string(r.Value) != "Grace" || r.Freshness.GetStale() {
				return fmt.Sprintf("node %d serves %q@%d from %s", i, r.Value, r.Version, r.Tier)
			}
			return ""
		})
	}
	v3 := write(http.MethodDelete, "")
	for i, n := range nodes {
		testenv.WaitFor(t, bound, func() string {
			if r := getKey(t, n, "user:42", 0); r.Found || r.Version != v3 {
				return fmt.Sprintf("node %d serves %q@%d (found %v) from %s", i, r.Value, r.Version, r.Found, r.Tier)
			}
			return ""
		})
	}
}
