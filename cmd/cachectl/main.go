// Command cachectl reads and writes cachewire from the shell, and shows what it is doing.
//
//	cachectl get KEY [--min-version N]          read through a cache node
//	cachectl put KEY VALUE|- [--no-wait]        write through the writer (- reads stdin)
//	cachectl put KEY --value-file F             write a file's bytes
//	cachectl del KEY [--no-wait]                delete through the writer; prints the version
//	cachectl invalidate KEY VERSION             KEY changed at VERSION: every node holding an older version drops it
//	cachectl evict KEY                          every node drops KEY's value, keeping its version
//	cachectl stats                              a node's counters
//	cachectl lag                                a node's per-partition position and freshness
//	cachectl explain KEY [--nodes A,B,..]       where is my write: per node, the tiers' versions, freshness, last event and a verdict
//	cachectl tail [--from-beginning] [--count N] [--until-end]   print change events
//	cachectl health [--writer]                  exit 0 when the node (or the writer) reports SERVING
//	cachectl certs --dir DIR [--server N,..] [--client N,..] [--secrets N,..] [--redis-acl F]   CA, certificates, passwords (kept when present)
//	cachectl help [COMMAND]                     this list, or one command's flags
//
// Global flags (before the command) pick the targets and the output: --node, --writer,
// --kafka-brokers, --topic, --json, --timeout; each has a CACHEWIRE_CTL_* environment variable.
// Every --json output is one JSON document per result, with snake_case names, numbers as JSON
// numbers and times in RFC 3339.
//
// Exit codes: 0 success; 1 the key has no value (get); 2 usage error; 3 the target is
// unreachable or unavailable; 4 the target rejected the request as invalid; 5 any other error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/internal/security"
	"github.com/cachewire/cachewire/invalidation"
)

// Exit codes scripts can rely on.
const (
	exitOK          = 0
	exitNotFound    = 1
	exitUsage       = 2
	exitUnavailable = 3
	exitInvalid     = 4
	exitError       = 5
)

// command is one subcommand: its synopsis, its one-line help and what runs it.
type command struct {
	name, args, help string
	run              func(context.Context, *globals, []string) int
}

// commands in the order the help lists them. It is filled in init: the commands' functions
// print the help, which reads the table.
var commands []command

func init() {
	commands = []command{
		{"get", "KEY [--min-version N]", "read KEY through a cache node", cmdGet},
		{"put", "KEY VALUE|- [--no-wait] | KEY --value-file F", "write KEY through the writer (- reads the value from stdin); prints the new version", cmdPut},
		{"del", "KEY [--no-wait]", "delete KEY through the writer; prints the version", cmdDel},
		{"invalidate", "KEY VERSION", "KEY changed at VERSION: every node holding an older version drops it (one at VERSION or newer ignores it). A VERSION the origin has not reached makes reads of KEY fail until --l1-tombstone-ttl passes: use evict when unsure", cmdInvalidate},
		{"evict", "KEY", "every node, and Redis, drops KEY's value and keeps its version; needs no version", cmdEvict},
		{"stats", "", "a node's counters", cmdStats},
		{"lag", "", "a node's per-partition position and freshness", cmdLag},
		{"explain", "KEY [--nodes ADDR,..] [--no-origin]", "where is KEY's last write: per node, L1 and L2, freshness, the last event applied and a verdict (fresh, behind, origin behind, not vouching)", cmdExplain},
		{"tail", "[--from-beginning] [--count N] [--until-end]", "print change events with partition and offset", cmdTail},
		{"health", "[--writer]", "exit 0 when the node (or the writer) reports SERVING", cmdHealth},
		{"certs", "--dir DIR [--server N,..] [--client N,..] [--secrets N,..] [--redis-acl FILE] [--group GID] [--renew N,..|all]", "make a CA, server and client certificates, passwords and a Redis ACL file in DIR (docker-compose.secure.yml); keeps what is there and still good", cmdCerts},
		{"help", "[COMMAND]", "this list, or one command's flags", cmdHelp},
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func usage(w io.Writer) {
	fmt.Fprint(w, "Usage: cachectl [global flags] COMMAND [ARGS]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-11s %s\n  %-11s   %s\n", c.name, c.args, "", c.help)
	}
	fmt.Fprint(w, `
Run 'cachectl help COMMAND' for a command's flags, 'cachectl --help' for the global flags.

Exit codes: 0 success, 1 key has no value (get), 2 usage error, 3 target unreachable or
unavailable, 4 request rejected as invalid, 5 other error.
`)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type globals struct {
	node, writer string
	brokers      flagenv.List
	topic        string
	json         bool
	timeout      time.Duration
	in           io.Reader
	out, errOut  io.Writer
	sec          *security.ClientFlags
	kafkaFlags   *security.KafkaFlags
	kafka        invalidation.KafkaConn
	opts         []client.Option
}

// envPrefix is the prefix of cachectl's environment variables; the unprefixed CACHEWIRE_NODE
// and friends of earlier releases still work, with a warning.
const envPrefix = "CACHEWIRE_CTL_"

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runIn(ctx, args, getenv, os.Stdin, stdout, stderr)
}

func runIn(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{in: stdin, out: stdout, errOut: stderr}
	fs := flag.NewFlagSet("cachectl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&g.node, "node", "127.0.0.1:7070", "cache node gRPC address (its --grpc-addr)")
	fs.StringVar(&g.writer, "writer", "127.0.0.1:7080", "writer gRPC address (its --grpc-addr)")
	fs.Var(&g.brokers, "kafka-brokers", "Kafka bootstrap addresses for tail, comma separated")
	fs.StringVar(&g.topic, "topic", "cachewire.events", "topic for tail")
	fs.BoolVar(&g.json, "json", false, "print JSON instead of text")
	fs.DurationVar(&g.timeout, "timeout", 5*time.Second, "deadline of each call")
	env := flagenv.Command{Prefix: envPrefix, Legacy: "CACHEWIRE_", Stdout: stdout}
	g.sec = security.RegisterClient(fs, &env)
	g.kafkaFlags = security.RegisterKafka(fs, &env)
	if err := env.Parse(fs, args, getenv); err != nil {
		switch {
		case errors.Is(err, flagenv.ErrVersion):
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			usage(stderr)
			fmt.Fprintln(stderr)
			flagenv.Usage(stderr, fs, envPrefix)
			return exitOK
		}
		return exitUsage
	}
	for _, w := range env.Warnings() {
		fmt.Fprintf(stderr, "cachectl: warning: %s\n", w)
	}
	if err := g.secure(); err != nil {
		fmt.Fprintf(stderr, "cachectl: %v\n", err)
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, "cachectl: no command\n\n")
		usage(stderr)
		return exitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	c, ok := lookup(name)
	if !ok {
		fmt.Fprintf(stderr, "cachectl: unknown command %q\n\n", name)
		usage(stderr)
		return exitUsage
	}
	return c.run(ctx, g, rest)
}

func cmdHelp(_ context.Context, g *globals, args []string) int {
	switch len(args) {
	case 0:
		usage(g.out)
		return exitOK
	case 1:
		c, ok := lookup(args[0])
		if !ok {
			fmt.Fprintf(g.errOut, "cachectl help: unknown command %q\n\n", args[0])
			usage(g.errOut)
			return exitUsage
		}
		if c.name != "help" { // the command's own --help prints its synopsis and flags
			return c.run(context.Background(), g, []string{"--help"})
		}
		usage(g.out)
		return exitOK
	}
	fmt.Fprintln(g.errOut, "cachectl help: want at most one COMMAND")
	return exitUsage
}

// errUsage is what sub returns for a usage error, after printing it; errHelp after --help.
var (
	errUsage = errors.New("usage error")
	errHelp  = errors.New("help printed")
)

// sub parses a subcommand's flags and checks that it got between minArgs and maxArgs
// positional arguments. --help prints the command's synopsis and flags (errHelp); a usage error
// prints what was wrong and the command list (errUsage). code turns those into exit codes.
func (g *globals) sub(name string, args []string, minArgs, maxArgs int, def func(*flag.FlagSet)) (*flag.FlagSet, error) {
	c, _ := lookup(name)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if def != nil {
		def(fs)
	}
	help := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: cachectl %s %s\n  %s\n", name, c.args, c.help)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(w, "\nFlags:")
			fs.VisitAll(func(f *flag.Flag) {
				def := ""
				if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
					def = " (default " + f.DefValue + ")"
				}
				fmt.Fprintf(w, "  --%s\n      %s%s\n", f.Name, f.Usage, def)
			})
		}
		fmt.Fprintln(w, "\nGlobal flags go before the command: --node, --writer, --kafka-brokers, --topic, --json, --timeout (cachectl help).")
	}
	bad := func(format string, a ...any) (*flag.FlagSet, error) {
		fmt.Fprintf(g.errOut, "cachectl %s: %s\n\n", name, fmt.Sprintf(format, a...))
		help(g.errOut)
		fmt.Fprintln(g.errOut)
		usage(g.errOut)
		return nil, errUsage
	}
	// Allow flags after the positional arguments too (cachectl get KEY --min-version 3), and
	// "-" as an argument (put KEY -).
	var pos []string
	for len(args) > 0 {
		if args[0] == "-" {
			pos, args = append(pos, "-"), args[1:]
			continue
		}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				help(g.out)
				return nil, errHelp
			}
			if f, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok && globalFlags[strings.TrimLeft(f, "-")] {
				return bad("%v: --%s is a global flag: put it before the command (cachectl --%s %s ...)", err, strings.TrimLeft(f, "-"), strings.TrimLeft(f, "-"), name)
			}
			return bad("%v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < minArgs || len(pos) > maxArgs {
		want := c.args
		if want == "" {
			want = "no arguments"
		}
		return bad("want %s, got %d argument(s)", want, len(pos))
	}
	_ = fs.Parse(append([]string{"--"}, pos...)) // leaves fs.Args() = the positional arguments
	return fs, nil
}

// globalFlags are the flags cachectl takes before the command, named in the error when one is
// given after it.
var globalFlags = map[string]bool{"node": true, "writer": true, "kafka-brokers": true, "topic": true, "json": true, "timeout": true}

// code is the exit code for an error from sub.
func code(err error) int {
	if errors.Is(err, errHelp) {
		return exitOK
	}
	return exitUsage
}

// fail prints err, and a hint naming the likely cause, and returns the exit code for it.
func (g *globals) fail(target string, err error) int {
	fmt.Fprintf(g.errOut, "cachectl: %s: %v\n", target, err)
	kind, addr, _ := strings.Cut(target, " ")
	msg := err.Error()
	hint := func(format string, a ...any) { fmt.Fprintf(g.errOut, "cachectl: "+format+"\n", a...) }
	switch {
	case strings.Contains(msg, "frame too large") || strings.Contains(msg, "server preface") ||
		strings.Contains(msg, "malformed header") || strings.Contains(msg, "HTTP/1"):
		flagName := "--" + kind
		hint("%s does not speak gRPC: is it an HTTP port (/metrics, /healthz)? Point %s at the %s's --grpc-addr (default %s)",
			addr, flagName, kind, map[string]string{"node": "127.0.0.1:7070", "writer": "127.0.0.1:7080"}[kind])
		return exitUnavailable
	case strings.Contains(msg, "has seen version"):
		hint("the node has seen a newer version of the key than its origin answered: the key is changing fast (retry), or an INVALIDATE went out at a version the origin has not reached, or the origin lags the events. Then reads fail until the origin catches up or --l1-tombstone-ttl passes; use 'cachectl evict' when you do not know the version")
		return exitUnavailable
	case strings.Contains(msg, "origin is behind"):
		hint("the %s is up; its origin has not yet reached the version asked for (--min-version). Retry shortly, or check that the version came from a write to this origin", kind)
		return exitUnavailable
	case strings.Contains(msg, "node is starting"):
		hint("the node is up but still catching up with Kafka; retry shortly ('cachectl lag' shows its position)")
		return exitUnavailable
	case strings.Contains(msg, "origin unavailable"):
		hint("the node is up, but its origin (the node's --origin) cannot be reached")
		return exitUnavailable
	case strings.Contains(msg, "key keeps changing"):
		hint("the key changed under every read attempt; retry")
		return exitUnavailable
	case strings.Contains(msg, "NOT_SERVING"):
		hint("the %s at %s is running but not serving: starting, or draining for shutdown", kind, addr)
		return exitUnavailable
	case strings.Contains(msg, "cannot publish"):
		hint("the node is up, but cannot reach Kafka to publish")
		return exitUnavailable
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		hint("is the %s running and reachable at %s? (--%s)", kind, addr, kind)
		return exitUnavailable
	case errors.Is(err, client.ErrResourceExhausted):
		hint("the %s is at its request limit; back off and retry", kind)
		return exitUnavailable
	case errors.Is(err, client.ErrInvalidArgument):
		return exitInvalid
	}
	return exitError
}

// print writes v as one JSON document (--json), or calls text.
func (g *globals) print(v any, text func(w io.Writer)) {
	if g.json {
		enc := json.NewEncoder(g.out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
		return
	}
	text(g.out)
}

func (g *globals) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.timeout)
}

// secure turns the TLS, token and Kafka flags into client options and a Kafka connection.
func (g *globals) secure() error {
	g.opts = []client.Option{client.WithTimeout(g.timeout)}
	cfg, err := g.sec.TLS.Config()
	if err != nil {
		return fmt.Errorf("--tls-*: %w", err)
	}
	if cfg != nil {
		g.opts = append(g.opts, client.WithTLS(cfg))
	}
	if t := g.sec.Token.Value(); t != "" {
		g.opts = append(g.opts, client.WithBearerToken(t))
	}
	if g.kafka, err = g.kafkaFlags.Conn(); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	return nil
}

func (g *globals) cache() (*client.Cache, error) {
	return client.NewCache(g.node, g.opts...)
}

func (g *globals) writerClient() (*client.Writer, error) {
	return client.NewWriter(g.writer, g.opts...)
}

type itemJSON struct {
	Key       string    `json:"key"`
	Value     string    `json:"value"`
	Version   uint64    `json:"version"`
	Found     bool      `json:"found"`
	Tier      string    `json:"tier,omitempty"`
	Stale     bool      `json:"stale"`
	FreshAsOf time.Time `json:"fresh_as_of,omitzero"`
}

type writeJSON struct {
	Key         string    `json:"key"`
	Version     uint64    `json:"version"`
	Published   bool      `json:"published"`
	CommittedAt time.Time `json:"committed_at"`
}

type lagJSON struct {
	Topic         string    `json:"topic"`
	Partition     int32     `json:"partition"`
	Offset        int64     `json:"offset"`
	HighWatermark int64     `json:"high_watermark"`
	Lag           int64     `json:"lag"`
	CaughtUpAt    time.Time `json:"caught_up_at,omitzero"`
	AgeSeconds    float64   `json:"age_seconds"`
	L2Committed   int64     `json:"l2_committed_offset"`
	L2CaughtUpAt  time.Time `json:"l2_caught_up_at,omitzero"`
	L2AgeSeconds  float64   `json:"l2_age_seconds"`
}

type eventJSON struct {
	Partition   int       `json:"partition"`
	Offset      int64     `json:"offset"`
	Key         string    `json:"key"`
	Version     uint64    `json:"version"`
	Op          string    `json:"op"`
	Value       *string   `json:"value,omitempty"`
	Source      string    `json:"source,omitempty"`
	CommittedAt time.Time `json:"committed_at,omitzero"`
}
