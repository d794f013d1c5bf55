package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/cachewire/cachewire/internal/flagenv"
)

func TestHelpListsEveryFlagWithDefault(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--help"}, func(string) string { return "" }, &out); code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, want := range []string{
		"--topic (env CACHEWIRE_WRITER_TOPIC, default cachewire.events)",
		"--event-value-max (env CACHEWIRE_WRITER_EVENT_VALUE_MAX, default 65536)",
		"--wait-published-timeout (env CACHEWIRE_WRITER_WAIT_PUBLISHED_TIMEOUT, default 5s)",
		"--dead-letter-topic (env CACHEWIRE_WRITER_DEAD_LETTER_TOPIC, default \"\")",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestBadFlagsExitTwo(t *testing.T) {
	for _, args := range [][]string{{"--log-format=xml", "--kafka-brokers=k:1"}, {"--topic="}, {"extra"},
		{"--check-config", "--kafka-brokers=k:1", "--grpc-addr=:notaport"},
		{"--check-config", "--kafka-brokers=k:1", "--wait-published-timeout=0"},
		{"--check-config", "--kafka-brokers=k:1", "--relay-batch=0"}} {
		var out bytes.Buffer
		if code := run(args, func(string) string { return "" }, &out); code != 2 || out.Len() == 0 || strings.Contains(out.String(), "writer: writer:") {
			t.Errorf("run(%v) = %d with %q; want exit 2 and a message that names the writer once", args, code, out.String())
		}
	}
}

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

// TestDeadLetterTopicFlagAndEnvironment: --dead-letter-topic (or CACHEWIRE_WRITER_DEAD_LETTER_TOPIC)
// reaches the writer's Config.
func TestDeadLetterTopicFlagAndEnvironment(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--dead-letter-topic=cachewire.dead"}, nil},
		{nil, map[string]string{"CACHEWIRE_WRITER_DEAD_LETTER_TOPIC": "cachewire.dead"}},
	} {
		o, err := parseFlags(tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if o.cfg.DeadLetterTopic != "cachewire.dead" {
			t.Errorf("args %v, env %v: DeadLetterTopic = %q", tc.args, tc.env, o.cfg.DeadLetterTopic)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"--check-config", "--kafka-brokers=k:1", "--topic=t", "--dead-letter-topic=t"}, func(string) string { return "" }, &out); code != 2 || !strings.Contains(out.String(), "dead-letter topic must not be the event topic") {
		t.Errorf("--dead-letter-topic equal to --topic: exit %d, %q; want exit 2 naming the conflict", code, out.String())
	}
}
