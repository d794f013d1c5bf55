package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/testenv"
)

// TestSmokeEveryScenario runs every scenario at toy size so the tool cannot rot. It checks that
// each scenario reports rows with anchors; it asserts no speed.
func TestSmokeEveryScenario(t *testing.T) {
	cfg := Config{Smoke: true, Duration: 100 * time.Millisecond}
	if os.Getenv(testenv.EnvKafka) != "" {
		k := testenv.NewKafka(t)
		cfg.Brokers, cfg.Kafka = k.Brokers, k.Conn
	}
	if os.Getenv(testenv.EnvRedis) != "" {
		r := testenv.NewRedis(t)
		cfg.RedisAddr, cfg.RedisTLS, cfg.RedisUsername, cfg.RedisPassword = r.Addr, r.TLS, r.Username, r.Password
	}
	cfg.PostgresDSN = os.Getenv(testenv.EnvPostgres) // the outbox scenario is skipped without it
	var progress bytes.Buffer
	cfg.Progress = &progress
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	want := []string{"cached read", "propagation", "fan-out", "apply rate", "writer", "memory", "scaling"}
	if cfg.PostgresDSN != "" {
		want = append(want, "outbox")
	} else {
		t.Log("outbox scenario skipped: set " + testenv.EnvPostgres + " (scripts/postgres.sh)")
	}
	for _, s := range want {
		found := false
		for _, r := range rep.Rows {
			if r.Scenario == s && r.Anchor != "" && r.Cachewire > 0 && r.AnchorVal > 0 {
				found = true
			}
		}
		if !found {
			t.Errorf("scenario %q reported no row with both cachewire and anchor values", s)
		}
	}
	var md, js bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil || !strings.Contains(md.String(), "| cached read | Get, concurrency 16 | throughput |") {
		t.Errorf("markdown: %v\n%s", err, md.String())
	}
	var back Report
	if err := rep.WriteJSON(&js); err != nil || json.Unmarshal(js.Bytes(), &back) != nil || len(back.Rows) != len(rep.Rows) {
		t.Errorf("json round trip: %v", err)
	}
}

func TestSummarize(t *testing.T) {
	var l Latencies
	for i := 1; i <= 1000; i++ {
		l = append(l, time.Duration(i))
	}
	s := l.Summarize()
	if s.P50 != 500 || s.P99 != 990 || s.P999 != 999 || s.Max != 1000 || s.N != 1000 {
		t.Fatalf("summary %+v", s)
	}
	if (Latencies{}).Summarize().N != 0 {
		t.Fatal("empty sample")
	}
}
