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
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
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

func cmdGet(ctx context.Context, g *globals, args []string) int {
	var minVersion uint64
	fs, ok := g.sub("get", args, 1, "KEY", func(fs *flag.FlagSet) {
		fs.Uint64Var(&minVersion, "min-version", 0, "serve only a value at least this new")
	})
	if !ok {
		return exitUsage
	}
	c, err := g.cache()
	if err != nil {
		return g.fail("node "+g.node, err)
	}
	defer c.Close()
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	it, err := c.Get(ctx, fs.Arg(0), client.MinVersion(minVersion))
	if err != nil {
		return g.fail("node "+g.node, err)
	}
	g.print(itemJSON{Key: it.Key, Value: string(it.Value), Version: it.Version, Found: it.Found, Tier: string(it.Tier),
		Stale: it.Stale, FreshAsOf: it.FreshAsOf}, func(w io.Writer) {
		if !it.Found {
			fmt.Fprintf(w, "%s: not found (version %d)\n", it.Key, it.Version)
			return
		}
		stale := ""
		if it.Stale {
			stale = " STALE"
		}
		fmt.Fprintf(w, "%s@%d (%s%s): %s\n", it.Key, it.Version, it.Tier, stale, it.Value)
	})
	if !it.Found {
		return exitNotFound
	}
	return exitOK
}

type writeJSON struct {
	Key         string    `json:"key"`
	Version     uint64    `json:"version"`
	Published   bool      `json:"published"`
	CommittedAt time.Time `json:"committed_at"`
}

func (g *globals) printWrite(key string, w client.Write, verb string) {
	g.print(writeJSON{Key: key, Version: w.Version, Published: w.Published, CommittedAt: w.CommittedAt}, func(out io.Writer) {
		pub := "published"
		if !w.Published {
			pub = "committed, not yet published"
		}
		fmt.Fprintf(out, "%s %s at version %d (%s)\n", verb, key, w.Version, pub)
	})
}

func cmdPut(ctx context.Context, g *globals, args []string) int {
	return g.write(ctx, "put", args, 2, "KEY VALUE", "put", func(ctx context.Context, w *client.Writer, a []string, opts []client.WriteOption) (client.Write, error) {
		return w.Put(ctx, a[0], []byte(a[1]), opts...)
	})
}

func cmdDel(ctx context.Context, g *globals, args []string) int {
	return g.write(ctx, "del", args, 1, "KEY", "deleted", func(ctx context.Context, w *client.Writer, a []string, opts []client.WriteOption) (client.Write, error) {
		return w.Delete(ctx, a[0], opts...)
	})
}

// write runs a writer command: parse --no-wait and the arguments, call do, print the result.
func (g *globals) write(ctx context.Context, name string, args []string, nargs int, argNames, verb string,
	do func(context.Context, *client.Writer, []string, []client.WriteOption) (client.Write, error)) int {
	var noWait bool
	fs, ok := g.sub(name, args, nargs, argNames, func(fs *flag.FlagSet) {
		fs.BoolVar(&noWait, "no-wait", false, "return once committed, without waiting for Kafka's ack")
	})
	if !ok {
		return exitUsage
	}
	w, err := g.writerClient()
	if err != nil {
		return g.fail("writer "+g.writer, err)
	}
	defer w.Close()
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	var opts []client.WriteOption
	if noWait {
		opts = append(opts, client.NoWait())
	}
	res, err := do(ctx, w, fs.Args(), opts)
	if err != nil {
		return g.fail("writer "+g.writer, err)
	}
	g.printWrite(fs.Arg(0), res, verb)
	return exitOK
}

func cmdInvalidate(ctx context.Context, g *globals, args []string) int {
	fs, ok := g.sub("invalidate", args, 2, "KEY VERSION", nil)
	if !ok {
		return exitUsage
	}
	version, err := strconv.ParseUint(fs.Arg(1), 10, 64)
	if err != nil || version == 0 {
		fmt.Fprintf(g.errOut, "cachectl invalidate: VERSION must be a positive integer, got %q\n", fs.Arg(1))
		return exitUsage
	}
	c, err := g.cache()
	if err != nil {
		return g.fail("node "+g.node, err)
	}
	defer c.Close()
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	if err := c.Invalidate(ctx, fs.Arg(0), version); err != nil {
		return g.fail("node "+g.node, err)
	}
	g.print(map[string]any{"key": fs.Arg(0), "version": version, "invalidated": true}, func(w io.Writer) {
		fmt.Fprintf(w, "invalidated %s up to version %d on every node\n", fs.Arg(0), version)
	})
	return exitOK
}

func (g *globals) stats(ctx context.Context) (*pb.StatsResponse, int) {
	c, err := g.cache()
	if err != nil {
		return nil, g.fail("node "+g.node, err)
	}
	defer c.Close()
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	s, err := c.Stats(ctx)
	if err != nil {
		return nil, g.fail("node "+g.node, err)
	}
	return s, exitOK
}

func cmdStats(ctx context.Context, g *globals, args []string) int {
	if _, ok := g.sub("stats", args, 0, "no arguments", nil); !ok {
		return exitUsage
	}
	s, code := g.stats(ctx)
	if s == nil {
		return code
	}
	if g.json {
		raw, _ := protojsonMarshal(s)
		fmt.Fprintln(g.out, string(raw))
		return exitOK
	}
	tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "node\t%s\n", s.NodeId)
	fmt.Fprintf(tw, "L1\thits %d\tmisses %d\tentries %d\tbytes %d\tstale fills rejected %d\n",
		s.L1.GetHits(), s.L1.GetMisses(), s.L1.GetEntries(), s.L1.GetBytes(), s.L1.GetStaleFillsRejected())
	if s.L2 != nil {
		fmt.Fprintf(tw, "L2\thits %d\tmisses %d\t\t\tstale fills rejected %d\n", s.L2.GetHits(), s.L2.GetMisses(), s.L2.GetStaleFillsRejected())
	}
	fmt.Fprintf(tw, "origin loads\t%d\n", s.OriginLoads)
	fmt.Fprintf(tw, "events\tapplied %d\tignored %d\tinvalid %d\n", s.EventsApplied, s.EventsIgnored, s.EventsInvalid)
	return flushCode(tw)
}

func flushCode(tw *tabwriter.Writer) int {
	if err := tw.Flush(); err != nil {
		return exitError
	}
	return exitOK
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

func cmdLag(ctx context.Context, g *globals, args []string) int {
	if _, ok := g.sub("lag", args, 0, "no arguments", nil); !ok {
		return exitUsage
	}
	s, code := g.stats(ctx)
	if s == nil {
		return code
	}
	now := time.Now()
	rows := make([]lagJSON, 0, len(s.Partitions))
	for _, p := range s.Partitions {
		r := lagJSON{Topic: p.Topic, Partition: p.Partition, Offset: p.Offset, HighWatermark: p.HighWatermark,
			Lag: max(p.HighWatermark-p.Offset, 0), AgeSeconds: -1, L2Committed: p.L2CommittedOffset, L2AgeSeconds: -1}
		if p.CaughtUpAt != nil {
			r.CaughtUpAt = p.CaughtUpAt.AsTime()
			r.AgeSeconds = now.Sub(r.CaughtUpAt).Seconds()
		}
		if p.L2CaughtUpAt != nil {
			r.L2CaughtUpAt = p.L2CaughtUpAt.AsTime()
			r.L2AgeSeconds = now.Sub(r.L2CaughtUpAt).Seconds()
		}
		rows = append(rows, r)
	}
	g.print(rows, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tOFFSET\tLOG END\tLAG\tCAUGHT UP\tL2 COMMITTED\tL2 CAUGHT UP")
		ago := func(s float64) string {
			if s < 0 {
				return "never"
			}
			return fmt.Sprintf("%.3fs ago", s)
		}
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\n", r.Topic, r.Partition, r.Offset, r.HighWatermark, r.Lag,
				ago(r.AgeSeconds), r.L2Committed, ago(r.L2AgeSeconds))
		}
		tw.Flush()
	})
	return exitOK
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

func cmdTail(ctx context.Context, g *globals, args []string) int {
	var fromBeginning bool
	var count int
	if _, ok := g.sub("tail", args, 0, "no arguments", func(fs *flag.FlagSet) {
		fs.BoolVar(&fromBeginning, "from-beginning", false, "start at the oldest event instead of the log end")
		fs.IntVar(&count, "count", 0, "stop after this many events (0: until interrupted)")
	}); !ok {
		return exitUsage
	}
	if len(g.brokers) == 0 {
		fmt.Fprintln(g.errOut, "cachectl tail: --kafka-brokers (or CACHEWIRE_KAFKA_BROKERS) is required")
		return exitUsage
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan eventJSON, 1024)
	sub, err := invalidation.NewSubscriber(invalidation.SubscriberConfig{
		Brokers: g.brokers, Topics: []string{g.topic}, FromBeginning: fromBeginning, MaxWait: 100 * time.Millisecond,
		Logger: quietLogger(g.errOut),
		Sink: invalidation.SinkFuncs{
			Apply: func(_ string, partition int, evs []invalidation.Event) {
				for _, e := range evs {
					ej := eventJSON{Partition: partition, Offset: e.Offset, Key: e.Key, Version: e.Version, Op: e.Op.String(),
						Source: e.Source, CommittedAt: e.CommittedAt}
					if e.HasValue {
						v := string(e.Value)
						ej.Value = &v
					}
					select {
					case events <- ej:
					case <-ctx.Done():
						return
					}
				}
			},
			ResetFunc: func(topic string, partition int, reason string) {
				fmt.Fprintf(g.errOut, "cachectl tail: gap in %s/%d (%s); continuing at the log end\n", topic, partition, reason)
			},
		},
	})
	if err != nil {
		fmt.Fprintf(g.errOut, "cachectl tail: %v\n", err)
		return exitUsage
	}
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	defer func() { sub.Close(); <-done }()
	select {
	case <-sub.Ready():
	case <-time.After(g.timeout):
		fmt.Fprintf(g.errOut, "cachectl tail: Kafka at %s: topic %q not readable within %v\ncachectl: is Kafka running and reachable?\n",
			strings.Join(g.brokers, ","), g.topic, g.timeout)
		return exitUnavailable
	case <-ctx.Done():
		return exitOK
	}
	for n := 0; count == 0 || n < count; n++ {
		select {
		case e := <-events:
			g.print(e, func(w io.Writer) {
				val := ""
				if e.Value != nil {
					val = " " + strconv.Quote(*e.Value)
				}
				fmt.Fprintf(w, "p%d@%d %s %s v%d%s\n", e.Partition, e.Offset, e.Op, e.Key, e.Version, val)
			})
		case <-ctx.Done():
			return exitOK
		}
	}
	return exitOK
}

func cmdHealth(ctx context.Context, g *globals, args []string) int {
	var ofWriter bool
	if _, ok := g.sub("health", args, 0, "no arguments", func(fs *flag.FlagSet) {
		fs.BoolVar(&ofWriter, "writer", false, "check the writer instead of the node")
	}); !ok {
		return exitUsage
	}
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	target, check := "node "+g.node, func() error {
		c, err := g.cache()
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Health(ctx)
	}
	if ofWriter {
		target, check = "writer "+g.writer, func() error {
			w, err := g.writerClient()
			if err != nil {
				return err
			}
			defer w.Close()
			return w.Health(ctx)
		}
	}
	if err := check(); err != nil {
		return g.fail(target, err)
	}
	g.print(map[string]any{"target": target, "serving": true}, func(w io.Writer) { fmt.Fprintf(w, "%s: SERVING\n", target) })
	return exitOK
}
