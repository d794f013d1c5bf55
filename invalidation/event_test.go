package invalidation

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := Event{
		Key: "user:1", Version: 42, Op: OpUpsert, Value: []byte("v"), HasValue: true,
		CommittedAt: time.Unix(1700000000, 5).UTC(), Source: "writer-1", Trace: map[string]string{"traceparent": "x"},
	}
	raw, err := Encode(&in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(raw, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if out.Key != in.Key || out.Version != in.Version || out.Op != in.Op || string(out.Value) != "v" ||
		!out.HasValue || !out.CommittedAt.Equal(in.CommittedAt) || out.Source != in.Source || out.Trace["traceparent"] != "x" {
		t.Fatalf("round trip changed the event: %+v -> %+v", in, out)
	}
}

func TestEmptyValueSurvivesRoundTrip(t *testing.T) {
	raw, err := Encode(&Event{Key: "k", Version: 1, Op: OpUpsert, HasValue: true})
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(raw, Limits{})
	if err != nil || !out.HasValue || len(out.Value) != 0 {
		t.Fatalf("Decode = %+v, %v; want an UPSERT carrying an empty value", out, err)
	}
	raw, _ = Encode(&Event{Key: "k", Version: 1, Op: OpInvalidate})
	if out, _ := Decode(raw, Limits{}); out.HasValue {
		t.Fatalf("an INVALIDATE decoded with a value: %+v", out)
	}
}

func TestDecodeRejects(t *testing.T) {
	limits := Limits{MaxKeyBytes: 8, MaxValueBytes: 4}
	enc := func(e Event) []byte {
		raw, err := Encode(&e)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{"garbage bytes", []byte{0xff, 0xff, 0xff}, "not a ChangeEvent"},
		{"empty key", enc(Event{Version: 1, Op: OpDelete}), "key is empty"},
		{"key over the limit", enc(Event{Key: "123456789", Version: 1, Op: OpDelete}), "max_key_bytes is 8"},
		// field 1 (key), wire type 2, length 1, byte 0xff: proto3 strings must be UTF-8.
		{"key not UTF-8", []byte{0x0a, 0x01, 0xff, 0x10, 0x01, 0x18, 0x02}, "not a ChangeEvent"},
		{"zero version", enc(Event{Key: "k", Op: OpDelete}), "version must be greater than zero"},
		{"unspecified op", enc(Event{Key: "k", Version: 1}), "unknown op 0"},
		{"unknown op", enc(Event{Key: "k", Version: 1, Op: 9}), "unknown op 9"},
		{"value over the limit", enc(Event{Key: "k", Version: 1, Op: OpUpsert, Value: []byte("12345"), HasValue: true}), "max_value_bytes is 4"},
		{"value on a delete", enc(Event{Key: "k", Version: 1, Op: OpDelete, Value: []byte("x"), HasValue: true}), "cannot carry a value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.raw, limits)
			if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode error = %v, want ErrInvalidEvent mentioning %q", err, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, e := range []Event{
		{Key: "k", Version: 1, Op: OpUpsert, Value: []byte("v"), HasValue: true, Source: "s"},
		{Key: "k", Version: 2, Op: OpDelete, CommittedAt: time.Unix(1, 0)},
		{Key: "user:1", Version: 1 << 63, Op: OpInvalidate, Trace: map[string]string{"a": "b"}},
	} {
		raw, _ := Encode(&e)
		f.Add(raw)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, raw []byte) {
		limits := Limits{MaxKeyBytes: 64, MaxValueBytes: 128}
		e, err := Decode(raw, limits)
		if err != nil {
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("error does not wrap ErrInvalidEvent: %v", err)
			}
			return
		}
		if err := limits.Validate(&e); err != nil {
			t.Fatalf("Decode accepted an event that Validate rejects: %v", err)
		}
		again, err := Encode(&e)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(again, limits)
		if err != nil || back.Key != e.Key || back.Version != e.Version || back.Op != e.Op || back.HasValue != e.HasValue {
			t.Fatalf("re-encoding changed the event: %+v -> %+v, %v", e, back, err)
		}
	})
}

// FuzzCheckKey: request validation never panics, accepts exactly the non-empty valid UTF-8 keys
// within the limit, and names the limit when it refuses a long key.
func FuzzCheckKey(f *testing.F) {
	for _, s := range []string{"", "k", "user:1", strings.Repeat("x", 64), strings.Repeat("x", 65), "\xff", "é"} {
		f.Add(s)
	}
	limits := Limits{MaxKeyBytes: 64}
	f.Fuzz(func(t *testing.T, key string) {
		err := limits.CheckKey(key)
		want := key != "" && len(key) <= 64 && utf8.ValidString(key)
		if (err == nil) != want {
			t.Fatalf("CheckKey(%q) = %v, want ok=%v", key, err, want)
		}
		if len(key) > 64 && !strings.Contains(fmt.Sprint(err), "max_key_bytes is 64") {
			t.Fatalf("CheckKey of %d bytes: %v does not name the limit", len(key), err)
		}
	})
}
