package flagenv

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

func TestEnvironmentFillsUnsetFlagsOnly(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	a := fs.String("grpc-addr", "def", "where")
	b := fs.Int("max-batch", 100, "batch")
	var l List
	fs.Var(&l, "topics", "topics")
	env := map[string]string{"CW_GRPC_ADDR": "from-env", "CW_MAX_BATCH": "7", "CW_TOPICS": "a, b,,c"}
	if err := Parse(fs, "CW_", []string{"--max-batch=9"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *a != "from-env" || *b != 9 || l.String() != "a,b,c" {
		t.Fatalf("got %q %d %q", *a, *b, l.String())
	}
}

func TestBadEnvironmentValueNamesTheVariable(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("max-batch", 100, "batch")
	err := Parse(fs, "CW_", nil, func(k string) string { return map[string]string{"CW_MAX_BATCH": "lots"}[k] })
	if err == nil || !strings.Contains(err.Error(), "CW_MAX_BATCH") {
		t.Fatalf("err = %v, want one naming CW_MAX_BATCH", err)
	}
}

func TestUsageListsEnvAndDefault(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("max-batch", 100, "most keys per BatchGet")
	var buf bytes.Buffer
	Usage(&buf, fs, "CW_")
	if !strings.Contains(buf.String(), "--max-batch (env CW_MAX_BATCH, default 100)") {
		t.Fatalf("usage:\n%s", buf.String())
	}
}
