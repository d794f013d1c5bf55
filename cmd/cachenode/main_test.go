package main

import (
	"bytes"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/invalidation"
)

func TestHelpListsEveryFlagWithDefault(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--help"}, func(string) string { return "" }, &out); code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, want := range []string{
		"--kafka-brokers (env CACHEWIRE_NODE_KAFKA_BROKERS, default \"\")",
		"--max-staleness (env CACHEWIRE_NODE_MAX_STALENESS, default 5s)",
		"--grpc-addr (env CACHEWIRE_NODE_GRPC_ADDR, default 127.0.0.1:7070)",
		"--max-key-bytes (env CACHEWIRE_NODE_MAX_KEY_BYTES, default 1024)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{"CACHEWIRE_NODE_TOPICS": "a,b", "CACHEWIRE_NODE_MAX_STALENESS": "2s"}
	o, err := parseFlags([]string{"--kafka-brokers=k1:9092,k2:9092", "--refresh-policy=evict-only", "--redis-addrs=r:6379"},
		func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if len(c.Brokers) != 2 || len(c.Topics) != 2 || c.MaxStaleness != 2*time.Second || c.Policy != invalidation.EvictOnly || len(c.L2.Addrs) != 1 {
		t.Fatalf("config = %+v", c)
	}
	o, err = parseFlags([]string{"--kafka-brokers=k:1", "--topics=a,b", "--topic-formats=b=json,a=protobuf"}, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil || o.cfg.TopicFormats["b"].Format != invalidation.FormatJSON || o.cfg.TopicFormats["a"].Format != invalidation.FormatProtobuf {
		t.Fatalf("--topic-formats: %+v, %v", o.cfg.TopicFormats, err)
	}
}

func TestBadFlagsExitTwoWithAClearMessage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--refresh-policy=sometimes"}, "unknown refresh policy"},
		{[]string{"--redis-mode=mesh"}, "want single, sentinel or cluster"},
		{[]string{"--topics=t"}, "no Kafka brokers"},
		{[]string{"--kafka-brokers=k:1", "--topics=t", "--loader-timeout=1m"}, "shorter than the L1 tombstone TTL"},
		// --check-config used to accept these.
		{[]string{"--check-config", "--kafka-brokers=k:1", "--topics=t", "--grpc-addr=:notaport"}, `--grpc-addr ":notaport": port "notaport"`},
		{[]string{"--check-config", "--kafka-brokers=k:1", "--topics=t", "--max-staleness=0"}, "--max-staleness 0s: want a duration above zero"},
		{[]string{"--check-config", "--kafka-brokers=k", "--topics=t"}, `--kafka-brokers "k": want host:port`},
		{[]string{"--check-config", "--kafka-brokers=k:1", "--topics=t", "--topic-formats=t=avro"}, `--topic-formats: t: invalidation: unknown format "avro"`},
		{[]string{"--check-config", "--kafka-brokers=k:1", "--topics=t", "--topic-formats=json"}, `--topic-formats: invalidation: "json" is not TOPIC=FORMAT`},
		{[]string{"--check-config", "--kafka-brokers=k:1", "--topics=t", "--topic-formats=u=json"}, `a format is set for topic "u", which is not among the topics read`},
		{[]string{"--check-config", "--kafka-brokers=k:1", "--topics=t", "--http-addr=localhost"}, "--http-addr"},
		{[]string{"--check-config", "--kafka-brokers=k:1", "--topics=t", "--l1-max-bytes=0", "--drain-delay=-1s"}, "--l1-max-bytes 0: want at least 1"},
		{[]string{"--check-config", "--kafka-brokers=k:1", "--topics=t", "--drain-delay=-1s"}, "--drain-delay -1s: must not be negative"},
	} {
		var out bytes.Buffer
		if code := run(tc.args, func(string) string { return "" }, &out); code != 2 || !strings.Contains(out.String(), tc.want) {
			t.Errorf("run(%v) = %d, %q; want exit 2 mentioning %q", tc.args, code, out.String(), tc.want)
		}
	}
}

// TestDocsListEveryFlag keeps docs/configuration.md true to --help.
func TestDocsListEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	run([]string{"--help"}, func(string) string { return "" }, &out)
	for _, row := range flagenv.TableRows(out.String()) {
		if !bytes.Contains(readme, []byte(row)) {
			t.Errorf("docs/configuration.md lacks the row\n%s", row)
		}
	}
}

// TestRedisFlagsOnlyFillTheTierConfig: the Redis flags fill the tier's Config (cluster mode even
// with one seed address, the ACL user and the password); parsing builds no client.
func TestRedisFlagsOnlyFillTheTierConfig(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		cluster bool
	}{{"cluster", true}, {"single", false}} {
		env := map[string]string{"CACHEWIRE_NODE_REDIS_PASSWORD": "secret", "CACHEWIRE_NODE_REDIS_USERNAME": "cw-node"}
		o, err := parseFlags([]string{"--kafka-brokers=k:1", "--topics=t", "--redis-mode=" + tc.mode, "--redis-addrs=r1:7000"},
			func(k string) string { return env[k] }, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		l2 := o.cfg.L2
		if l2.Client != nil {
			t.Errorf("--redis-mode %s: parsing the flags built a Redis client", tc.mode)
		}
		if l2.Cluster != tc.cluster || len(l2.Addrs) != 1 || l2.Addrs[0] != "r1:7000" || l2.Username != "cw-node" || l2.Password != "secret" {
			t.Errorf("--redis-mode %s: L2 = addrs %v, cluster %v, user %q, password %q; want [r1:7000], %v, cw-node, secret",
				tc.mode, l2.Addrs, l2.Cluster, l2.Username, l2.Password, tc.cluster)
		}
	}
}

// TestCheckConfigConnectsToNothing: --check-config with Kafka and a Redis cluster configured
// succeeds without opening a connection to either, and leaves no goroutine behind.
func TestCheckConfigConnectsToNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	kafkaL, redisL := listen(t), listen(t)
	var out bytes.Buffer
	code := run([]string{"--check-config", "--kafka-brokers=" + kafkaL.Addr().String(), "--topics=t",
		"--redis-mode=cluster", "--redis-addrs=" + redisL.Addr().String(), "--redis-username=cw-node"},
		func(string) string { return "" }, &out)
	if code != 0 || !strings.Contains(out.String(), "configuration OK") {
		t.Fatalf("--check-config exited %d: %s", code, out.String())
	}
	for name, l := range map[string]net.Listener{"Kafka": kafkaL, "Redis": redisL} {
		if first := firstConnection(t, l); first != "marker" {
			t.Errorf("--check-config connected to %s (first bytes %q)", name, first)
		}
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// firstConnection connects to l itself, sending "marker", then returns the first bytes of the
// oldest connection l has queued: "marker" unless someone else connected first.
func firstConnection(t *testing.T, l net.Listener) string {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("marker")); err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 6)
	n, _ := io.ReadFull(s, buf)
	return string(buf[:n])
}
