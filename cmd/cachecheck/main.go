// Command cachecheck runs the consistency checker under every fault scenario and prints a report
// table: operations, faults, stale reads, lost writes and the worst staleness seen per scenario.
//
//	go run ./cmd/cachecheck                                  # every scenario, short, in-process Kafka and Redis
//	go run ./cmd/cachecheck --duration 2m --outage 10s       # the soak
//	go run ./cmd/cachecheck --scenarios "Redis unreachable" --json
//	go run ./cmd/cachecheck --scenarios "combined faults" --seed 42   # replay a run's choices
//
// Against real servers, name them and the scripts that control them (for restarts and pauses):
//
//	go run ./cmd/cachecheck --kafka-brokers 127.0.0.1:19092 --redis-addrs 127.0.0.1:16379 \
//	  --kafka-ctl scripts/kafka.sh --redis-ctl scripts/redis.sh
//
// Exit status: 0 when every scenario that ran found nothing, 1 when one found a violation or
// failed, 2 for bad flags.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cachewire/cachewire/checker"
	"github.com/cachewire/cachewire/internal/flagenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type row struct {
	Scenario     string  `json:"scenario"`
	Seed         uint64  `json:"seed"`
	Ops          int     `json:"operations"`
	Failed       int     `json:"failed_operations"`
	Faults       int     `json:"faults"`
	MinVersion   int     `json:"min_version_violations"`
	StaleReads   int     `json:"stale_reads"`
	Flagged      int     `json:"flagged_stale"`
	NonMonotonic int     `json:"non_monotonic_reads"`
	LostWrites   int     `json:"lost_writes"`
	NotConverged int     `json:"not_converged"`
	MaxStaleMs   float64 `json:"max_staleness_ms"`
	P99StaleMs   float64 `json:"p99_staleness_ms"`
	OriginGets   int     `json:"origin_gets"`
	OriginLoads  int     `json:"origin_loads"`
	FaultWindows string  `json:"fault_windows,omitempty"`
	Result       string  `json:"result"`
	Detail       string  `json:"detail,omitempty"`
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var o checker.Options
	var env checker.Env
	var brokers, only flagenv.List
	var asJSON, verbose bool
	fs := flag.NewFlagSet("cachecheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.Duration, "duration", 6*time.Second, "workload length per scenario")
	fs.DurationVar(&o.Outage, "outage", 2*time.Second, "how long each fault lasts")
	fs.DurationVar(&o.MaxStaleness, "max-staleness", time.Second, "the nodes' max_staleness")
	fs.IntVar(&o.Nodes, "nodes", 3, "cache nodes per cluster")
	fs.IntVar(&o.Workload.Sessions, "sessions", 6, "concurrent client sessions")
	fs.IntVar(&o.Workload.Keys, "keys", 8, "keys written and read (the cold-key scenarios use at least 2000)")
	fs.DurationVar(&o.OriginDelay, "origin-delay", 0, "each origin load waits a random time up to this (default: none; 30ms in the cold-key scenarios)")
	fs.BoolVar(&o.NoNearCaches, "no-near-caches", false, "read only through the nodes (by default half of the sessions read through near caches in the application)")
	fs.Uint64Var(&o.Seed, "seed", 0, "seed of every random choice (workload, origin delays, combined faults' order and timing); 0 picks one and prints it")
	fs.Var(&only, "scenarios", "comma-separated scenario names to run (default: all)")
	fs.Var(&brokers, "kafka-brokers", "a real Kafka (default: in-process)")
	fs.StringVar(&env.RedisAddr, "redis-addrs", "", "a real Redis (default: in-process)")
	fs.StringVar(&env.KafkaCtl, "kafka-ctl", "", "script controlling the real Kafka (scripts/kafka.sh), for restarts and pauses")
	fs.StringVar(&env.RedisCtl, "redis-ctl", "", "script controlling the real Redis (scripts/redis.sh)")
	fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	fs.BoolVar(&verbose, "v", false, "log the clusters' warnings to stderr")
	fenv := flagenv.Command{Prefix: "CACHEWIRE_CHECK_"}
	fenv.Alias(fs, "redis-addr", "redis-addrs") // the spelling of earlier releases
	if err := fenv.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	for _, w := range fenv.Warnings() {
		fmt.Fprintf(stderr, "cachecheck: warning: %s\n", w)
	}
	env.Brokers = brokers
	if verbose {
		o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	var scenarios []checker.Scenario
	for _, sc := range checker.Scenarios {
		if len(only) == 0 || contains(only, sc.Name) {
			scenarios = append(scenarios, sc)
		}
	}
	if len(scenarios) == 0 {
		names := make([]string, len(checker.Scenarios))
		for i, sc := range checker.Scenarios {
			names[i] = sc.Name
		}
		fmt.Fprintf(stderr, "cachecheck: no scenario matches %v; have: %s\n", only, strings.Join(names, "; "))
		return 2
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano()) | 1
	}
	fmt.Fprintf(stderr, "cachecheck: seed %d (replay with --seed %[1]d)\n", o.Seed)
	code := 0
	var rows []row
	for i, sc := range scenarios {
		fmt.Fprintf(stderr, "%s  [%d/%d] %s...\n", time.Now().Format("15:04:05"), i+1, len(scenarios), sc.Name)
		out := checker.Run(ctx, env, sc, o)
		r := row{Scenario: sc.Name, Seed: out.Seed, Faults: out.Faults, FaultWindows: out.Timeline()}
		switch {
		case out.Skipped != "":
			r.Result, r.Detail = "skipped", out.Skipped
		case out.Err != nil && out.Result == nil:
			r.Result, r.Detail, code = "error", out.Err.Error(), 1
		default:
			res := out.Result
			r.OriginGets, r.OriginLoads = res.OriginGets, res.OriginLoads
			r.Ops, r.Failed, r.MinVersion, r.StaleReads, r.Flagged = res.Ops, res.Failed, len(res.MinVersionViolations), len(res.StaleReads), res.FlaggedStale
			r.NonMonotonic = len(res.NonMonotonicSession) + len(res.NonMonotonicNode)
			r.LostWrites, r.NotConverged = len(res.LostWrites), len(res.NotConverged)
			r.MaxStaleMs = float64(res.MaxStaleness.Microseconds()) / 1000
			if n := len(res.Staleness); n > 0 {
				r.P99StaleMs = float64(res.Staleness[min(n-1, n*99/100)].Microseconds()) / 1000
			}
			r.Result = "ok"
			if !res.OK() {
				r.Result, code = "VIOLATIONS", 1
				for _, l := range [][]string{res.MinVersionViolations, res.StaleReads, res.NonMonotonicSession, res.NonMonotonicNode, res.LostWrites, res.NotConverged} {
					if len(l) > 0 && r.Detail == "" {
						r.Detail = l[0]
					}
				}
			} else if out.Err != nil {
				// The run finished but did not do what the scenario is for (no shared load, say).
				r.Result, r.Detail, code = "error", out.Err.Error(), 1
			}
		}
		fmt.Fprintf(stderr, "          %s %s\n", r.Result, r.Detail)
		if out.Result != nil {
			fmt.Fprintf(stderr, "          %d gets answered by the origin from %d origin loads; faults: %s\n",
				out.Result.OriginGets, out.Result.OriginLoads, r.FaultWindows)
		}
		rows = append(rows, r)
		if ctx.Err() != nil {
			break
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rows)
		return code
	}
	fmt.Fprintf(stdout, "Seed %d (replay with --seed %[1]d).\n\n", o.Seed)
	fmt.Fprintf(stdout, "| scenario | operations (failed) | faults | min_version violations | stale reads (flagged stale) | non-monotonic | lost writes | not converged | staleness p99 / max | result |\n")
	fmt.Fprintf(stdout, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		result := r.Result
		if r.Detail != "" {
			result += ": " + r.Detail
		}
		fmt.Fprintf(stdout, "| %s | %d (%d) | %d | %d | %d (%d) | %d | %d | %d | %.0f ms / %.0f ms | %s |\n",
			r.Scenario, r.Ops, r.Failed, r.Faults, r.MinVersion, r.StaleReads, r.Flagged, r.NonMonotonic, r.LostWrites, r.NotConverged,
			r.P99StaleMs, r.MaxStaleMs, result)
	}
	return code
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(strings.TrimSpace(x), s) {
			return true
		}
	}
	return false
}
