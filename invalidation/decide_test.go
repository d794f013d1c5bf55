package invalidation

import "testing"

func TestDecide(t *testing.T) {
	none := State{}
	value5 := State{Known: true, Version: 5}
	tomb5 := State{Known: true, Version: 5, Tombstone: true}
	upsert := func(v uint64) *Event {
		return &Event{Key: "k", Version: v, Op: OpUpsert, Value: []byte("x"), HasValue: true}
	}
	bare := func(op Op, v uint64) *Event { return &Event{Key: "k", Version: v, Op: op} }

	tests := []struct {
		name string
		cur  State
		ev   *Event
		p    Policy
		want Action
	}{
		{"duplicate upsert of the held version is ignored", value5, upsert(5), RefreshHeld, Ignore},
		{"older upsert after a newer value is ignored", value5, upsert(4), RefreshHeld, Ignore},
		{"older delete after a newer value is ignored", value5, bare(OpDelete, 3), RefreshHeld, Ignore},
		{"older upsert after a newer tombstone is ignored", tomb5, upsert(4), RefreshAll, Ignore},
		{"duplicate invalidate of the tombstoned version is ignored", tomb5, bare(OpInvalidate, 5), RefreshHeld, Ignore},
		{"invalidate at the held version keeps the value (it is that version)", value5, bare(OpInvalidate, 5), RefreshHeld, Ignore},
		{"newer upsert refreshes a held value", value5, upsert(6), RefreshHeld, Refresh},
		{"newer upsert evicts a held value under evict-only", value5, upsert(6), EvictOnly, Evict},
		{"newer upsert refreshes under refresh-all", value5, upsert(6), RefreshAll, Refresh},
		{"newer upsert after a tombstone evicts under refresh-held", tomb5, upsert(6), RefreshHeld, Evict},
		{"newer upsert after a tombstone refreshes under refresh-all", tomb5, upsert(6), RefreshAll, Refresh},
		{"upsert without a value evicts even under refresh-all", value5, bare(OpUpsert, 6), RefreshAll, Evict},
		{"newer delete evicts", value5, bare(OpDelete, 6), RefreshAll, Evict},
		{"newer invalidate evicts", value5, bare(OpInvalidate, 6), RefreshHeld, Evict},
		{"delete for a key the tier does not hold writes a tombstone", none, bare(OpDelete, 1), RefreshHeld, Evict},
		{"upsert for a key the tier does not hold writes a tombstone under refresh-held", none, upsert(1), RefreshHeld, Evict},
		{"upsert for a key the tier does not hold is stored under refresh-all", none, upsert(1), RefreshAll, Refresh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.cur, tt.ev, tt.p); got != tt.want {
				t.Fatalf("Decide(%+v, %s v%d, %s) = %s, want %s", tt.cur, tt.ev.Op, tt.ev.Version, tt.p, got, tt.want)
			}
		})
	}
}

// TestDecideReorderingConverges applies every ordering of a small history, with duplicates, and
// checks that the tier always ends at the newest version.
func TestDecideReorderingConverges(t *testing.T) {
	history := []*Event{
		{Key: "k", Version: 1, Op: OpUpsert, Value: []byte("a"), HasValue: true},
		{Key: "k", Version: 2, Op: OpInvalidate},
		{Key: "k", Version: 3, Op: OpUpsert, Value: []byte("c"), HasValue: true},
		{Key: "k", Version: 4, Op: OpDelete},
		{Key: "k", Version: 5, Op: OpUpsert, Value: []byte("e"), HasValue: true},
	}
	apply := func(order []int, p Policy) State {
		var s State
		for _, i := range order {
			switch Decide(s, history[i], p) {
			case Evict:
				s = State{Known: true, Version: history[i].Version, Tombstone: true}
			case Refresh:
				s = State{Known: true, Version: history[i].Version}
			}
		}
		return s
	}
	var permute func(prefix, rest []int)
	count := 0
	permute = func(prefix, rest []int) {
		if len(rest) == 0 {
			// Deliver the whole history again after it (at-least-once redelivery).
			order := append(append([]int{}, prefix...), prefix...)
			for _, p := range []Policy{RefreshHeld, RefreshAll, EvictOnly} {
				if got := apply(order, p); got.Version != 5 {
					t.Fatalf("order %v under %s ended at %+v, want version 5", order, p, got)
				}
			}
			count++
			return
		}
		for i := range rest {
			next := append(append([]int{}, rest[:i]...), rest[i+1:]...)
			permute(append(append([]int{}, prefix...), rest[i]), next)
		}
	}
	permute(nil, []int{0, 1, 2, 3, 4})
	if count != 120 {
		t.Fatalf("checked %d orders, want 120", count)
	}
}

func TestAcceptFill(t *testing.T) {
	tests := []struct {
		name    string
		cur     State
		version uint64
		want    bool
	}{
		{"unknown key accepts", State{}, 1, true},
		{"older than a tombstone is rejected (the stale-set race)", State{Known: true, Version: 2, Tombstone: true}, 1, false},
		{"equal to a tombstone is accepted", State{Known: true, Version: 2, Tombstone: true}, 2, true},
		{"older than a value is rejected", State{Known: true, Version: 7}, 6, false},
		{"newer than a value is accepted", State{Known: true, Version: 7}, 8, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AcceptFill(tt.cur, tt.version); got != tt.want {
				t.Fatalf("AcceptFill(%+v, %d) = %v, want %v", tt.cur, tt.version, got, tt.want)
			}
		})
	}
}
