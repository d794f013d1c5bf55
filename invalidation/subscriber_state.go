package invalidation

import (
	"sort"
	"time"
)

// PartitionState is how far a Subscriber has read one partition.
type PartitionState struct {
	Topic     string
	Partition int
	// Positioned is true once the partition has a starting offset.
	Positioned bool
	// Offset is the next offset to read.
	Offset int64
	// HighWatermark is the log end offset the broker last reported.
	HighWatermark int64
	// CaughtUpAt is the start of the last fetch that found the partition read to its log end:
	// every event published before that moment has been applied. Zero until the first one.
	CaughtUpAt time.Time
	// LastError is the last failure to read the partition (cannot reach its leader, a fetch
	// failed), kept until a fetch succeeds; empty while fetches succeed. LastErrorAt is when.
	LastError   string
	LastErrorAt time.Time
}

// SubscriberStats are a Subscriber's counters.
type SubscriberStats struct {
	// Events counts valid events handed to the sink; Invalid counts events skipped as
	// undecodable or invalid; DeadLettered counts those written to the dead-letter topic.
	Events, Invalid, DeadLettered uint64
	// Resets counts gaps that made the subscriber reset the sink; Reconnects counts reconnections.
	Resets, Reconnects uint64
}

type topicPartition struct {
	topic     string
	partition int
}

func (s *Subscriber) update(tp topicPartition, f func(*PartitionState)) {
	s.mu.Lock()
	if st, ok := s.parts[tp]; ok {
		f(st)
	}
	s.mu.Unlock()
}

// Partition returns the state of one partition.
func (s *Subscriber) Partition(topic string, partition int) (PartitionState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.parts[topicPartition{topic, partition}]
	if !ok {
		return PartitionState{}, false
	}
	return *st, true
}

// Partitions returns the state of every partition, sorted by topic and partition.
func (s *Subscriber) Partitions() []PartitionState {
	s.mu.Lock()
	out := make([]PartitionState, 0, len(s.parts))
	for _, st := range s.parts {
		out = append(out, *st)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}

// NumPartitions returns how many partitions topic had at the last metadata lookup, or 0.
func (s *Subscriber) NumPartitions(topic string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[topic]
}

// MetadataAt returns when the last metadata lookup of topic that succeeded began, or the zero
// time. A partition added to the topic after it is not read yet (the next lookup finds it), so
// no freshness claim can be later than this moment.
func (s *Subscriber) MetadataAt(topic string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metaAt[topic]
}

// MetadataError returns the last metadata lookup's error, or "" once a lookup succeeded after it.
func (s *Subscriber) MetadataError() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metaErr
}

// KeyPartitions appends to dst the partitions of topic that can hold key's events: its
// partition under the topic's partition count now, and under every count seen since the
// subscriber started (up to 4) when partitions were added. A producer that has not yet seen the
// new partitions (its metadata is up to a refresh old) still writes a key to the partition it
// used before, so a key's freshness is the oldest of these.
func (s *Subscriber) KeyPartitions(topic, key string, dst []int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.history[topic] {
		p := PartitionFor(key, n)
		dup := false
		for _, q := range dst {
			dup = dup || q == p
		}
		if !dup {
			dst = append(dst, p)
		}
	}
	return dst
}

// PartitionCounts returns the partition counts of topic seen since the subscriber started (or
// since the topic shrank), oldest first: KeyPartitions maps a key under each.
func (s *Subscriber) PartitionCounts(topic string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.history[topic]...)
}

// Stats returns a snapshot of the counters.
func (s *Subscriber) Stats() SubscriberStats {
	return SubscriberStats{
		Events: s.events.Load(), Invalid: s.invalid.Load(), DeadLettered: s.deadLettered.Load(),
		Resets: s.resets.Load(), Reconnects: s.reconnects.Load(),
	}
}
