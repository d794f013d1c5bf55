package checker

import (
	"slices"
	"sync"
	"time"
)

// Kind is what an operation did.
type Kind int8

// Operation kinds.
const (
	Put Kind = iota + 1
	Get
)

func (k Kind) String() string {
	switch k {
	case Put:
		return "put"
	case Get:
		return "get"
	}
	return "?"
}

// Op is one operation of the workload, from invocation to completion.
type Op struct {
	Kind Kind
	// Session is the session that ran the operation, or -1 for a plain read outside any
	// session (no read-your-writes or session monotonicity applies to it).
	Session int
	Node    int // the node a Get went through (-1 for Puts)
	Key     string
	// Version is the version a Put was given, or the version a Get returned.
	Version uint64
	// Found, Tier and Stale describe a Get's answer.
	Found bool
	Tier  string
	Stale bool
	// MinVersion is what a Get asked for (0: none).
	MinVersion uint64
	// Published is true when a Put returned after Kafka's ack.
	Published bool
	Invoke    time.Time
	Complete  time.Time
	// Err is set when the operation failed; failed operations carry no version.
	Err string
}

// Fault is a window during which a fault was active.
type Fault struct {
	Name       string
	Start, End time.Time
}

// History records operations and fault windows; it is safe for concurrent use.
type History struct {
	mu     sync.Mutex
	ops    []Op
	faults []Fault
	open   map[string]time.Time
	keys   map[string]bool
	limit  int
}

// NewHistory returns a history that keeps at most limit operations (older ones are kept; later
// ones are counted as dropped).
func NewHistory(limit int) *History {
	return &History{open: map[string]time.Time{}, keys: map[string]bool{}, limit: limit}
}

// Add records an operation.
func (h *History) Add(op Op) {
	h.mu.Lock()
	h.keys[op.Key] = true
	if len(h.ops) < h.limit {
		h.ops = append(h.ops, op)
	}
	h.mu.Unlock()
}

// Cut records that an operation on key was cut short by the end of the run: its outcome is
// unknown, so it is not an operation, but the key is still among Keys.
func (h *History) Cut(key string) {
	h.mu.Lock()
	h.keys[key] = true
	h.mu.Unlock()
}

// Keys returns, sorted, every key an operation touched or may have touched (see Cut), including
// those of operations beyond the limit.
func (h *History) Keys() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make([]string, 0, len(h.keys))
	for k := range h.keys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// FaultStart marks the start of a fault window.
func (h *History) FaultStart(name string) {
	h.mu.Lock()
	h.open[name] = time.Now()
	h.mu.Unlock()
}

// FaultEnd closes the window FaultStart opened.
func (h *History) FaultEnd(name string) {
	h.mu.Lock()
	if start, ok := h.open[name]; ok {
		h.faults = append(h.faults, Fault{Name: name, Start: start, End: time.Now()})
		delete(h.open, name)
	}
	h.mu.Unlock()
}

// Snapshot returns the operations and fault windows recorded so far (open windows end now).
func (h *History) Snapshot() ([]Op, []Fault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	faults := append([]Fault(nil), h.faults...)
	for name, start := range h.open {
		faults = append(faults, Fault{Name: name, Start: start, End: time.Now()})
	}
	return append([]Op(nil), h.ops...), faults
}
