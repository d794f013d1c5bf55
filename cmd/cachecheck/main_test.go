package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestReportTable(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--scenarios", "no fault", "--duration", "2s", "--seed", "42"}, func(string) string { return "" }, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "| no fault |") || !strings.Contains(out.String(), "| ok |") ||
		!strings.Contains(out.String(), "Seed 42 ") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
}

func TestUnknownScenario(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--scenarios", "meteor strike"}, func(string) string { return "" }, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "no scenario matches") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}
