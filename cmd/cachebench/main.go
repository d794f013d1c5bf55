// Command cachebench measures cachewire beside its anchors in one run and writes the results as
// JSON and as the README's Markdown Performance table.
//
//	go run ./cmd/cachebench                       # every scenario, embedded Kafka and Redis
//	go run ./cmd/cachebench --kafka-brokers 127.0.0.1:19092 --redis-addrs 127.0.0.1:16379
//	go run ./cmd/cachebench --scenarios read,memory --duration 10s
//	go run ./cmd/cachebench --smoke               # seconds long; proves the tool runs, numbers mean nothing
//
// Progress goes to stderr; the Markdown table to stdout; --out-dir gets results.json,
// results.md and results.png (the latency distributions beside their anchors).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/cachewire/cachewire/bench"
	"github.com/cachewire/cachewire/internal/flagenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var cfg bench.Config
	var brokers, scenarios flagenv.List
	var outDir string
	fs := flag.NewFlagSet("cachebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(&brokers, "kafka-brokers", "a real Kafka to measure against (default: in-process kfake)")
	fs.StringVar(&cfg.RedisAddr, "redis-addrs", "", "a real Redis to measure against (default: in-process miniredis)")
	fs.StringVar(&cfg.PostgresDSN, "postgres-dsn", "", "a PostgreSQL (postgres:// URL) for the outbox scenario, which is skipped without it (scripts/postgres.sh dsn)")
	fs.Var(&scenarios, "scenarios", "comma-separated subset of "+strings.Join(bench.Scenarios, ",")+" (default: all)")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of each timed step")
	fs.BoolVar(&cfg.Smoke, "smoke", false, "tiny counts: a seconds-long run that proves the tool works (numbers mean nothing)")
	fs.StringVar(&outDir, "out-dir", "", "directory for results.json, results.md and results.png (default: none)")
	var cpuProfile string
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	fenv := flagenv.Command{Prefix: "CACHEWIRE_BENCH_"}
	fenv.Alias(fs, "redis-addr", "redis-addrs") // the spelling of earlier releases
	if err := fenv.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	for _, w := range fenv.Warnings() {
		fmt.Fprintf(stderr, "cachebench: warning: %s\n", w)
	}
	cfg.Brokers, cfg.Scenarios, cfg.Progress = brokers, scenarios, stderr
	cfg.Command = strings.TrimSpace("go run ./cmd/cachebench " + strings.Join(args, " "))
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "cachebench: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "cachebench: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "cachebench: %v\n", err)
		return 1
	}
	if err := rep.WriteMarkdown(stdout); err != nil {
		fmt.Fprintf(stderr, "cachebench: %v\n", err)
		return 1
	}
	if outDir != "" {
		if err := write(outDir, rep); err != nil {
			fmt.Fprintf(stderr, "cachebench: %v\n", err)
			return 1
		}
		wrote := []string{filepath.Join(outDir, "results.json"), filepath.Join(outDir, "results.md")}
		if len(rep.Distributions) > 0 {
			wrote = append(wrote, filepath.Join(outDir, "results.png"))
		}
		fmt.Fprintf(stderr, "cachebench: wrote %s\n", strings.Join(wrote, ", "))
	}
	return 0
}

func write(dir string, rep *bench.Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := os.Create(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	if err := errors.Join(rep.WriteJSON(j), j.Close()); err != nil {
		return err
	}
	m, err := os.Create(filepath.Join(dir, "results.md"))
	if err != nil {
		return err
	}
	if err := errors.Join(rep.WriteMarkdown(m), m.Close()); err != nil {
		return err
	}
	if len(rep.Distributions) == 0 {
		return nil // no scenario with latency samples ran: nothing to chart
	}
	png, err := os.Create(filepath.Join(dir, "results.png"))
	if err != nil {
		return err
	}
	return errors.Join(rep.WritePNG(png), png.Close())
}
