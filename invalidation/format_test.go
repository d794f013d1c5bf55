package invalidation

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func TestDecodeJSON(t *testing.T) {
	ts := time.Date(2026, 11, 26, 10, 0, 0, 123000000, time.UTC)
	cases := []struct {
		name, raw string
		want      Event
	}{
		{"number version, string value", `{"key":"user:1","version":7,"op":"UPSERT","value":"Ada"}`,
			Event{Key: "user:1", Version: 7, Op: OpUpsert, Value: []byte("Ada"), HasValue: true}},
		{"string version, OP_ prefix, lower case", `{"key":"user:1","version":"18446744073709551615","op":"op_delete"}`,
			Event{Key: "user:1", Version: 18446744073709551615, Op: OpDelete}},
		{"object value becomes compact JSON", `{"key":"user:1","version":2,"op":"UPSERT","value":{ "name" : "Ada", "tags":[1, 2] }}`,
			Event{Key: "user:1", Version: 2, Op: OpUpsert, Value: []byte(`{"name":"Ada","tags":[1,2]}`), HasValue: true}},
		{"number value", `{"key":"user:1","version":2,"op":"UPSERT","value":42}`,
			Event{Key: "user:1", Version: 2, Op: OpUpsert, Value: []byte("42"), HasValue: true}},
		{"null value is no value", `{"key":"user:1","version":2,"op":"UPSERT","value":null}`,
			Event{Key: "user:1", Version: 2, Op: OpUpsert}},
		{"empty string value", `{"key":"user:1","version":2,"op":"UPSERT","value":""}`,
			Event{Key: "user:1", Version: 2, Op: OpUpsert, Value: []byte{}, HasValue: true}},
		{"optional fields, unknown fields ignored",
			`{"key":"user:1","version":3,"op":"INVALIDATE","committed_at":"2026-11-26T10:00:00.123Z","source":"svc","trace":{"traceparent":"00-1"},"extra":[1,{"a":2}]}`,
			Event{Key: "user:1", Version: 3, Op: OpInvalidate, CommittedAt: ts, Source: "svc", Trace: map[string]string{"traceparent": "00-1"}}},
		{"EVICT without a version", `{"key":"user:1","op":"EVICT"}`, Event{Key: "user:1", Op: OpEvict}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeJSON([]byte("user:1"), []byte(tc.raw), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Key != tc.want.Key || got.Version != tc.want.Version || got.Op != tc.want.Op || string(got.Value) != string(tc.want.Value) ||
				got.HasValue != tc.want.HasValue || !got.CommittedAt.Equal(tc.want.CommittedAt) || got.Source != tc.want.Source ||
				len(got.Trace) != len(tc.want.Trace) || got.Trace["traceparent"] != tc.want.Trace["traceparent"] {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeJSONRefusesBadEvents(t *testing.T) {
	cases := []struct{ name, recordKey, raw, want string }{
		{"not JSON", "k", `{"key":`, "not a JSON change event"},
		{"two values", "k", `{"key":"k","version":1,"op":"DELETE"} {}`, "data after the JSON object"},
		{"not an object", "k", `[1]`, "not a JSON change event"},
		{"no key", "k", `{"version":1,"op":"DELETE"}`, "without a key"},
		{"key differs from the record key", "other", `{"key":"k","version":1,"op":"DELETE"}`, "differs from the record key"},
		{"empty key", "", `{"key":"","version":1,"op":"DELETE"}`, "key is empty"},
		{"unknown op", "k", `{"key":"k","version":1,"op":"UPSRET"}`, `op "UPSRET"`},
		{"no op", "k", `{"key":"k","version":1}`, `op ""`},
		{"zero version", "k", `{"key":"k","version":0,"op":"DELETE"}`, "greater than zero"},
		{"no version", "k", `{"key":"k","op":"UPSERT"}`, "greater than zero"},
		{"negative version", "k", `{"key":"k","version":-1,"op":"DELETE"}`, "whole number"},
		{"fractional version", "k", `{"key":"k","version":1.5,"op":"DELETE"}`, "whole number"},
		{"version too large", "k", `{"key":"k","version":18446744073709551616,"op":"DELETE"}`, "whole number"},
		{"version not a number", "k", `{"key":"k","version":"seven","op":"DELETE"}`, "whole number"},
		{"value on DELETE", "k", `{"key":"k","version":1,"op":"DELETE","value":"x"}`, "cannot carry a value"},
		{"bad committed_at", "k", `{"key":"k","version":1,"op":"DELETE","committed_at":"yesterday"}`, "RFC 3339"},
		{"trace not strings", "k", `{"key":"k","version":1,"op":"DELETE","trace":{"a":1}}`, "not a JSON change event"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeJSON([]byte(tc.recordKey), []byte(tc.raw), Limits{})
			if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidEvent naming %q", err, tc.want)
			}
		})
	}
	if _, err := DecodeJSON([]byte("k"), []byte(`{"key":"k","version":1,"op":"UPSERT","value":"`+strings.Repeat("x", 11)+`"}`), Limits{MaxValueBytes: 10}); !errors.Is(err, ErrValueTooLarge) {
		t.Fatalf("value over the limit: %v", err)
	}
}

// TestFormatsChooseByHeaderThenTopic: a contentType header (as Spring's binder writes it, a
// JSON string, or with a charset) wins over the topic's format; without one, the topic decides.
func TestFormatsChooseByHeaderThenTopic(t *testing.T) {
	e := Event{Key: "k", Version: 3, Op: OpUpsert, Value: []byte("v"), HasValue: true}
	pb, _ := Encode(&e)
	js, _ := EncodeJSON(&e)
	f := Formats{"json-topic": {Format: FormatJSON}}
	cases := []struct {
		name, topic string
		headers     []kafka.Header
		value       []byte
	}{
		{"protobuf topic, no header", "proto-topic", nil, pb},
		{"json topic, no header", "json-topic", nil, js},
		{"protobuf topic, Spring's quoted contentType", "proto-topic", []kafka.Header{{Key: "contentType", Value: []byte(`"application/json"`)}}, js},
		{"protobuf topic, content-type with charset", "proto-topic", []kafka.Header{{Key: "content-type", Value: []byte("application/json; charset=UTF-8")}}, js},
		{"json topic, protobuf header", "json-topic", []kafka.Header{{Key: "contentType", Value: []byte("application/x-protobuf")}}, pb},
		{"json topic, an unrelated content type", "json-topic", []kafka.Header{{Key: "contentType", Value: []byte("text/plain")}}, js},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.Decode(kafka.Message{Topic: tc.topic, Key: []byte("k"), Value: tc.value, Headers: tc.headers}, Limits{})
			if err != nil || got.Key != "k" || got.Version != 3 || string(got.Value) != "v" {
				t.Fatalf("Decode = %+v, %v", got, err)
			}
		})
	}
	if _, err := f.Decode(kafka.Message{Topic: "proto-topic", Key: []byte("k"), Value: js}, Limits{}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("JSON on a protobuf topic without a header: %v, want invalid", err)
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"json": FormatJSON, "JSON": FormatJSON, "protobuf": FormatProtobuf, "proto": FormatProtobuf} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseFormat("avro"); err == nil || !strings.Contains(err.Error(), "avro") {
		t.Errorf("ParseFormat(avro): %v", err)
	}
}

// FuzzDecodeJSON: any input either decodes to an event that passes Validate, or fails with
// ErrInvalidEvent; never a panic.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"key":"k","version":7,"op":"UPSERT","value":"Ada"}`,
		`{"key":"k","version":"7","op":"OP_DELETE"}`,
		`{"key":"k","version":2,"op":"UPSERT","value":{"a":[1,2,{"b":null}]}}`,
		`{"key":"k","op":"EVICT","trace":{"t":"x"},"committed_at":"2026-01-01T00:00:00Z"}`,
		`{"key":"k","version":1e3,"op":"INVALIDATE"}`,
		`{"key":"\u00e9","version":1,"op":"DELETE"}`,
		`null`, `{}`, `[]`, `"k"`,
	} {
		f.Add([]byte("k"), []byte(s))
	}
	f.Fuzz(func(t *testing.T, key, raw []byte) {
		e, err := DecodeJSON(key, raw, Limits{})
		if err != nil {
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("error does not wrap ErrInvalidEvent: %v", err)
			}
			return
		}
		if err := (Limits{}).Validate(&e); err != nil {
			t.Fatalf("decoded an invalid event: %v", err)
		}
		if e.Key != string(key) {
			t.Fatalf("key %q decoded from record key %q", e.Key, key)
		}
	})
}
