package invalidation

// Review of the JSON and Debezium decoders (b4df94b, ffe1c84): each test failed on the code as it
// stood then, and names what should happen instead.

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
)

// A JSON string value that is not valid UTF-8 (raw bytes, or a lone surrogate escape) is
// silently rewritten to U+FFFD by encoding/json: the cache would hold bytes the producer never
// sent. It should be refused (ErrInvalidEvent).
func TestReviewJSONValueNotUTF8IsRefused(t *testing.T) {
	for name, raw := range map[string]string{
		"raw invalid byte":      "{\"key\":\"k\",\"version\":1,\"op\":\"UPSERT\",\"value\":\"caf\xe9\"}",
		"lone surrogate escape": `{"key":"k","version":1,"op":"UPSERT","value":"a\ud800b"}`,
	} {
		t.Run(name, func(t *testing.T) {
			e, err := DecodeJSON([]byte("k"), []byte(raw), Limits{})
			if err == nil {
				t.Fatalf("decoded value %q (%x), want ErrInvalidEvent: the producer's bytes were replaced by U+FFFD", e.Value, e.Value)
			}
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("err = %v, want ErrInvalidEvent", err)
			}
		})
	}
}

// A contentType header with a charset other than UTF-8 is read as JSON anyway (the parameter is
// cut off), so a Latin-1 "é" becomes U+FFFD in the cached value. A non-UTF-8 charset should be
// refused (or the text converted), never silently mangled.
func TestReviewContentTypeCharsetLatin1(t *testing.T) {
	m := kafka.Message{Topic: "t", Key: []byte("k"),
		Value:   []byte("{\"key\":\"k\",\"version\":1,\"op\":\"UPSERT\",\"value\":\"caf\xe9\"}"),
		Headers: []kafka.Header{{Key: "contentType", Value: []byte("application/json; charset=ISO-8859-1")}}}
	e, err := Formats{}.Decode(m, Limits{})
	if err == nil && string(e.Value) != "café" {
		t.Fatalf("decoded value %q, want refused (ErrInvalidEvent) or %q", e.Value, "café")
	}
	if err != nil && !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("err = %v, want ErrInvalidEvent", err)
	}
}

// Duplicate fields (also case variants, which encoding/json matches to the same field) are
// resolved last-wins, silently; parsers that keep the first (or reject) see another event. An
// ambiguous change event should be refused.
func TestReviewJSONDuplicateFieldsRefused(t *testing.T) {
	for name, raw := range map[string]string{
		"op twice":             `{"key":"k","version":9,"op":"DELETE","op":"UPSERT","value":"x"}`,
		"version twice":        `{"key":"k","version":9,"op":"DELETE","version":1}`,
		"Version as a variant": `{"key":"k","version":9,"op":"DELETE","Version":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			e, err := DecodeJSON([]byte("k"), []byte(raw), Limits{})
			if err == nil {
				t.Fatalf("decoded %s@%d from an event with duplicate fields, want ErrInvalidEvent", e.Op, e.Version)
			}
		})
	}
}

// d.More() is false when the next byte is } or ], so anything after the object that starts with
// one of them is accepted: {"...":...}}garbage decodes. Trailing data should be refused.
func TestReviewJSONTrailingDataRefused(t *testing.T) {
	for _, tail := range []string{"}", "]", `]{"key":"k","version":99,"op":"UPSERT"}`} {
		raw := `{"key":"k","version":1,"op":"DELETE"}` + tail
		if e, err := DecodeJSON([]byte("k"), []byte(raw), Limits{}); err == nil {
			t.Errorf("%s: decoded %+v, want ErrInvalidEvent (trailing data)", raw, e)
		}
	}
}

// With two contentType headers that disagree, the first recognized one wins. Kafka's Java
// client (Headers.lastHeader) and Spring's header mapper take the last; conflicting headers
// should either follow the last or be refused, not follow the first.
func TestReviewContentTypeConflictingHeaders(t *testing.T) {
	ev := Event{Key: "k", Version: 3, Op: OpUpsert, Value: []byte("v"), HasValue: true}
	pb, _ := Encode(&ev)
	m := kafka.Message{Topic: "t", Key: []byte("k"), Value: pb, Headers: []kafka.Header{
		{Key: "contentType", Value: []byte(`"application/json"`)},
		{Key: "contentType", Value: []byte("application/x-protobuf")}, // e.g. added later by an SMT
	}}
	e, err := Formats{}.Decode(m, Limits{})
	if err != nil || e.Version != 3 {
		t.Fatalf("Decode = %+v, %v; want the last contentType (protobuf) to decide", e, err)
	}
}

// PostgreSQL sends unchanged TOASTed columns of an UPDATE as Debezium's placeholder
// (unavailable.value.placeholder, "__debezium_unavailable_value" by default). The decoder caches
// the placeholder as the value (value=COLUMN) or inside the row (value=after): every node then
// serves it until the next change. Such an UPSERT must carry no value (evict only).
func TestReviewDebeziumToastPlaceholderNotCached(t *testing.T) {
	const upd = `{"before":null,"after":{"id":42,"bio":"__debezium_unavailable_value","version":8},"source":{"connector":"postgresql","lsn":5},"op":"u","ts_ms":1}`
	for _, value := range []string{"bio", "after"} {
		m := DebeziumMapping{Key: "user:{id}", Version: "after.version", Value: value}
		e, err := DecodeDebezium([]byte(dbzKeyPlain), []byte(upd), m, Limits{})
		if err != nil {
			t.Fatalf("value=%s: %v, want an UPSERT@8 without a value", value, err)
		}
		if e.HasValue && strings.Contains(string(e.Value), "__debezium_unavailable_value") {
			t.Errorf("value=%s: caches %q: Debezium's TOAST placeholder, not the column's value", value, e.Value)
		}
	}
}

// With schemas enabled the decoder ignores the schema: a NUMERIC primary key (Connect Decimal,
// which JsonConverter writes as base64 of the unscaled bytes) gives the cache key "user:AQ==" for
// id 1, which no reader ever asks for, so the row's caches are never invalidated; a NUMERIC value
// column is cached as base64 text. The schema says Decimal: decode it ("user:1") or refuse.
// With decimal.handling.mode=double the same id 42 arrives as 42.0 and the key is "user:42.0".
func TestReviewDebeziumDecimalFromSchema(t *testing.T) {
	const decField = `{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"0","connect.decimal.precision":"10"},"field":"id"}`
	key := `{"schema":{"type":"struct","fields":[` + decField + `],"optional":false,"name":"pg.public.users.Key"},"payload":{"id":"AQ=="}}`
	val := withSchema(`{"before":null,"after":{"id":"AQ==","price":"ALw=","version":7},"source":{"connector":"postgresql","lsn":9},"op":"u","ts_ms":1}`)
	t.Run("key", func(t *testing.T) {
		e, err := DecodeDebezium([]byte(key), []byte(val), DebeziumMapping{Key: "user:{id}", Version: "after.version"}, Limits{})
		if err == nil && e.Key != "user:1" {
			t.Fatalf("key %q, want %q or ErrInvalidEvent", e.Key, "user:1")
		}
	})
	t.Run("value column", func(t *testing.T) {
		// price NUMERIC(10,2) 1.88: unscaled 188 = 0x00BC, base64 "ALw="
		v := strings.Replace(val, `"fields":[]`, `"fields":[{"type":"struct","field":"after","fields":[{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"price"}]}]`, 1)
		e, err := DecodeDebezium([]byte(dbzKeyPlain), []byte(v), DebeziumMapping{Key: "user:{id}", Version: "after.version", Value: "price"}, Limits{})
		if err == nil && e.HasValue && string(e.Value) != "1.88" {
			t.Fatalf("value %q, want %q, no value, or ErrInvalidEvent", e.Value, "1.88")
		}
	})
	t.Run("key, decimal.handling.mode=double", func(t *testing.T) {
		// the same NUMERIC id 42 as JsonConverter writes a double: 42.0
		e, err := DecodeDebezium([]byte(`{"id":42.0}`), []byte(`{"after":{"id":42.0,"version":7},"op":"u"}`), DebeziumMapping{Key: "user:{id}", Version: "after.version"}, Limits{})
		if err == nil && e.Key != "user:42" {
			t.Fatalf("key %q, want %q or ErrInvalidEvent", e.Key, "user:42")
		}
	})
}

// A key template may use a column that is not in the record key (docs/producers.md: "else from
// the row"). When an UPDATE changes it, the event names only the new key: the old key
// ("user:a@x") is never invalidated and keeps serving the old row. The decoder should not yield
// a partial invalidation silently (refuse, or invalidate both keys).
func TestReviewDebeziumTemplateColumnChanged(t *testing.T) {
	const upd = `{"before":{"id":1,"email":"a@x","version":3},"after":{"id":1,"email":"b@x","version":4},"source":{"connector":"postgresql","lsn":7},"op":"u","ts_ms":1}`
	e, err := DecodeDebezium([]byte(`{"id":1}`), []byte(upd), DebeziumMapping{Key: "user:{email}", Version: "after.version"}, Limits{})
	if err == nil {
		t.Fatalf("decoded one event for %q@%d; the old key user:a@x is left stale", e.Key, e.Version)
	}
}

// A row larger than max_value_bytes with value=after (or value=COLUMN) makes the whole change
// invalid: it is dead-lettered and every node keeps serving the previous value. The change
// happened; it should still invalidate (an UPSERT without a value), only the value is too big.
func TestReviewDebeziumLargeRowStillInvalidates(t *testing.T) {
	upd := `{"after":{"id":42,"bio":"` + strings.Repeat("x", 100) + `","version":9},"source":{"connector":"postgresql"},"op":"u","ts_ms":1}`
	for _, value := range []string{"after", "bio"} {
		e, err := DecodeDebezium([]byte(dbzKeyPlain), []byte(upd), DebeziumMapping{Key: "user:{id}", Version: "after.version", Value: value}, Limits{MaxValueBytes: 50})
		if err != nil {
			t.Errorf("value=%s: %v; want UPSERT user:42@9 without a value (the change must still evict)", value, err)
			continue
		}
		if e.Key != "user:42" || e.Version != 9 || e.HasValue {
			t.Errorf("value=%s: got %+v", value, e)
		}
	}
}

// Debezium's envelope ts_ms is when the connector processed the change; source.ts_ms is when
// the database committed it. CommittedAt (the apply-latency metric) takes the former, hiding the
// database → connector lag.
func TestReviewDebeziumCommittedAtIsSourceTime(t *testing.T) {
	const upd = `{"after":{"id":42,"version":7},"source":{"connector":"postgresql","ts_ms":1795730000000},"op":"u","ts_ms":1795730060000}`
	e, err := DecodeDebezium([]byte(dbzKeyPlain), []byte(upd), DebeziumMapping{Key: "user:{id}", Version: "after.version"}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if want := time.UnixMilli(1795730000000); !e.CommittedAt.Equal(want) {
		t.Fatalf("CommittedAt %v, want source.ts_ms %v (the commit), not the connector's processing time", e.CommittedAt, want)
	}
}

// Option names are trimmed, values are not: "key = user:{id}" gives the template " user:{id}",
// every cache key starts with a space and no event ever matches a cached key; silently.
func TestReviewParseTopicFormatOptionValueSpaces(t *testing.T) {
	_, tf, err := ParseTopicFormat("t=debezium;key = user:{id};version=after.version")
	if err == nil && tf.Debezium.Key != "user:{id}" {
		t.Fatalf("key template %q, want %q (trimmed) or an error", tf.Debezium.Key, "user:{id}")
	}
}

// EncodeJSON documents that the value must be UTF-8 text but does not check: a binary value is
// silently encoded as U+FFFD, so the event that round-trips is not the one given. It should
// return an error.
func TestReviewEncodeJSONRefusesNonUTF8Value(t *testing.T) {
	in := Event{Key: "k", Version: 1, Op: OpUpsert, Value: []byte{0xff, 0x00, 0xfe}, HasValue: true}
	b, err := EncodeJSON(&in)
	if err != nil {
		return
	}
	out, derr := DecodeJSON([]byte("k"), b, Limits{})
	if derr == nil && string(out.Value) != string(in.Value) {
		t.Fatalf("EncodeJSON accepted a non-UTF-8 value (valid UTF-8: %v) and it round-trips as %x, not %x", utf8.Valid(in.Value), out.Value, in.Value)
	}
}
