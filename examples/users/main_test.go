package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/redistier"
)

// TestAChangeInPostgresIsServedFreshByEveryNode: the whole path of a service with its own
// database. A PUT commits the row and its outbox row together; the relay publishes; two nodes
// with the service as their HTTP origin serve the write at once with min_version, and without it
// once the event arrives; a DELETE likewise.
func TestAChangeInPostgresIsServedFreshByEveryNode(t *testing.T) {
	p := testenv.NewPostgres(t)
	k := testenv.NewKafka(t)
	r := testenv.NewRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic := testenv.TopicName(t, "users")
	log := slog.New(slog.DiscardHandler)
	s, err := start(ctx, p.DSN, k.Brokers, k.Conn, topic, "127.0.0.1:0", true, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	nodes := startNodes(t, s, k, r, topic, 2)
	write := func(method, name string) uint64 {
		req, _ := http.NewRequestWithContext(ctx, method, "http://"+s.addr+"/users/42", bytes.NewBufferString(name))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Version uint64 }
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&out) != nil || out.Version == 0 {
			t.Fatalf("%s /users/42: %s", method, resp.Status)
		}
		return out.Version
	}
	for _, step := range []struct {
		method, name string
		found        bool
	}{{"PUT", "Ada", true}, {"PUT", "Ada Lovelace", true}, {"DELETE", "", false}} {
		v := write(step.method, step.name)
		for i, n := range nodes {
			// Read-your-writes at once, through every node.
			r, err := n.Get(ctx, "user:42", client.MinVersion(v))
			if err != nil || r.Version < v || r.Found != step.found || (step.found && string(r.Value) != step.name) {
				t.Fatalf("after %s@%d node %d Get(min %d) = %+v, %v", step.method, v, i, v, r, err)
			}
		}
		for i, n := range nodes { // and without min_version (from the origin's answer or the event)
			testenv.WaitFor(t, 30*time.Second, func() string {
				r, err := n.Get(ctx, "user:42")
				if err != nil || r.Version < v {
					return fmt.Sprintf("node %d serves %+v, %v; want version %d", i, r, err, v)
				}
				return ""
			})
		}
	}
	// Reads with min_version were served by the origin before the events arrived; every change
	// must still be published, and reach every node.
	testenv.WaitFor(t, 30*time.Second, func() string {
		if st := s.relay.Stats(); st.Published != 3 {
			return fmt.Sprintf("relay stats %+v, want 3 published", st)
		}
		for i, n := range nodes {
			st, err := n.Stats(ctx)
			if err != nil || st.EventsApplied+st.EventsIgnored < 3 {
				return fmt.Sprintf("node %d has applied %d and ignored %d events (%v), want all 3 seen", i, st.GetEventsApplied(), st.GetEventsIgnored(), err)
			}
		}
		return ""
	})
}

// startNodes starts n nodes reading topic, with the service's HTTP endpoint as their origin and
// Redis r as their L2, and returns clients for them. Everything stops when t ends.
func startNodes(t *testing.T, s *service, k *testenv.Kafka, r *testenv.Redis, topic string, n int) []*client.Cache {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	group := testenv.TopicName(t, "l2")
	var nodes []*client.Cache
	for i := range n {
		origin, closeOrigin, err := node.OpenOrigin("http://"+s.addr+"/cache/{key}", node.OriginOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = closeOrigin() })
		nd, err := node.New(node.Config{NodeID: fmt.Sprint("n", i), GRPCAddr: "127.0.0.1:0", HTTPAddr: "-", Brokers: k.Brokers, Kafka: k.Conn,
			Topics: []string{topic}, GroupID: group, Loader: origin, Logger: log,
			L2: redistier.Config{Addrs: []string{r.Addr}, TLS: r.TLS, Username: r.Username, Password: r.Password, KeyPrefix: r.Prefix}, SubscriberMaxWait: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := nd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nd.Close() })
		testenv.WaitFor(t, 30*time.Second, func() string {
			if !nd.Ready() {
				return "node not ready"
			}
			return ""
		})
		c, err := client.NewCache(nd.GRPCAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		nodes = append(nodes, c)
	}
	return nodes
}
