package checker

import (
	"testing"
	"time"
)

var t0 = time.Unix(1_800_000_000, 0)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func put(key string, v uint64, invoke, complete int) Op {
	return Op{Kind: Put, Session: 0, Node: -1, Key: key, Version: v, Invoke: at(invoke), Complete: at(complete), Published: true}
}

func get(session, node int, key string, v, minV uint64, invoke, complete int) Op {
	return Op{Kind: Get, Session: session, Node: node, Key: key, Version: v, Found: v > 0, MinVersion: minV, Tier: "L1",
		Invoke: at(invoke), Complete: at(complete)}
}

// stale marks a read as answered stale=true.
func stale(g Op) Op {
	g.Stale = true
	return g
}

func converged(key string, v uint64, nodes int) Final {
	f := Final{Key: key, Redis: v, RedisValue: true}
	for range nodes {
		f.Nodes = append(f.Nodes, v)
	}
	return f
}

func TestCheckerFindsEachKindOfViolation(t *testing.T) {
	bound := time.Second
	clean := []Op{
		put("k", 1, 0, 10), get(0, 0, "k", 1, 1, 20, 21), put("k", 2, 100, 110),
		get(-1, 1, "k", 1, 0, 500, 501), // stale by 390 ms: within the bound
		get(0, 1, "k", 2, 2, 600, 601),
	}
	if r := Check(clean, nil, bound, []Final{converged("k", 2, 2)}); !r.OK() {
		t.Fatalf("clean history flagged: %s\n%+v", r.Summary(), r)
	}
	tests := []struct {
		name    string
		ops     []Op
		faults  []Fault
		finals  []Final
		count   func(*Result) int
		wantBad bool
	}{
		{"min_version answered with an older version",
			[]Op{put("k", 2, 0, 10), get(0, 0, "k", 1, 2, 20, 21)}, nil, []Final{converged("k", 2, 1)},
			func(r *Result) int { return len(r.MinVersionViolations) }, true},
		{"read staler than the bound",
			[]Op{put("k", 1, 0, 10), put("k", 2, 20, 30), get(-1, 0, "k", 1, 0, 2000, 2001)}, nil, []Final{converged("k", 2, 1)},
			func(r *Result) int { return len(r.StaleReads) }, true},
		{"the same stale read during a fault is allowed",
			[]Op{put("k", 1, 0, 10), put("k", 2, 20, 30), get(-1, 0, "k", 1, 0, 2000, 2001)},
			[]Fault{{Name: "cut", Start: at(15), End: at(3000)}}, []Final{converged("k", 2, 1)},
			func(r *Result) int { return len(r.StaleReads) }, false},
		{"a stale read the node flagged stale is honest",
			[]Op{put("k", 1, 0, 10), put("k", 2, 20, 30), func() Op { g := get(-1, 0, "k", 1, 0, 2000, 2001); g.Stale = true; return g }()},
			nil, []Final{converged("k", 2, 1)},
			func(r *Result) int { return len(r.StaleReads) }, false},
		{"session went back in time",
			[]Op{put("k", 1, 0, 1), put("k", 2, 2, 3), get(0, 0, "k", 2, 1, 10, 11), get(0, 1, "k", 1, 1, 20, 21)}, nil, []Final{converged("k", 2, 2)},
			func(r *Result) int { return len(r.NonMonotonicSession) }, true},
		{"overlapping reads may disagree",
			[]Op{put("k", 2, 0, 1), get(0, 0, "k", 2, 1, 10, 30), get(0, 1, "k", 1, 1, 20, 40)}, nil, []Final{converged("k", 2, 2)},
			func(r *Result) int { return len(r.NonMonotonicSession) }, false},
		{"node went back in time",
			[]Op{put("k", 2, 0, 1), get(-1, 0, "k", 2, 0, 10, 11), get(-1, 0, "k", 1, 0, 20, 21)}, nil, []Final{converged("k", 2, 1)},
			func(r *Result) int { return len(r.NonMonotonicNode) }, true},
		{"a node's stale answer may go back",
			[]Op{put("k", 2, 0, 1), get(-1, 0, "k", 2, 0, 10, 11), stale(get(-1, 0, "k", 1, 0, 20, 21))}, nil, []Final{converged("k", 2, 1)},
			func(r *Result) int { return len(r.NonMonotonicNode) }, false},
		{"a node's stale answer is no floor for later reads",
			[]Op{put("k", 2, 0, 1), stale(get(-1, 0, "k", 2, 0, 10, 11)), get(-1, 0, "k", 1, 0, 20, 21), get(-1, 0, "k", 2, 0, 30, 31)},
			nil, []Final{converged("k", 2, 1)},
			func(r *Result) int { return len(r.NonMonotonicNode) }, false},
		{"a stale answer in between does not hide a node going back",
			[]Op{put("k", 2, 0, 1), get(-1, 0, "k", 2, 0, 10, 11), stale(get(-1, 0, "k", 1, 0, 20, 21)), get(-1, 0, "k", 1, 0, 30, 31)},
			nil, []Final{converged("k", 2, 1)},
			func(r *Result) int { return len(r.NonMonotonicNode) }, true},
		{"a session's stale answer may go back",
			[]Op{put("k", 1, 0, 1), put("k", 2, 2, 3), get(0, 0, "k", 2, 1, 10, 11), stale(get(0, 1, "k", 1, 1, 20, 21))}, nil, []Final{converged("k", 2, 2)},
			func(r *Result) int { return len(r.NonMonotonicSession) + len(r.NonMonotonicNode) }, false},
		{"a session's stale answer is no floor for later reads",
			[]Op{put("k", 1, 0, 1), put("k", 2, 2, 3), stale(get(0, 0, "k", 2, 1, 10, 11)), get(0, 1, "k", 1, 1, 20, 21)}, nil, []Final{converged("k", 2, 2)},
			func(r *Result) int { return len(r.NonMonotonicSession) + len(r.NonMonotonicNode) }, false},
		{"a stale answer in between does not hide a session going back",
			[]Op{put("k", 1, 0, 1), put("k", 2, 2, 3), get(0, 0, "k", 2, 1, 10, 11), stale(get(0, 1, "k", 1, 1, 20, 21)), get(0, 2, "k", 1, 1, 30, 31)},
			nil, []Final{converged("k", 2, 3)},
			func(r *Result) int { return len(r.NonMonotonicSession) }, true},
		{"acked write never visible",
			[]Op{put("k", 1, 0, 10), put("k", 2, 20, 30), get(-1, 0, "k", 1, 0, 40, 41)}, nil, []Final{converged("k", 1, 1)},
			func(r *Result) int { return len(r.LostWrites) }, true},
		{"a node not converged",
			[]Op{put("k", 2, 0, 10)}, nil, []Final{{Key: "k", Nodes: []uint64{2, 1}}},
			func(r *Result) int { return len(r.NotConverged) }, true},
		{"Redis holding an old value",
			[]Op{put("k", 2, 0, 10)}, nil, []Final{{Key: "k", Nodes: []uint64{2}, Redis: 1, RedisValue: true}},
			func(r *Result) int { return len(r.NotConverged) }, true},
		{"Redis holding a tombstone is fine",
			[]Op{put("k", 2, 0, 10)}, nil, []Final{{Key: "k", Nodes: []uint64{2}, Redis: 2, RedisValue: false}},
			func(r *Result) int { return len(r.NotConverged) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Check(tt.ops, tt.faults, bound, tt.finals)
			if got := tt.count(r) > 0; got != tt.wantBad {
				t.Fatalf("violation found = %v, want %v: %s", got, tt.wantBad, r.Summary())
			}
			if tt.wantBad && r.OK() {
				t.Fatalf("violation found but OK() is true: %s", r.Summary())
			}
		})
	}
}

func TestOriginGets(t *testing.T) {
	origin := get(-1, 0, "k", 1, 0, 20, 21)
	origin.Tier = "ORIGIN"
	r := Check([]Op{put("k", 1, 0, 10), origin, get(-1, 0, "k", 1, 0, 30, 31)}, nil, time.Second, nil)
	if r.OriginGets != 1 {
		t.Fatalf("OriginGets = %d, want 1", r.OriginGets)
	}
}

func TestStalenessHistogram(t *testing.T) {
	ops := []Op{put("k", 1, 0, 10), get(-1, 0, "k", 0, 0, 11, 12), get(-1, 0, "k", 1, 0, 40, 45), get(-1, 1, "k", 1, 0, 20, 25)}
	r := Check(ops, nil, time.Second, nil)
	if len(r.Staleness) != 2 || r.MaxStaleness != 35*time.Millisecond {
		t.Fatalf("staleness %v max %v, want two samples, max 35ms", r.Staleness, r.MaxStaleness)
	}
}
