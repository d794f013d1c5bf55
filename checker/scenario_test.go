package checker

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"
)

// TestFaultScenarios runs every fault scenario in a short configuration and requires the checker
// to find nothing: no min_version violation, no read staler than the bound outside a fault, no
// session or node going back in time, no lost write, and every node and Redis converged.
func TestFaultScenarios(t *testing.T) {
	env := EnvFromTestEnv()
	o := Options{Duration: 4 * time.Second, Outage: 1500 * time.Millisecond, MaxStaleness: time.Second}
	if os.Getenv("CACHEWIRE_CHECK_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	for _, sc := range Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			out := Run(ctx, env, sc, o)
			if out.Skipped != "" {
				t.Skip(out.Skipped)
			}
			if out.Err != nil {
				t.Fatal(out.Err)
			}
			r := out.Result
			t.Log(r.Summary())
			for _, e := range r.Errors {
				t.Log("failed op: ", e)
			}
			if r.Puts < 20 || r.Gets < 50 {
				t.Fatalf("workload too small to mean anything: %s", r.Summary())
			}
			if !r.OK() {
				for _, list := range [][]string{r.MinVersionViolations, r.StaleReads, r.NonMonotonicSession, r.NonMonotonicNode, r.LostWrites, r.NotConverged} {
					for i, v := range list {
						if i < 5 {
							t.Error(v)
						}
					}
				}
				t.Fatalf("checker found violations: %s", r.Summary())
			}
		})
	}
}
