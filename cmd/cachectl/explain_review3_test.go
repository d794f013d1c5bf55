package main

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TestVerdictL1TombstoneNewerThanTrustedL2_review3: L1 applied a DELETE (tombstone v9) and the
// shared group has not written it to Redis yet (trusted: caught up within max staleness, Redis
// still holds the value at v7). A Get does not serve Redis's v7: fromL2's L1 fill is refused by
// the newer tombstone (no stale fill), so the read loads v9 from the origin. The node is not
// behind; the verdict must not say it is.
func TestVerdictL1TombstoneNewerThanTrustedL2_review3(t *testing.T) {
	now := time.Now()
	r := &pb.ExplainResponse{Vouching: true, Now: timestamppb.New(now), FreshAsOf: timestamppb.New(now.Add(-50 * time.Millisecond)),
		L1: &pb.TierEntry{Present: true, Version: 9, Tombstone: true}, L2: &pb.TierEntry{Present: true, Version: 7, ValueBytes: 2}, L2Trusted: true}
	for _, origin := range []*originJSON{{Found: false, Version: 9}, {Found: true, Version: 9}} {
		v, _, why := verdict(r, origin)
		if v == verdictBehind || strings.Contains(why, "L2 holds v7") {
			t.Errorf("origin %+v: verdict = %q %q; a Get would load v9 from the origin (L1's tombstone v9 refuses Redis's v7)", *origin, v, why)
		}
	}
}
