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
		"--topic (env CACHEWIRE_TOPIC, default cachewire.events)",
		"--event-value-max (env CACHEWIRE_EVENT_VALUE_MAX, default 65536)",
		"--wait-published-timeout (env CACHEWIRE_WAIT_PUBLISHED_TIMEOUT, default 5s)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestBadFlagsExitTwo(t *testing.T) {
	for _, args := range [][]string{{"--log-format=xml", "--kafka-brokers=k:1"}, {"--topic="}, {"extra"}} {
		var out bytes.Buffer
		if code := run(args, func(string) string { return "" }, &out); code != 2 || out.Len() == 0 {
			t.Errorf("run(%v) = %d with %q; want exit 2 and a message", args, code, out.String())
		}
	}
}

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
