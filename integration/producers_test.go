package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/testenv"
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
		cmd := exec.CommandContext(ctx, "java", append([]string{"-cp", cp, "JsonProducer", c.kafka.Brokers[0], c.topic}, args...)...)
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
