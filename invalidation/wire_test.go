package invalidation

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// protoDecode is the decoder decodeWire replaced: the generated message, then FromProto and
// Timestamp.CheckValid.
func protoDecode(raw []byte) (Event, error) {
	var m pb.ChangeEvent
	if err := proto.Unmarshal(raw, &m); err != nil {
		return Event{}, err
	}
	if m.CommittedAt != nil {
		if err := m.CommittedAt.CheckValid(); err != nil {
			return Event{}, err
		}
	}
	return FromProto(&m), nil
}

func sameEvent(a, b Event) bool {
	return a.Key == b.Key && a.Version == b.Version && a.Op == b.Op && a.HasValue == b.HasValue &&
		bytes.Equal(a.Value, b.Value) && (a.Value == nil) == (b.Value == nil) && a.CommittedAt.Equal(b.CommittedAt) &&
		a.CommittedAt.IsZero() == b.CommittedAt.IsZero() && a.Source == b.Source &&
		(len(a.Trace) == 0 && len(b.Trace) == 0 || reflect.DeepEqual(a.Trace, b.Trace))
}

// A nil and an empty Trace mean the same (protobuf-go makes the map for a field 7 of the wrong
// wire type, then skips it).

// checkWire fails t unless decodeWire and the generated decoder agree on raw: both refuse it,
// or both return the same event.
func checkWire(t *testing.T, raw []byte) {
	t.Helper()
	got, gerr := decodeWire(raw)
	want, werr := protoDecode(raw)
	if (gerr != nil) != (werr != nil) {
		t.Fatalf("%x: decodeWire err %v, proto.Unmarshal err %v", raw, gerr, werr)
	}
	if gerr == nil && !sameEvent(got, want) {
		t.Fatalf("%x:\ndecodeWire %+v\nproto      %+v", raw, got, want)
	}
}

// TestDecodeWireMatchesProto: random events, and hand-made records with unknown fields, fields
// of the wrong wire type, repeated fields and merged timestamps, decode alike.
func TestDecodeWireMatchesProto(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		e := Event{Key: randString(rng), Version: rng.Uint64N(1 << 40), Op: Op(rng.IntN(6))}
		if rng.IntN(2) == 0 {
			e.Value, e.HasValue = []byte(randString(rng)), true
		}
		if rng.IntN(2) == 0 {
			e.CommittedAt = time.Unix(rng.Int64N(1<<34)-1<<33, rng.Int64N(1e9))
		}
		if rng.IntN(3) == 0 {
			e.Source = randString(rng)
		}
		if rng.IntN(3) == 0 {
			e.Trace = map[string]string{"traceparent": randString(rng), randString(rng): ""}
		}
		raw, err := Encode(&e)
		if err != nil {
			t.Fatal(err)
		}
		checkWire(t, raw)
	}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "k")
	b = protowire.AppendTag(b, 2, protowire.BytesType) // version with the wrong wire type
	b = protowire.AppendBytes(b, []byte("x"))
	b = protowire.AppendTag(b, 99, protowire.Fixed64Type) // unknown
	b = protowire.AppendFixed64(b, 7)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, 5)
	b = protowire.AppendTag(b, 2, protowire.VarintType) // repeated: the last wins
	b = protowire.AppendVarint(b, 6)
	ts := func(num protowire.Number, v uint64) []byte {
		var t []byte
		t = protowire.AppendTag(t, num, protowire.VarintType)
		return protowire.AppendVarint(t, v)
	}
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	b = protowire.AppendBytes(b, ts(1, 1700000000))
	b = protowire.AppendTag(b, 5, protowire.BytesType) // merged into the first
	b = protowire.AppendBytes(b, ts(2, 42))
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendBytes(b, nil) // an empty value is still a value
	checkWire(t, b)
	if e, err := decodeWire(b); err != nil || e.Version != 6 || !e.HasValue || e.CommittedAt.Nanosecond() != 42 {
		t.Fatalf("%+v %v", e, err)
	}
	for _, raw := range [][]byte{
		protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "\xff"),                    // invalid UTF-8 key
		append(protowire.AppendTag(nil, 5, protowire.BytesType), protowire.AppendBytes(nil, ts(2, 2e9))...), // nanos out of range
		{0x0a, 0x05, 'a'}, // truncated
		{0x00},            // field number 0
	} {
		checkWire(t, raw)
		if _, err := Decode(raw, Limits{}); !errors.Is(err, ErrInvalidEvent) {
			t.Fatalf("Decode(%x) = %v, want ErrInvalidEvent", raw, err)
		}
	}
}

func randString(rng *rand.Rand) string {
	b := make([]byte, rng.IntN(20))
	for i := range b {
		b[i] = byte('a' + rng.IntN(26))
	}
	return string(b)
}

// FuzzDecodeWire: on any input, decodeWire agrees with proto.Unmarshal.
func FuzzDecodeWire(f *testing.F) {
	for _, e := range []Event{
		{Key: "user:1", Version: 3, Op: OpUpsert, Value: []byte("v"), HasValue: true, CommittedAt: time.Unix(1700000000, 5), Source: "w", Trace: map[string]string{"traceparent": "00-x"}},
		{Key: "k", Op: OpEvict},
	} {
		raw, _ := Encode(&e)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkWire(t, raw) })
}
