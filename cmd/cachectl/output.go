package main

import (
	"io"
	"log/slog"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// quietLogger logs only errors, to stderr, so tail's output stays the events.
func quietLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelError}))
}

// tierJSON and statsJSON are stats --json: the house JSON style (snake_case, real numbers),
// not protojson's (which writes 64-bit integers as strings).
type tierJSON struct {
	Hits               uint64            `json:"hits"`
	Misses             uint64            `json:"misses"`
	Entries            uint64            `json:"entries"`
	Bytes              uint64            `json:"bytes"`
	StaleFillsRejected uint64            `json:"stale_fills_rejected"`
	Evictions          map[string]uint64 `json:"evictions,omitempty"`
}

type statsJSON struct {
	NodeID        string    `json:"node_id"`
	L1            tierJSON  `json:"l1"`
	L2            *tierJSON `json:"l2,omitempty"`
	OriginLoads   uint64    `json:"origin_loads"`
	EventsApplied uint64    `json:"events_applied"`
	EventsIgnored uint64    `json:"events_ignored"`
	EventsInvalid uint64    `json:"events_invalid"`
	Partitions    []lagJSON `json:"partitions"`
}

func tierToJSON(t *pb.TierStats) tierJSON {
	return tierJSON{Hits: t.GetHits(), Misses: t.GetMisses(), Entries: t.GetEntries(), Bytes: t.GetBytes(),
		StaleFillsRejected: t.GetStaleFillsRejected(), Evictions: t.GetEvictions()}
}

func statsToJSON(s *pb.StatsResponse) statsJSON {
	out := statsJSON{NodeID: s.GetNodeId(), L1: tierToJSON(s.GetL1()), OriginLoads: s.GetOriginLoads(),
		EventsApplied: s.GetEventsApplied(), EventsIgnored: s.GetEventsIgnored(), EventsInvalid: s.GetEventsInvalid(),
		Partitions: lagRows(s)}
	if s.L2 != nil {
		l2 := tierToJSON(s.L2)
		out.L2 = &l2
	}
	return out
}
