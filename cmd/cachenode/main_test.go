package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/invalidation"
)

func TestHelpListsEveryFlagWithDefault(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--help"}, func(string) string { return "" }, &out); code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, want := range []string{
		"--kafka-brokers (env CACHEWIRE_KAFKA_BROKERS, default \"\")",
		"--max-staleness (env CACHEWIRE_MAX_STALENESS, default 5s)",
		"--grpc-addr (env CACHEWIRE_GRPC_ADDR, default 127.0.0.1:7070)",
		"--max-key-bytes (env CACHEWIRE_MAX_KEY_BYTES, default 1024)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{"CACHEWIRE_TOPICS": "a,b", "CACHEWIRE_MAX_STALENESS": "2s"}
	o, err := parseFlags([]string{"--kafka-brokers=k1:9092,k2:9092", "--refresh-policy=evict-only", "--redis-addrs=r:6379"},
		func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if len(c.Brokers) != 2 || len(c.Topics) != 2 || c.MaxStaleness != 2*time.Second || c.Policy != invalidation.EvictOnly || len(c.L2.Addrs) != 1 {
		t.Fatalf("config = %+v", c)
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
	} {
		var out bytes.Buffer
		if code := run(tc.args, func(string) string { return "" }, &out); code != 2 || !strings.Contains(out.String(), tc.want) {
			t.Errorf("run(%v) = %d, %q; want exit 2 mentioning %q", tc.args, code, out.String(), tc.want)
		}
	}
}

// TestREADMEDocumentsEveryFlag keeps the README's configuration table true to --help.
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	run([]string{"--help"}, func(string) string { return "" }, &out)
	for _, row := range flagenv.TableRows(out.String()) {
		if !bytes.Contains(readme, []byte(row)) {
			t.Errorf("README.md lacks the row\n%s", row)
		}
	}
}
