package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cachewire/cachewire/checker"
	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/redistier"
)

// servicePutter puts through the service's own API: PUT /users/{id} for the key "user:{id}".
type servicePutter struct {
	base string
	http *http.Client
}

func (p servicePutter) Put(ctx context.Context, key string, value []byte, _ ...client.WriteOption) (client.Write, error) {
	id, ok := strings.CutPrefix(key, "user:")
	if !ok {
		return client.Write{}, fmt.Errorf("key %q is not user:<id>", key)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.base+"/users/"+id, bytes.NewReader(value))
	if err != nil {
		return client.Write{}, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return client.Write{}, err
	}
	defer resp.Body.Close()
	var out struct{ Version uint64 }
	if resp.StatusCode != http.StatusOK {
		return client.Write{}, fmt.Errorf("PUT /users/%s: %s", id, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return client.Write{}, fmt.Errorf("PUT /users/%s: %w", id, err)
	}
	return client.Write{Version: out.Version}, nil
}

// originVersion is the version the service holds for key (0 for a user never written).
func originVersion(ctx context.Context, base, key string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/cache/"+key, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if h := resp.Header.Get(node.VersionHeader); h != "" {
		return strconv.ParseUint(h, 10, 64)
	}
	if resp.StatusCode == http.StatusNotFound {
		return 0, nil
	}
	return 0, fmt.Errorf("GET /cache/%s: %s without a version", key, resp.Status)
}

// TestCheckerWorkloadThroughTheService runs the checker's workload against the example service:
// sessions write through its API (PUT /users/{id}, committed to PostgreSQL with its outbox row)
// and read through three nodes that load misses from its HTTP endpoint, half of the reads with the
// session's min_version. The checker must find no read-your-writes violation, no non-monotonic
// read, no lost write, and every node and Redis converged on PostgreSQL's versions.
func TestCheckerWorkloadThroughTheService(t *testing.T) {
	p := testenv.NewPostgres(t)
	k := testenv.NewKafka(t)
	r := testenv.NewRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topic := testenv.TopicName(t, "users")
	s, err := start(ctx, p.DSN, k.Brokers, k.Conn, topic, "127.0.0.1:0", true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	base := "http://" + s.addr
	nodes := startNodes(t, s, k, r, topic, 3)

	h := checker.NewHistory(1_000_000)
	w := checker.Workload{Sessions: 6, Keys: 8, KeyPrefix: "user:", Seed: uint64(time.Now().UnixNano()) | 1}
	wctx, stop := context.WithTimeout(ctx, 4*time.Second)
	w.Run(wctx, h, servicePutter{base: base, http: &http.Client{Timeout: 10 * time.Second}}, func() []*client.Cache { return nodes })
	stop()

	tier, err := redistier.New(redistier.Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	finals := func() ([]checker.Final, string) {
		var out []checker.Final
		disagree := ""
		for _, key := range h.Keys() {
			f := checker.Final{Key: key}
			if f.Origin, err = originVersion(ctx, base, key); err != nil {
				return nil, err.Error()
			}
			for i, n := range nodes {
				it, err := n.Get(ctx, key)
				if err != nil {
					return nil, fmt.Sprintf("node %d: %v", i, err)
				}
				f.Nodes = append(f.Nodes, it.Version)
				if it.Version != f.Origin && disagree == "" {
					disagree = fmt.Sprintf("node %d serves %s@%d, PostgreSQL holds %d", i, key, it.Version, f.Origin)
				}
			}
			e, found, err := tier.Get(ctx, key)
			if err != nil {
				return nil, err.Error()
			}
			f.Redis, f.RedisValue = e.Version, found
			if found && e.Version != f.Origin && disagree == "" {
				disagree = fmt.Sprintf("Redis holds %s@%d, PostgreSQL holds %d", key, e.Version, f.Origin)
			}
			out = append(out, f)
		}
		return out, disagree
	}
	var last []checker.Final
	testenv.WaitFor(t, time.Minute, func() string {
		f, disagree := finals()
		last = f
		return disagree
	})
	ops, faults := h.Snapshot()
	// The bound: the node's max_staleness (5 s by default) covers the relay and the event path.
	res := checker.Check(ops, faults, 5*time.Second+500*time.Millisecond, last)
	t.Log(res.Summary())
	for _, e := range res.Errors {
		t.Log("failed op: ", e)
	}
	if res.Puts < 20 || res.Gets < 50 {
		t.Fatalf("workload too small to mean anything: %s (seed %d)", res.Summary(), w.Seed)
	}
	if !res.OK() {
		for _, list := range [][]string{res.MinVersionViolations, res.StaleReads, res.NonMonotonicSession, res.NonMonotonicNode, res.LostWrites, res.NotConverged} {
			for i, v := range list {
				if i < 5 {
					t.Error(v)
				}
			}
		}
		t.Fatalf("the checker found violations (seed %d): %s", w.Seed, res.Summary())
	}
}
