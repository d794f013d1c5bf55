// Command demo runs a whole cachewire cluster in one process, with nothing installed but Go:
// an in-process Kafka (kfake), an in-process Redis (miniredis), a writer and three cache nodes on
// fixed local ports. It prints their addresses, shows one write reaching every node with the
// measured propagation time, then serves until Ctrl-C and shuts down cleanly.
//
//	go run ./cmd/demo
//	go run ./cmd/demo --no-scenario --nodes 5 --node-port 7170
//
// With --connect it starts nothing and instead drives an existing cluster: every --interval it
// writes a key through --writer-addr and reports how long each of --node-addrs takes to serve the
// new version (the docker-compose demo client).
//
//	demo --connect --writer-addr writer:7080 --node-addrs node1:7070,node2:7070,node3:7070
//
// Against servers with TLS (docker-compose.secure.yml), --tls-ca, --tls-cert and --tls-key (or a
// bearer token in CACHEWIRE_DEMO_TOKEN or --token-file) are the same flags as cachectl's, for
// the writer and every node alike.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/internal/security"
	"github.com/cachewire/cachewire/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	nodes      int
	nodePort   int
	writerPort int
	kafkaPort  int
	redisPort  int
	partitions int
	l1Entries  int
	noScenario bool
	logLevel   string

	connect    bool
	writerAddr string
	nodeList   flagenv.List
	interval   time.Duration
	rounds     int
	check      bool
	clientOpts []client.Option // TLS and token for --connect
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.nodes, "nodes", 3, "number of cache nodes")
	fs.IntVar(&o.nodePort, "node-port", 7070, "gRPC port of the first cache node; the others follow it")
	fs.IntVar(&o.writerPort, "writer-port", 7080, "gRPC port of the writer")
	fs.IntVar(&o.kafkaPort, "kafka-port", 9092, "port of the in-process Kafka")
	fs.IntVar(&o.redisPort, "redis-port", 6379, "port of the in-process Redis")
	fs.IntVar(&o.partitions, "partitions", 3, "partitions of the event topic")
	fs.IntVar(&o.l1Entries, "l1-max-entries", 100_000, "L1 size of each node, in entries")
	fs.BoolVar(&o.noScenario, "no-scenario", false, "skip the scripted write and just serve")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level of the components: debug, info, warn or error")
	fs.BoolVar(&o.connect, "connect", false, "start nothing: drive the cluster at --writer-addr and --node-addrs in a loop")
	fs.StringVar(&o.writerAddr, "writer-addr", "127.0.0.1:7080", "writer to drive (with --connect)")
	fs.Var(&o.nodeList, "node-addrs", "cache nodes to read from, comma separated (with --connect)")
	fs.DurationVar(&o.interval, "interval", time.Second, "time between writes (with --connect)")
	fs.IntVar(&o.rounds, "rounds", 0, "stop after this many writes (with --connect; 0: until interrupted)")
	fs.BoolVar(&o.check, "check-config", false, "validate the flags, then exit (0 when valid) without starting anything")
	env := flagenv.Command{Prefix: "CACHEWIRE_DEMO_"}
	sec := security.RegisterClient(fs, &env)
	if err := env.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.nodes < 1 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "demo: --nodes must be at least 1 and no arguments are taken")
		return 2
	}
	log, err := flagenv.Logger("text", o.logLevel, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 2
	}
	if o.connect && len(o.nodeList) == 0 {
		fmt.Fprintln(stderr, "demo: --connect needs --node-addrs")
		return 2
	}
	// The files are read now, so that --check-config finds a missing or bad one.
	tlsCfg, err := sec.TLS.Config()
	if err != nil {
		fmt.Fprintf(stderr, "demo: --tls-*: %v\n", err)
		return 2
	}
	if (tlsCfg != nil || sec.Token.Value() != "") && !o.connect {
		fmt.Fprintln(stderr, "demo: --tls-* and the token are for --connect: the in-process cluster serves plaintext on loopback")
		return 2
	}
	if tlsCfg != nil {
		o.clientOpts = append(o.clientOpts, client.WithTLS(tlsCfg))
	}
	if t := sec.Token.Value(); t != "" {
		o.clientOpts = append(o.clientOpts, client.WithBearerToken(t))
	}
	if o.check {
		fmt.Fprintln(stderr, "demo: configuration OK")
		return 0
	}
	if o.connect {
		return drive(ctx, o, stdout, stderr)
	}
	var nodeAddrs []string
	for i := range o.nodes {
		nodeAddrs = append(nodeAddrs, "127.0.0.1:"+strconv.Itoa(o.nodePort+i))
	}
	nodes := fmt.Sprintf("%d cache nodes", o.nodes)
	if o.nodes == 1 {
		nodes = "1 cache node"
	}
	fmt.Fprintf(stdout, "cachewire demo: starting Kafka, Redis, a writer and %s in this process...\n", nodes)
	start := time.Now()
	c, err := embedded.Start(embedded.Config{
		Nodes: o.nodes, KafkaPort: o.kafkaPort, RedisPort: o.redisPort, Partitions: o.partitions,
		WriterAddr: "127.0.0.1:" + strconv.Itoa(o.writerPort), NodeAddrs: nodeAddrs, Logger: log,
		Node: func(_ int, nc *node.Config) { nc.L1.MaxEntries = o.l1Entries },
	})
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n(a port may be in use: change it with --kafka-port, --redis-port, --writer-port or --node-port)\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "ready in %v\n\n", time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(stdout, "  Kafka (in-process)   %s   topic %s, %d partitions\n", strings.Join(c.Brokers, ","), c.Topic, o.partitions)
	fmt.Fprintf(stdout, "  Redis (in-process)   %s\n", c.RedisAddr)
	fmt.Fprintf(stdout, "  writer               %s\n", c.WriterAddr)
	for i, a := range c.NodeAddrs {
		fmt.Fprintf(stdout, "  cache node %d         %s\n", i+1, a)
	}
	fmt.Fprintln(stdout)
	code := 0
	if !o.noScenario {
		if err := scenario(ctx, c, stdout); err != nil {
			fmt.Fprintf(stderr, "demo: scenario: %v\n", err)
			code = 1
		}
	}
	if code == 0 {
		fmt.Fprintf(stdout, "Try it from another terminal:\n")
		fmt.Fprintf(stdout, "  go run ./cmd/cachectl --writer %s put user:42 Grace\n", c.WriterAddr)
		fmt.Fprintf(stdout, "  go run ./cmd/cachectl --node %s get user:42\n", c.NodeAddrs[len(c.NodeAddrs)-1])
		fmt.Fprintf(stdout, "  go run ./cmd/cachectl --node %s lag\n", c.NodeAddrs[0])
		fmt.Fprintf(stdout, "  go run ./cmd/cachectl --kafka-brokers %s --topic %s tail --from-beginning --until-end\n\n", c.Brokers[0], c.Topic)
		fmt.Fprintln(stdout, "Serving. Press Ctrl-C to stop.")
		<-ctx.Done()
		fmt.Fprintln(stdout, "\nshutting down...")
	}
	if err := c.Close(); err != nil {
		fmt.Fprintf(stderr, "demo: shutdown: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "stopped cleanly")
	return code
}

// connect returns clients for the writer and the nodes, dialed with opts; close releases them.
func connect(writerAddr string, nodeAddrs []string, opts ...client.Option) (w *client.Writer, nodes []*client.Cache, close func(), err error) {
	if w, err = client.NewWriter(writerAddr, opts...); err != nil {
		return nil, nil, nil, err
	}
	for _, a := range nodeAddrs {
		n, err := client.NewCache(a, opts...)
		if err != nil {
			return nil, nil, nil, err
		}
		nodes = append(nodes, n)
	}
	return w, nodes, func() {
		w.Close()
		for _, n := range nodes {
			n.Close()
		}
	}, nil
}

// drive writes a key every interval and reports how long each node takes to serve it.
func drive(ctx context.Context, o options, stdout, stderr io.Writer) int {
	w, nodes, closeAll, err := connect(o.writerAddr, o.nodeList, o.clientOpts...)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 2
	}
	defer closeAll()
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for round := 1; o.rounds == 0 || round <= o.rounds; round++ {
		key := fmt.Sprintf("demo:%d", round%10)
		if err := propagate(ctx, w, nodes, key, []byte(fmt.Sprintf("round %d at %s", round, time.Now().Format(time.RFC3339))), stdout); err != nil {
			fmt.Fprintf(stderr, "demo: round %d: %v\n", round, err) // keep going: the cluster may be restarting
		}
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
		}
	}
	return 0
}

// propagate writes key and waits until every node serves the new version, printing how long
// each took after Kafka acked the write.
func propagate(ctx context.Context, w *client.Writer, nodes []*client.Cache, key string, value []byte, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	wr, err := w.Put(ctx, key, value)
	if err != nil {
		return err
	}
	acked := time.Now()
	pending := make(map[int]bool, len(nodes))
	for i := range nodes {
		pending[i] = true
	}
	for len(pending) > 0 {
		for i := range pending {
			it, err := nodes[i].Get(ctx, key) // no min_version: the node must learn of it from Kafka
			if err != nil {
				return err
			}
			if it.Version >= wr.Version {
				fmt.Fprintf(out, "  node %d serves %s@%d from %s, %v after the write was acked\n",
					i+1, key, it.Version, it.Tier, time.Since(acked).Round(10*time.Microsecond))
				delete(pending, i)
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("nodes did not converge on %s@%d: %w", key, wr.Version, ctx.Err())
		}
	}
	fmt.Fprintf(out, "All %d nodes converged on %s@%d in %v.\n", len(nodes), key, wr.Version, time.Since(acked).Round(10*time.Microsecond))
	return nil
}

// scenario caches a value on every node, writes a new version, and measures how long each node
// takes to serve it.
func scenario(ctx context.Context, c *embedded.Cluster, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	w, nodes, closeAll, err := connect(c.WriterAddr, c.NodeAddrs)
	if err != nil {
		return err
	}
	defer closeAll()
	const key = "user:1"
	first, err := w.Put(ctx, key, []byte(`{"name":"Ada"}`))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Scenario: put %s = {\"name\":\"Ada\"} -> version %d\n", key, first.Version)
	for i, n := range nodes {
		it, err := n.Get(ctx, key, client.MinVersion(first.Version))
		if err != nil {
			return err
		}
		it, err = n.Get(ctx, key) // now from its L1
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  node %d caches %s@%d (served from %s)\n", i+1, key, it.Version, it.Tier)
	}
	fmt.Fprintf(out, "Scenario: put %s = {\"name\":\"Ada Lovelace\"}, then read every node without min_version:\n", key)
	if err := propagate(ctx, w, nodes, key, []byte(`{"name":"Ada Lovelace"}`), out); err != nil {
		return err
	}
	fmt.Fprintln(out)
	return nil
}
