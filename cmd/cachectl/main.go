// Command cachectl reads and writes cachewire from the shell, and shows what it is doing.
//
//	cachectl get KEY [--min-version N]     read through a cache node
//	cachectl put KEY VALUE [--no-wait]     write through the writer; prints the new version
//	cachectl del KEY [--no-wait]           delete through the writer; prints the version
//	cachectl invalidate KEY VERSION        make every node evict KEY up to VERSION
//	cachectl stats                         a node's counters
//	cachectl lag                           a node's per-partition position and freshness
//	cachectl tail [--from-beginning] [--count N]   print change events live, with partition and offset
//	cachectl health [--writer]             exit 0 when the node (or the writer) reports SERVING
//
// Global flags (before the subcommand) pick the targets and the output: --node, --writer,
// --kafka-brokers, --topic, --json, --timeout; each has a CACHEWIRE_* environment variable.
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

const usageText = `Usage: cachectl [global flags] COMMAND [ARGS]

Commands:
  get KEY [--min-version N]              read KEY through a cache node
  put KEY VALUE [--no-wait]              write KEY through the writer; prints the new version
  del KEY [--no-wait]                    delete KEY through the writer; prints the version
  invalidate KEY VERSION                 make every node evict KEY up to VERSION
  stats                                  a node's counters
  lag                                    a node's per-partition position and freshness
  tail [--from-beginning] [--count N]    print change events live, with partition and offset
  health [--writer]                      exit 0 when the node (or the writer) reports SERVING

Exit codes: 0 success, 1 key has no value (get), 2 usage error, 3 target unreachable or
unavailable, 4 request rejected as invalid, 5 other error.

`

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
	out, errOut  io.Writer
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	g := &globals{out: stdout, errOut: stderr}
	fs := flag.NewFlagSet("cachectl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&g.node, "node", "127.0.0.1:7070", "cache node gRPC address")
	fs.StringVar(&g.writer, "writer", "127.0.0.1:7080", "writer gRPC address")
	fs.Var(&g.brokers, "kafka-brokers", "Kafka bootstrap addresses for tail, comma separated")
	fs.StringVar(&g.topic, "topic", "cachewire.events", "topic for tail")
	fs.BoolVar(&g.json, "json", false, "print JSON instead of text")
	fs.DurationVar(&g.timeout, "timeout", 5*time.Second, "deadline of each call")
	if err := flagenv.Parse(fs, "CACHEWIRE_", args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usageText)
			flagenv.Usage(stderr, fs, "CACHEWIRE_")
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	commands := map[string]func(context.Context, *globals, []string) int{
		"get": cmdGet, "put": cmdPut, "del": cmdDel, "invalidate": cmdInvalidate,
		"stats": cmdStats, "lag": cmdLag, "tail": cmdTail, "health": cmdHealth,
	}
	f, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "cachectl: unknown command %q\n\n%s", cmd, usageText)
		return exitUsage
	}
	return f(ctx, g, rest)
}

// sub parses a subcommand's flags and checks its positional argument count.
func (g *globals) sub(name string, args []string, nargs int, argNames string, def func(*flag.FlagSet)) (*flag.FlagSet, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(g.errOut)
	if def != nil {
		def(fs)
	}
	// Allow flags after the positional arguments too (cachectl get KEY --min-version 3).
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != nargs {
		fmt.Fprintf(g.errOut, "cachectl %s: want %s\n", name, argNames)
		return nil, false
	}
	_ = fs.Parse(pos) // leaves fs.Args() = the positional arguments
	return fs, true
}

// fail prints err and returns the exit code for it.
func (g *globals) fail(target string, err error) int {
	fmt.Fprintf(g.errOut, "cachectl: %s: %v\n", target, err)
	switch {
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(g.errOut, "cachectl: is the %s running and reachable?\n", strings.Fields(target)[0])
		return exitUnavailable
	case errors.Is(err, client.ErrInvalidArgument):
		return exitInvalid
	}
	return exitError
}

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

func (g *globals) cache() (*client.Cache, error) {
	return client.NewCache(g.node, client.WithTimeout(g.timeout))
}

func (g *globals) writerClient() (*client.Writer, error) {
	return client.NewWriter(g.writer, client.WithTimeout(g.timeout))
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
