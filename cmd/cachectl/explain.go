package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/internal/flagenv"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// Verdicts of explain, one per node (--json prints them as they are; the text in capitals).
const (
	verdictFresh       = "fresh"
	verdictBehind      = "behind"
	verdictNotVouching = "not vouching"
	// verdictOriginBehind: the node has seen a newer version than the origin answers (a tombstone
	// of an INVALIDATE or DELETE at a version the origin has not reached): reads of the key fail.
	verdictOriginBehind = "origin behind"
	verdictUnreachable  = "unreachable"
)

// explainJSON is explain --json: the key, the origin's version, and one entry per node.
type explainJSON struct {
	Key    string            `json:"key"`
	Origin *originJSON       `json:"origin,omitempty"`
	Nodes  []explainNodeJSON `json:"nodes"`
}

type originJSON struct {
	Via         string `json:"via"`
	Found       bool   `json:"found"`
	Version     uint64 `json:"version"`
	Versionless bool   `json:"versionless,omitempty"`
	Error       string `json:"error,omitempty"`
}

type tierEntryJSON struct {
	Present    bool   `json:"present"`
	Version    uint64 `json:"version"`
	Tombstone  bool   `json:"tombstone,omitempty"`
	Missing    bool   `json:"missing,omitempty"`
	Leased     bool   `json:"leased,omitempty"`
	OldEpoch   bool   `json:"old_epoch,omitempty"`
	ValueBytes uint32 `json:"value_bytes"`
	Error      string `json:"error,omitempty"`
}

type partitionJSON struct {
	Topic         string    `json:"topic"`
	Partition     int32     `json:"partition"`
	Offset        int64     `json:"offset"`
	HighWatermark int64     `json:"high_watermark"`
	CaughtUpAt    time.Time `json:"caught_up_at,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorAt   time.Time `json:"last_error_at,omitzero"`
}

type eventJSONExplain struct {
	Topic       string    `json:"topic"`
	Partition   int32     `json:"partition"`
	Offset      int64     `json:"offset"`
	Version     uint64    `json:"version"`
	Op          string    `json:"op"`
	Source      string    `json:"source,omitempty"`
	CommittedAt time.Time `json:"committed_at,omitzero"`
	TraceID     string    `json:"trace_id,omitempty"`
	AppliedAt   time.Time `json:"applied_at"`
}

type explainNodeJSON struct {
	Address string `json:"address"`
	NodeID  string `json:"node_id,omitempty"`
	Verdict string `json:"verdict"`
	// BehindBy is how many versions the node's answer is behind the origin's (verdict behind),
	// or the origin behind the node (verdict origin behind).
	BehindBy     uint64            `json:"behind_by,omitempty"`
	Why          string            `json:"why"`
	Ready        bool              `json:"ready"`
	Vouching     bool              `json:"vouching"`
	FreshAsOf    time.Time         `json:"fresh_as_of,omitzero"`
	MaxStaleness float64           `json:"max_staleness_seconds"`
	Partitions   []partitionJSON   `json:"partitions,omitempty"`
	L1           *tierEntryJSON    `json:"l1,omitempty"`
	L2           *tierEntryJSON    `json:"l2,omitempty"`
	L2Trusted    bool              `json:"l2_trusted"`
	LastEvent    *eventJSONExplain `json:"last_event,omitempty"`
	Error        string            `json:"error,omitempty"`
}

func cmdExplain(ctx context.Context, g *globals, args []string) int {
	var nodes flagenv.List
	var noOrigin bool
	fs, err := g.sub("explain", args, 1, 1, func(fs *flag.FlagSet) {
		fs.Var(&nodes, "nodes", "the cache nodes to ask, comma separated (default: --node)")
		fs.BoolVar(&noOrigin, "no-origin", false, "do not ask a node to read the key's version from its origin")
	})
	if err != nil {
		return code(err)
	}
	key := fs.Arg(0)
	if len(nodes) == 0 {
		nodes = flagenv.List{g.node}
	}
	out := explainJSON{Key: key}
	var answers []*pb.ExplainResponse
	worst := exitOK
	for _, addr := range nodes {
		// The origin's version comes from the first node that can read it: every node's verdict
		// is judged against that one answer.
		askOrigin := !noOrigin && (out.Origin == nil || out.Origin.Error != "")
		r, err := g.explainOne(ctx, addr, key, askOrigin)
		if err != nil {
			if code := g.fail("node "+addr, err); code == exitInvalid {
				return code // a bad key: every node says the same
			}
			worst = exitUnavailable
			answers = append(answers, nil)
			out.Nodes = append(out.Nodes, explainNodeJSON{Address: addr, Verdict: verdictUnreachable, Why: err.Error(), Error: err.Error()})
			continue
		}
		if o := r.GetOrigin(); o != nil && (out.Origin == nil || out.Origin.Error != "") {
			out.Origin = &originJSON{Via: addr, Found: o.GetFound(), Version: o.GetVersion(), Versionless: o.GetVersionless(), Error: o.GetError()}
		}
		answers = append(answers, r)
		out.Nodes = append(out.Nodes, explainNodeJSON{Address: addr})
	}
	for i, r := range answers {
		if r != nil {
			out.Nodes[i] = explainNode(nodes[i], r, out.Origin)
		}
	}
	g.print(out, func(w io.Writer) { printExplain(w, out, !noOrigin) })
	return worst
}

func (g *globals) explainOne(ctx context.Context, addr, key string, origin bool) (*pb.ExplainResponse, error) {
	c, err := client.NewCache(addr, g.opts...)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	return c.Explain(ctx, key, origin)
}

// explainNode is one node's answer with its verdict, judged against the origin's version.
func explainNode(addr string, r *pb.ExplainResponse, origin *originJSON) explainNodeJSON {
	n := explainNodeJSON{Address: addr, NodeID: r.GetNodeId(), Ready: r.GetReady(), Vouching: r.GetVouching(),
		MaxStaleness: r.GetMaxStaleness().AsDuration().Seconds(), L1: tierEntry(r.GetL1()), L2: tierEntry(r.GetL2()), L2Trusted: r.GetL2Trusted()}
	if r.FreshAsOf != nil {
		n.FreshAsOf = r.FreshAsOf.AsTime()
	}
	for _, p := range r.GetPartitions() {
		pj := partitionJSON{Topic: p.GetTopic(), Partition: p.GetPartition(), Offset: p.GetOffset(), HighWatermark: p.GetHighWatermark(),
			LastError: p.GetLastError()}
		if p.CaughtUpAt != nil {
			pj.CaughtUpAt = p.CaughtUpAt.AsTime()
		}
		if p.LastErrorAt != nil {
			pj.LastErrorAt = p.LastErrorAt.AsTime()
		}
		n.Partitions = append(n.Partitions, pj)
	}
	if e := r.GetLastEvent(); e != nil {
		n.LastEvent = &eventJSONExplain{Topic: e.GetTopic(), Partition: e.GetPartition(), Offset: e.GetOffset(), Version: e.GetVersion(),
			Op: strings.TrimPrefix(e.GetOp().String(), "OP_"), Source: e.GetSource(), TraceID: e.GetTraceId(), AppliedAt: e.GetAppliedAt().AsTime()}
		if e.CommittedAt != nil {
			n.LastEvent.CommittedAt = e.CommittedAt.AsTime()
		}
	}
	n.Verdict, n.BehindBy, n.Why = verdict(r, origin)
	return n
}

func tierEntry(t *pb.TierEntry) *tierEntryJSON {
	if t == nil {
		return nil
	}
	return &tierEntryJSON{Present: t.GetPresent(), Version: t.GetVersion(), Tombstone: t.GetTombstone(), Missing: t.GetMissing(),
		Leased: t.GetLeased(), OldEpoch: t.GetOldEpoch(), ValueBytes: t.GetValueBytes(), Error: t.GetError()}
}

// verdict judges one node, as its Get would go: not vouching (and why); the origin behind a
// version the node has seen, so reads fail; behind the origin by N versions; or fresh.
func verdict(r *pb.ExplainResponse, origin *originJSON) (string, uint64, string) {
	if !r.GetVouching() {
		return verdictNotVouching, 0, r.GetNotVouching()
	}
	age := r.GetNow().AsTime().Sub(r.GetFreshAsOf().AsTime()).Round(time.Millisecond)
	l1, l2 := r.GetL1(), r.GetL2()
	// What a read would serve without a load: L1's value, else L2's when the node trusts it and
	// L1 would accept it. A tombstone is not served (a read loads), it only refuses older fills:
	// an L2 value older than L1's tombstone is not served either.
	tier, held := "", uint64(0)
	switch {
	case l1.GetPresent() && !l1.GetTombstone():
		tier, held = "L1", l1.GetVersion()
	case r.GetL2Trusted() && l2.GetPresent() && !l2.GetTombstone() && !l2.GetOldEpoch() && (!l1.GetPresent() || l2.GetVersion() >= l1.GetVersion()):
		tier, held = "L2", l2.GetVersion()
	}
	known := origin != nil && origin.Error == "" && !origin.Versionless
	switch {
	case !known:
		why := "the origin's version is unknown"
		if origin != nil && origin.Versionless {
			why = "the origin returns no versions"
		} else if origin != nil {
			why += " (" + origin.Error + ")"
		}
		if tier == "" {
			return verdictFresh, 0, fmt.Sprintf("caught up %s ago (within max staleness), holds nothing for the key; %s", age, why)
		}
		return verdictFresh, 0, fmt.Sprintf("caught up %s ago (within max staleness), %s holds v%d; %s", age, tier, held, why)
	case tier == "" && l1.GetPresent() && l1.GetVersion() > origin.Version:
		// A load's answer older than what L1 has seen is refused: the read fails.
		return verdictOriginBehind, l1.GetVersion() - origin.Version, fmt.Sprintf("reads of the key fail: L1 holds a v%d tombstone and the origin answers v%d "+
			"(an INVALIDATE or DELETE at a version the origin has not reached, or an origin replica behind the events); "+
			"until the origin catches up or --l1-tombstone-ttl passes ('cachectl evict' drops a value without a version)", l1.GetVersion(), origin.Version)
	case tier == "" && !origin.Found:
		return verdictFresh, 0, fmt.Sprintf("holds nothing for the key: a read finds it %s at the origin (caught up %s ago)", originAbsent(origin), age)
	case tier == "":
		return verdictFresh, 0, fmt.Sprintf("holds nothing for the key: a read loads v%d from the origin (caught up %s ago)", origin.Version, age)
	case held < origin.Version:
		return verdictBehind, origin.Version - held, fmt.Sprintf("behind by %d versions: %s holds v%d, the origin has v%d; the node was caught up %s ago, so the event is on its way or was not published yet",
			origin.Version-held, tier, held, origin.Version, age)
	}
	return verdictFresh, 0, fmt.Sprintf("%s holds v%d, the origin has v%d (caught up %s ago)", tier, held, origin.Version, age)
}

// originAbsent says how the origin has no value: deleted at a version, or never written.
func originAbsent(o *originJSON) string {
	if o.Version == 0 {
		return "not found (never written, or deleted without a version)"
	}
	return fmt.Sprintf("deleted (at v%d)", o.Version)
}

func printExplain(w io.Writer, out explainJSON, askedOrigin bool) {
	fmt.Fprintf(w, "key %q\n", out.Key)
	for _, n := range out.Nodes {
		if len(n.Partitions) == 0 {
			continue // unreachable: the next node says
		}
		var ps []string
		for _, p := range n.Partitions {
			ps = append(ps, fmt.Sprintf("%s/%d", p.Topic, p.Partition))
		}
		fmt.Fprintf(w, "partition %s\n", strings.Join(ps, ", "))
		break
	}
	switch o := out.Origin; {
	case o == nil && askedOrigin:
		fmt.Fprintln(w, "origin    unknown: no node answered")
	case o == nil:
		fmt.Fprintln(w, "origin    not asked (--no-origin)")
	case o.Error != "":
		fmt.Fprintf(w, "origin    unknown (via %s): %s\n", o.Via, o.Error)
	case o.Versionless:
		fmt.Fprintf(w, "origin    found=%v, without a version (via %s)\n", o.Found, o.Via)
	case o.Found:
		fmt.Fprintf(w, "origin    v%d (via %s)\n", o.Version, o.Via)
	default:
		fmt.Fprintf(w, "origin    %s (via %s)\n", originAbsent(o), o.Via)
	}
	for _, n := range out.Nodes {
		name := n.Address
		if n.NodeID != "" {
			name = n.NodeID + " (" + n.Address + ")"
		}
		fmt.Fprintf(w, "\nnode %s: %s: %s\n", name, strings.ToUpper(n.Verdict), n.Why)
		if n.Error != "" {
			continue
		}
		fmt.Fprintf(w, "  L1          %s\n", describeTier(n.L1))
		if n.L2 != nil {
			used := "used by this node now"
			if !n.L2Trusted {
				used = "not used by this node now"
			}
			fmt.Fprintf(w, "  L2          %s (%s)\n", describeTier(n.L2), used)
		}
		for _, p := range n.Partitions {
			line := fmt.Sprintf("  partition   %s/%d offset %d, log end %d", p.Topic, p.Partition, p.Offset, p.HighWatermark)
			if p.CaughtUpAt.IsZero() {
				line += ", never caught up"
			} else {
				line += ", caught up at " + p.CaughtUpAt.Format(time.RFC3339Nano)
			}
			if p.LastError != "" {
				line += ", last error: " + p.LastError
			}
			fmt.Fprintln(w, line)
		}
		if e := n.LastEvent; e != nil {
			line := fmt.Sprintf("  last event  v%d %s at %s/%d offset %d", e.Version, e.Op, e.Topic, e.Partition, e.Offset)
			if e.Source != "" {
				line += ", source " + e.Source
			}
			if !e.CommittedAt.IsZero() {
				line += ", committed " + e.CommittedAt.Format(time.RFC3339Nano)
			}
			line += ", applied " + e.AppliedAt.Format(time.RFC3339Nano)
			if e.TraceID != "" {
				line += ", trace " + e.TraceID
			}
			fmt.Fprintln(w, line)
		} else {
			fmt.Fprintln(w, "  last event  none remembered (none applied since the node started, or forgotten)")
		}
	}
}

func describeTier(t *tierEntryJSON) string {
	switch {
	case t == nil:
		return "-"
	case t.Error != "":
		return "unreadable: " + t.Error
	case !t.Present:
		return "nothing"
	case t.OldEpoch:
		return fmt.Sprintf("v%d from an older Redis epoch (not served)", t.Version)
	case t.Tombstone:
		return fmt.Sprintf("v%d tombstone", t.Version)
	case t.Missing:
		return fmt.Sprintf("v%d not found (cached)", t.Version)
	case t.Leased:
		return fmt.Sprintf("v%d value, %d bytes (versionless origin, leased)", t.Version, t.ValueBytes)
	}
	return fmt.Sprintf("v%d value, %d bytes", t.Version, t.ValueBytes)
}
