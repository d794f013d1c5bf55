package checker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestFaultScenarios runs every fault scenario in a short configuration and requires the checker
// to find nothing: no min_version violation, no read staler than the bound outside a fault, no
// session or node going back in time, no lost write, and every node and Redis converged.
// CACHEWIRE_CHECK_SEED replays a failed run's choices (its seed is in the failure message).
func TestFaultScenarios(t *testing.T) {
	env, err := EnvFromTestEnv()
	if err != nil {
		t.Fatal(err)
	}
	runScenarios(t, env, Scenarios, Options{Duration: 4 * time.Second, Outage: 1500 * time.Millisecond, MaxStaleness: time.Second})
}

// TestClusterScenarios runs the faults of a 3-broker Kafka cluster and a Redis Cluster of 3
// masters and 3 replicas (.ci/run's cluster stage starts both), with the same checks as
// TestFaultScenarios.
func TestClusterScenarios(t *testing.T) {
	env, err := ClusterEnvFromTestEnv()
	if err != nil {
		t.Skip(err)
	}
	runScenarios(t, env, ClusterScenarios, Options{Duration: 4 * time.Second, Outage: 2 * time.Second, MaxStaleness: time.Second})
}

// runScenarios runs each scenario as a subtest and fails it on any violation the checker finds.
func runScenarios(t *testing.T, env Env, scenarios []Scenario, o Options) {
	if os.Getenv("CACHEWIRE_CHECK_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if s := os.Getenv("CACHEWIRE_CHECK_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CACHEWIRE_CHECK_SEED=%q: %v", s, err)
		}
		o.Seed = seed
	}
	for _, sc := range scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			out := Run(ctx, env, sc, o)
			if out.Skipped != "" {
				t.Skip(out.Skipped)
			}
			replay := fmt.Sprintf("seed %d (replay: CACHEWIRE_CHECK_SEED=%[1]d, or cachecheck --seed %[1]d)", out.Seed)
			r := out.Result
			if r != nil {
				t.Logf("%s; %s", r.Summary(), replay)
				for _, e := range r.Errors {
					t.Log("failed op: ", e)
				}
			}
			if len(out.Windows) > 0 {
				t.Log("faults: ", out.Timeline())
			}
			if out.Err != nil {
				t.Fatalf("%v; %s", out.Err, replay)
			}
			if r.Puts < 20 || r.Gets < 50 {
				t.Fatalf("workload too small to mean anything: %s; %s", r.Summary(), replay)
			}
			if !r.OK() {
				for _, d := range out.Diagnostics {
					t.Log(d)
				}
				for _, list := range [][]string{r.MinVersionViolations, r.StaleReads, r.NonMonotonicSession, r.NonMonotonicNode, r.LostWrites, r.NotConverged} {
					for i, v := range list {
						if i < 5 {
							t.Error(v)
						}
					}
				}
				t.Fatalf("checker found violations: %s; %s", r.Summary(), replay)
			}
		})
	}
}
