package flagenv

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
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

func TestLegacyPrefixIsReadWithAWarning(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	a := fs.String("grpc-addr", "def", "where")
	b := fs.String("http-addr", "def", "where")
	env := map[string]string{"CW_GRPC_ADDR": "old", "CW_HTTP_ADDR": "old", "CW_NODE_HTTP_ADDR": "new"}
	c := &Command{Prefix: "CW_NODE_", Legacy: "CW_"}
	if err := c.Parse(fs, nil, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *a != "old" || *b != "new" {
		t.Fatalf("grpc-addr %q http-addr %q, want old and new", *a, *b)
	}
	w := strings.Join(c.Warnings(), "\n")
	if !strings.Contains(w, "CW_GRPC_ADDR is deprecated") || !strings.Contains(w, "use CW_NODE_GRPC_ADDR") ||
		!strings.Contains(w, "CW_HTTP_ADDR is ignored: CW_NODE_HTTP_ADDR is set") {
		t.Fatalf("warnings:\n%s", w)
	}
}

func TestAliasSetsTheFlagWithAWarning(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var l List
	fs.Var(&l, "redis-addrs", "addrs")
	c := &Command{Prefix: "CW_"}
	c.Alias(fs, "redis-addr", "redis-addrs")
	if err := c.Parse(fs, []string{"--redis-addr", "a:1,b:2"}, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if l.String() != "a:1,b:2" || len(c.Warnings()) != 1 || !strings.Contains(c.Warnings()[0], "use --redis-addrs") {
		t.Fatalf("addrs %q warnings %q", l.String(), c.Warnings())
	}
}

func TestVersionPrintsAndStops(t *testing.T) {
	fs := flag.NewFlagSet("cachenode", flag.ContinueOnError)
	var out bytes.Buffer
	c := &Command{Prefix: "CW_", Stdout: &out}
	if err := c.Parse(fs, []string{"--version"}, nil); !errors.Is(err, ErrVersion) || !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want ErrVersion", err)
	}
	if !strings.HasPrefix(out.String(), "cachenode dev") {
		t.Fatalf("version line %q", out.String())
	}
}

func TestUnknownVariableUnderThePrefixIsReported(t *testing.T) {
	fs := flag.NewFlagSet("cachenode", flag.ContinueOnError)
	fs.String("grpc-addr", "def", "where")
	fs.String("node-id", "", "id")
	c := &Command{Prefix: "CW_NODE_", Legacy: "CW_", Environ: func() []string {
		return []string{"CW_NODE_GRPC_ADRR=x", "CW_NODE_GRPC_ADDR=y", "CW_NODE_ID=legacy", "CW_WRITER_TOPIC=t", "PATH=/bin"}
	}}
	if err := c.Parse(fs, nil, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	w := strings.Join(c.Warnings(), "\n")
	if !strings.Contains(w, "CW_NODE_GRPC_ADRR is set but cachenode has no such flag (--grpc-adrr)") {
		t.Fatalf("warnings:\n%s", w)
	}
	if strings.Contains(w, "CW_NODE_ID is set") || strings.Contains(w, "CW_WRITER_TOPIC") || strings.Contains(w, "CW_NODE_GRPC_ADDR is set") {
		t.Fatalf("warned about a known or foreign variable:\n%s", w)
	}
}

// TestSecretComesFromTheEnvironmentOrAFileOnly: a secret is read from its variable or its
// file, refused on the command line with a message naming both ways, never shown by --help, and
// setting both ways is an error.
func TestSecretComesFromTheEnvironmentOrAFileOnly(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(args []string, env map[string]string) (*Secret, string, error) {
		c := &Command{Prefix: "T_", Environ: func() []string { return nil }}
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		var out strings.Builder
		fs.SetOutput(&out)
		s := c.Secret(fs, "db-password", "database password")
		err := c.Parse(fs, args, func(k string) string { return env[k] })
		return s, out.String(), err
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		source  string
		wantErr string
	}{
		{name: "variable", env: map[string]string{"T_DB_PASSWORD": "from-env"}, want: "from-env", source: "T_DB_PASSWORD"},
		{name: "file", args: []string{"--db-password-file", file}, want: "from-file", source: "--db-password-file " + file},
		{name: "file by variable", env: map[string]string{"T_DB_PASSWORD_FILE": file}, want: "from-file", source: "--db-password-file " + file},
		{name: "unset"},
		{name: "command line", args: []string{"--db-password", "hunter2"}, wantErr: "never taken on the command line"},
		{name: "both", args: []string{"--db-password-file", file}, env: map[string]string{"T_DB_PASSWORD": "x"}, wantErr: "both set"},
		{name: "missing file", args: []string{"--db-password-file", file + ".nope"}, wantErr: "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, err := parse(tc.args, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to say %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("the error shows the secret: %v", err)
				}
				return
			}
			if err != nil || s.Value() != tc.want || s.Source() != tc.source {
				t.Fatalf("got %q from %q (%v), want %q from %q", s.Value(), s.Source(), err, tc.want, tc.source)
			}
			if strings.Contains(s.String(), tc.want) && tc.want != "" {
				t.Fatalf("String() shows the secret: %q", s.String())
			}
		})
	}
	_, help, err := parse([]string{"--help"}, map[string]string{"T_DB_PASSWORD": "from-env"})
	if !errors.Is(err, flag.ErrHelp) || strings.Contains(help, "from-env") || !strings.Contains(help, "T_DB_PASSWORD") {
		t.Fatalf("--help: %v\n%s\nwant the variable named and the secret not shown", err, help)
	}
}
