package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/internal/fault"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/node"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TestExplainNamesTheNodeCutOffFromKafka runs explain on three nodes, one of which loses Kafka:
// that node, and only it, is reported as not vouching, with the partition, how long ago it was
// caught up and the Kafka error; the others hold the last write with the event that brought it.
func TestExplainNamesTheNodeCutOffFromKafka(t *testing.T) {
	cut := new(fault.Cutter)
	c, err := embedded.Start(embedded.Config{Nodes: 3, Node: func(i int, nc *node.Config) {
		nc.MaxStaleness = time.Second
		if i == 2 {
			nc.Kafka.Dial = cut.Dial
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cut.Heal(); c.Close() })
	env := map[string]string{"CACHEWIRE_CTL_WRITER": c.WriterAddr, "CACHEWIRE_CTL_NODE": c.NodeAddrs[0]}
	nodes := strings.Join(c.NodeAddrs, ",")
	explain := func(key string) explainJSON {
		t.Helper()
		code, out, errOut := ctlIn(t, env, "", "--json", "explain", key, "--nodes", nodes)
		var e explainJSON
		if code != exitOK || json.Unmarshal([]byte(out), &e) != nil || len(e.Nodes) != 3 {
			t.Fatalf("explain --json = %d %q %q", code, out, errOut)
		}
		return e
	}
	put := func(key, value string) uint64 {
		t.Helper()
		code, out, errOut := ctlIn(t, env, "", "--json", "put", key, value)
		var w writeJSON
		if code != exitOK || json.Unmarshal([]byte(out), &w) != nil || !w.Published {
			t.Fatalf("put = %d %q %q", code, out, errOut)
		}
		return w.Version
	}

	const key = "explain:user:7"
	v1 := put(key, "Ada")
	// Every node applies the event and a read puts the value in its L1.
	testenv.WaitFor(t, 20*time.Second, func() string {
		e := explain(key)
		for i, n := range e.Nodes {
			if n.LastEvent == nil || n.LastEvent.Version != v1 {
				return "node " + strconv.Itoa(i) + " has not applied v" + strconv.FormatUint(v1, 10) + " yet"
			}
		}
		return ""
	})
	for _, addr := range c.NodeAddrs {
		if code, out, errOut := ctlIn(t, env, "", "--node", addr, "get", key, "--min-version", strconv.FormatUint(v1, 10)); code != exitOK {
			t.Fatalf("get from %s = %d %q %q", addr, code, out, errOut)
		}
	}
	e := explain(key)
	if e.Origin == nil || !e.Origin.Found || e.Origin.Version != v1 {
		t.Fatalf("origin = %+v, want found at v%d", e.Origin, v1)
	}
	for _, n := range e.Nodes {
		if n.Verdict != verdictFresh || n.L1 == nil || n.L1.Version != v1 || n.L1.Tombstone || len(n.Partitions) != 1 {
			t.Fatalf("%s: %+v, want fresh with L1 at v%d and one partition", n.NodeID, n, v1)
		}
		le := n.LastEvent
		if le.Op != "UPSERT" || le.Source == "" || le.CommittedAt.IsZero() || le.Partition != n.Partitions[0].Partition || le.Offset < 0 {
			t.Fatalf("%s: last event %+v, want the UPSERT on the key's partition with its source and commit time", n.NodeID, le)
		}
	}

	// Cut node 3 off from Kafka and write again: once its partition is older than max
	// staleness, explain says it does not vouch, and why.
	cut.Cut()
	v2 := put(key, "Grace")
	testenv.WaitFor(t, 30*time.Second, func() string {
		e = explain(key)
		// The node stops vouching when its topic metadata or the key's partition was read more
		// than max staleness ago, whichever comes first; the partition's age soon passes it too.
		if n := e.Nodes[2]; n.Verdict != verdictNotVouching || !strings.Contains(n.Why, "was last caught up") {
			return "node 3: " + n.Verdict + ": " + n.Why
		}
		for _, n := range e.Nodes[:2] {
			if n.Verdict != verdictFresh || n.LastEvent == nil || n.LastEvent.Version != v2 {
				return n.NodeID + ": " + n.Verdict + ": " + n.Why
			}
		}
		return ""
	})
	lag := e.Nodes[2]
	part := "partition " + lag.Partitions[0].Topic + "/" + strconv.Itoa(int(lag.Partitions[0].Partition))
	for _, want := range []string{part, "beyond max staleness 1s", "last Kafka error", "network cut"} {
		if !strings.Contains(lag.Why, want) {
			t.Errorf("node 3's why = %q, want it to say %q", lag.Why, want)
		}
	}
	if lag.Vouching || lag.LastEvent == nil || lag.LastEvent.Version != v1 || lag.L1 == nil || lag.L1.Version != v1 {
		t.Errorf("node 3 = %+v, want not vouching, still holding v%d with its event", lag, v1)
	}
	if e.Origin == nil || e.Origin.Version != v2 {
		t.Errorf("origin = %+v, want v%d", e.Origin, v2)
	}

	// The text form names the lagging node and the reason on its verdict line.
	code, out, errOut := ctlIn(t, env, "", "explain", key, "--nodes", nodes)
	if code != exitOK {
		t.Fatalf("explain = %d %q %q", code, out, errOut)
	}
	var verdictLine string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "node node-3 ") {
			verdictLine = line
		}
	}
	if !strings.Contains(verdictLine, "NOT VOUCHING: "+part) || !strings.Contains(out, "origin    v"+strconv.FormatUint(v2, 10)) {
		t.Fatalf("explain text:\n%s\nwant node-3's line to say NOT VOUCHING and name %s", out, part)
	}
}

func TestExplainUnreachableNode(t *testing.T) {
	code, out, errOut := ctl(t, "--json", "--timeout", "1s", "explain", "ctl:x", "--nodes", cluster(t).NodeAddrs[0]+",127.0.0.1:1")
	var e explainJSON
	if code != exitUnavailable || json.Unmarshal([]byte(out), &e) != nil || len(e.Nodes) != 2 || e.Nodes[0].Verdict == verdictUnreachable ||
		e.Nodes[1].Verdict != verdictUnreachable || !strings.Contains(errOut, "127.0.0.1:1") {
		t.Fatalf("explain with an unreachable node = %d %q %q, want exit 3 and that node unreachable", code, out, errOut)
	}
	if code, _, errOut := ctl(t, "explain", ""); code != exitInvalid || !strings.Contains(errOut, "key") {
		t.Fatalf("explain of an empty key = %d %q, want exit 4", code, errOut)
	}
}

func TestVerdict(t *testing.T) {
	now := time.Now()
	resp := func(vouching bool, l1, l2 *pb.TierEntry, l2Trusted bool) *pb.ExplainResponse {
		return &pb.ExplainResponse{Vouching: vouching, NotVouching: "partition t/1 was last caught up 9s ago", Now: timestamppb.New(now),
			FreshAsOf: timestamppb.New(now.Add(-100 * time.Millisecond)), L1: l1, L2: l2, L2Trusted: l2Trusted}
	}
	val := func(v uint64) *pb.TierEntry { return &pb.TierEntry{Present: true, Version: v} }
	tomb := func(v uint64) *pb.TierEntry { return &pb.TierEntry{Present: true, Version: v, Tombstone: true} }
	none := &pb.TierEntry{}
	at := func(v uint64) *originJSON { return &originJSON{Found: true, Version: v} }
	for _, tc := range []struct {
		name    string
		r       *pb.ExplainResponse
		origin  *originJSON
		verdict string
		says    string
	}{
		{"not vouching wins over a matching version", resp(false, val(9), nil, false), at(9), verdictNotVouching, "last caught up 9s ago"},
		{"L1 at the origin's version", resp(true, val(9), nil, false), at(9), verdictFresh, "L1 holds v9, the origin has v9"},
		{"L1 newer than the origin answered", resp(true, val(10), nil, false), at(9), verdictFresh, "L1 holds v10"},
		{"L1 behind", resp(true, val(41), nil, false), at(57), verdictBehind, "behind by 16 versions: L1 holds v41, the origin has v57"},
		{"a tombstone is not served", resp(true, tomb(41), none, false), at(57), verdictFresh, "a read loads v57"},
		{"trusted L2 behind", resp(true, none, val(3), true), at(5), verdictBehind, "L2 holds v3"},
		{"untrusted L2 is not read", resp(true, none, val(3), false), at(5), verdictFresh, "holds nothing"},
		{"old-epoch L2 is not read", resp(true, none, &pb.TierEntry{Present: true, Version: 3, OldEpoch: true}, true), at(5), verdictFresh, "holds nothing"},
		{"origin unknown", resp(true, val(4), nil, false), &originJSON{Error: "origin unavailable"}, verdictFresh, "origin's version is unknown (origin unavailable)"},
		{"origin not asked", resp(true, none, nil, false), nil, verdictFresh, "holds nothing for the key; the origin's version is unknown"},
		{"versionless origin", resp(true, val(4), nil, false), &originJSON{Found: true, Versionless: true}, verdictFresh, "returns no versions"},
		{"an L1 tombstone above the origin: reads fail", resp(true, tomb(99), none, false), at(7), verdictOriginBehind, "reads of the key fail: L1 holds a v99 tombstone and the origin answers v7"},
		{"a tombstone at the origin's deletion", resp(true, tomb(9), none, false), &originJSON{Version: 9}, verdictFresh, "deleted (at v9)"},
		{"never written", resp(true, none, none, false), &originJSON{}, verdictFresh, "not found (never written"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, _, why := verdict(tc.r, tc.origin)
			if v != tc.verdict || !strings.Contains(why, tc.says) {
				t.Fatalf("verdict = %q %q, want %q saying %q", v, why, tc.verdict, tc.says)
			}
		})
	}
}

// TestExplainSaysWhenTheOriginIsBehindTheNode: an INVALIDATE at a version the origin has not
// reached makes reads of the key fail; explain says so and by how much, rather than fresh.
func TestExplainSaysWhenTheOriginIsBehindTheNode(t *testing.T) {
	code, out, _ := ctl(t, "--json", "put", "ctl:ahead", "x")
	var w writeJSON
	if code != exitOK || json.Unmarshal([]byte(out), &w) != nil {
		t.Fatalf("put = %d %q", code, out)
	}
	if code, out, _ := ctl(t, "invalidate", "ctl:ahead", strconv.FormatUint(w.Version+90, 10)); code != exitOK {
		t.Fatalf("invalidate = %d %q", code, out)
	}
	var e explainJSON
	testenv.WaitFor(t, 20*time.Second, func() string {
		code, out, errOut := ctl(t, "--json", "explain", "ctl:ahead")
		if code != exitOK || json.Unmarshal([]byte(out), &e) != nil || len(e.Nodes) != 1 {
			return fmt.Sprintf("explain = %d %q %q", code, out, errOut)
		}
		if n := e.Nodes[0]; n.Verdict != verdictOriginBehind || n.BehindBy != 90 || !strings.Contains(n.Why, "reads of the key fail") {
			return fmt.Sprintf("verdict %q by %d: %s", n.Verdict, n.BehindBy, n.Why)
		}
		return ""
	})
	if code, _, errOut := ctl(t, "get", "ctl:ahead"); code != exitUnavailable || !strings.Contains(errOut, "has seen version") {
		t.Fatalf("get = %d %q: explain said reads fail, and they should", code, errOut)
	}
}
