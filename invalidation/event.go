package invalidation

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// Op says what happened to a key at a version.
type Op int8

const (
	// OpUpsert: the key holds a value at this version. The event may carry it (HasValue).
	OpUpsert Op = Op(pb.Op_OP_UPSERT)
	// OpDelete: the key was deleted at this version.
	OpDelete Op = Op(pb.Op_OP_DELETE)
	// OpInvalidate: the key changed at this version and the new value is not carried.
	OpInvalidate Op = Op(pb.Op_OP_INVALIDATE)
	// OpEvict: drop the key's cached value and keep the version it was at. It carries no
	// version (Version is 0) and no value: an operator's "drop this" when the version is not at
	// hand. A tier holding no value for the key ignores it.
	OpEvict Op = Op(pb.Op_OP_EVICT)
)

// String returns the op's wire name without the OP_ prefix, or "op(N)" for an unknown op.
func (o Op) String() string {
	switch o {
	case OpUpsert:
		return "UPSERT"
	case OpDelete:
		return "DELETE"
	case OpInvalidate:
		return "INVALIDATE"
	case OpEvict:
		return "EVICT"
	}
	return fmt.Sprintf("op(%d)", int8(o))
}

// Event is one versioned change to one key: the decoded value of a record on a cachewire topic.
type Event struct {
	// Key is the cache key (also the Kafka record key).
	Key string
	// Version only grows per key.
	Version uint64
	// Op is what happened at Version.
	Op Op
	// Value is the new value of an OpUpsert event when HasValue is true.
	Value []byte
	// HasValue is true when the event carries the value (an UPSERT that can refresh caches).
	HasValue bool
	// CommittedAt is when the writer committed the change; zero when the publisher did not say.
	CommittedAt time.Time
	// Source names the writer.
	Source string
	// Trace carries trace context from the write.
	Trace map[string]string
	// Offset is the event's offset in its partition, set by Subscriber and GroupApplier; not encoded.
	Offset int64
}

// VersionTrailer is the gRPC trailer in which WriterService.Get returns, along with NotFound, the
// version at which the key was deleted ("0" for a key never written).
const VersionTrailer = "cachewire-version"

// Limits bound what an event or a request may carry.
type Limits struct {
	// MaxKeyBytes is the longest key accepted, in bytes. If zero, it defaults to DefaultMaxKeyBytes.
	MaxKeyBytes int
	// MaxValueBytes is the largest value accepted, in bytes. If zero, it defaults to
	// DefaultMaxValueBytes.
	MaxValueBytes int
}

// Default limits.
const (
	DefaultMaxKeyBytes   = 1024
	DefaultMaxValueBytes = 1 << 20
)

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxKeyBytes == 0 {
		l.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if l.MaxValueBytes == 0 {
		l.MaxValueBytes = DefaultMaxValueBytes
	}
	return l
}

// CheckKey reports whether key is acceptable under l: non-empty, valid UTF-8 and at most
// MaxKeyBytes long. The error names the limit.
func (l Limits) CheckKey(key string) error {
	l = l.WithDefaults()
	switch {
	case key == "":
		return ErrEmptyKey
	case len(key) > l.MaxKeyBytes:
		return fmt.Errorf("%w: %d bytes, max_key_bytes is %d", ErrKeyTooLong, len(key), l.MaxKeyBytes)
	case !utf8.ValidString(key):
		return ErrKeyNotUTF8
	}
	return nil
}

// CheckValue reports whether a value of n bytes is acceptable under l. The error names the limit.
func (l Limits) CheckValue(n int) error {
	l = l.WithDefaults()
	if n > l.MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, max_value_bytes is %d", ErrValueTooLarge, n, l.MaxValueBytes)
	}
	return nil
}

// Validate reports whether e is a well-formed event under l: a valid key, a version above zero
// (zero for EVICT), a known op, a value within the limit, and a value only on UPSERT.
func (l Limits) Validate(e *Event) error {
	if err := l.CheckKey(e.Key); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	switch e.Op {
	case OpUpsert, OpDelete, OpInvalidate:
		if e.Version == 0 {
			return fmt.Errorf("%w: key %q: %w", ErrInvalidEvent, e.Key, ErrZeroVersion)
		}
	case OpEvict:
		if e.Version != 0 {
			return fmt.Errorf("%w: key %q: an EVICT event carries no version, got %d", ErrInvalidEvent, e.Key, e.Version)
		}
	default:
		return fmt.Errorf("%w: key %q: unknown op %d", ErrInvalidEvent, e.Key, int8(e.Op))
	}
	if e.HasValue {
		if e.Op != OpUpsert {
			return fmt.Errorf("%w: key %q: a %s event cannot carry a value", ErrInvalidEvent, e.Key, e.Op)
		}
		if err := l.CheckValue(len(e.Value)); err != nil {
			return fmt.Errorf("%w: key %q: %w", ErrInvalidEvent, e.Key, err)
		}
	}
	return nil
}

// Encode returns the protobuf encoding of e (a cachewire.v1.ChangeEvent).
func Encode(e *Event) ([]byte, error) {
	return proto.Marshal(ToProto(e))
}

// ToProto converts e to its protobuf message.
func ToProto(e *Event) *pb.ChangeEvent {
	m := &pb.ChangeEvent{
		Key:     e.Key,
		Version: e.Version,
		Op:      pb.Op(e.Op),
		Source:  e.Source,
		Trace:   e.Trace,
	}
	if e.HasValue {
		m.Value = e.Value
		if m.Value == nil {
			m.Value = []byte{}
		}
	}
	if !e.CommittedAt.IsZero() {
		m.CommittedAt = timestamppb.New(e.CommittedAt)
	}
	return m
}

// Decode parses a ChangeEvent from raw and validates it under l. Every error wraps ErrInvalidEvent.
func Decode(raw []byte, l Limits) (Event, error) {
	e, err := decodeWire(raw)
	if errors.Is(err, ErrInvalidEvent) {
		return Event{}, err
	}
	if err != nil {
		return Event{}, fmt.Errorf("%w: not a ChangeEvent: %w", ErrInvalidEvent, err)
	}
	if err := l.Validate(&e); err != nil {
		return Event{}, err
	}
	return e, nil
}

// FromProto converts a protobuf message to an Event without validating it.
func FromProto(m *pb.ChangeEvent) Event {
	e := Event{
		Key:      m.GetKey(),
		Version:  m.GetVersion(),
		Op:       Op(m.GetOp()),
		Value:    m.Value,
		HasValue: m.Value != nil,
		Source:   m.GetSource(),
		Trace:    m.GetTrace(),
	}
	if m.CommittedAt != nil {
		e.CommittedAt = m.CommittedAt.AsTime()
	}
	return e
}
