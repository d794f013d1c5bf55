package invalidation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
)

// Format is how the records of a topic encode change events.
type Format int8

// Formats a topic can be read as.
const (
	// FormatProtobuf: a cachewire.v1.ChangeEvent (proto/cachewire/v1/event.proto). The default.
	FormatProtobuf Format = iota
	// FormatJSON: the JSON form of a change event (DecodeJSON), what Spring Cloud Stream's Kafka
	// binder sends by default.
	FormatJSON
	// FormatDebezium: Debezium change events (DecodeDebezium), under the topic's DebeziumMapping.
	FormatDebezium
)

func (f Format) String() string {
	switch f {
	case FormatProtobuf:
		return "protobuf"
	case FormatJSON:
		return "json"
	case FormatDebezium:
		return "debezium"
	}
	return fmt.Sprintf("format(%d)", int8(f))
}

// ParseFormat parses "protobuf" (or "proto"), "json" and "debezium".
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "protobuf", "proto":
		return FormatProtobuf, nil
	case "json":
		return FormatJSON, nil
	case "debezium":
		return FormatDebezium, nil
	}
	return 0, fmt.Errorf("invalidation: unknown format %q (want protobuf, json or debezium)", s)
}

// TopicFormat is how one topic's records are decoded.
type TopicFormat struct {
	Format Format
	// Debezium maps a debezium topic's change events to cache events.
	Debezium DebeziumMapping
}

// ParseTopicFormat parses TOPIC=FORMAT, and for debezium its mapping after semicolons:
//
//	users.events=json
//	pg.public.users=debezium;key=user:{id};version=after.version;value=after
func ParseTopicFormat(spec string) (string, TopicFormat, error) {
	topic, rest, ok := strings.Cut(spec, "=")
	topic = strings.TrimSpace(topic)
	if !ok || topic == "" {
		return "", TopicFormat{}, fmt.Errorf("invalidation: %q is not TOPIC=FORMAT", spec)
	}
	parts := strings.Split(rest, ";")
	f, err := ParseFormat(parts[0])
	if err != nil {
		return "", TopicFormat{}, fmt.Errorf("%s: %w", topic, err)
	}
	tf := TopicFormat{Format: f}
	for _, opt := range parts[1:] {
		k, v, ok := strings.Cut(opt, "=")
		v = strings.TrimSpace(v)
		switch k = strings.TrimSpace(k); {
		case f != FormatDebezium:
			return "", TopicFormat{}, fmt.Errorf("%s: %s takes no options (%q)", topic, f, opt)
		case !ok:
			return "", TopicFormat{}, fmt.Errorf("%s: option %q is not NAME=VALUE", topic, opt)
		case k == "key":
			tf.Debezium.Key = v
		case k == "version":
			tf.Debezium.Version = v
		case k == "value":
			tf.Debezium.Value = v
		default:
			return "", TopicFormat{}, fmt.Errorf("%s: unknown debezium option %q (want key, version or value)", topic, k)
		}
	}
	if f == FormatDebezium {
		if err := tf.Debezium.Validate(); err != nil {
			return "", TopicFormat{}, fmt.Errorf("%s: %w", topic, err)
		}
	}
	return topic, tf, nil
}

// Formats says how each topic's records are decoded; a topic not in it is protobuf. On a
// protobuf or JSON topic, a record's contentType (or content-type) header overrides the format:
// application/json means JSON, application/x-protobuf (or application/protobuf) protobuf. A
// debezium topic's records are always Debezium change events.
type Formats map[string]TopicFormat

// Decode decodes one record under f and validates it under l. An event that carries no trace
// context takes the record's W3C traceparent and tracestate headers, when it has them (Spring
// Cloud Stream and Debezium producers set headers, not the event's field). A Debezium tombstone gives
// ErrTombstone (skip it); every other error wraps ErrInvalidEvent.
func (f Formats) Decode(m kafka.Message, l Limits) (Event, error) {
	e, err := f.decode(m, l)
	if err == nil && len(e.Trace) == 0 && len(m.Headers) > 0 {
		e.Trace = traceFromHeaders(m.Headers)
	}
	return e, err
}

func (f Formats) decode(m kafka.Message, l Limits) (Event, error) {
	tf := f[m.Topic]
	if tf.Format == FormatDebezium {
		return DecodeDebezium(m.Key, m.Value, tf.Debezium, l)
	}
	format := tf.Format
	if h, ok, err := contentType(m.Headers); err != nil {
		return Event{}, err
	} else if ok {
		format = h
	}
	if format == FormatJSON {
		return DecodeJSON(m.Key, m.Value, l)
	}
	return Decode(m.Value, l)
}

// contentType reads the format a record's contentType header names, if it names one; with
// several, the last (as Kafka's Java client and Spring read headers). Spring's Kafka binder
// writes header values as JSON strings ("\"application/json\""): quotes are stripped. A charset
// other than UTF-8 is an error: JSON change events are UTF-8.
func contentType(headers []kafka.Header) (Format, bool, error) {
	var f Format
	var found bool
	var err error
	for _, h := range headers {
		if !strings.EqualFold(h.Key, "contentType") && !strings.EqualFold(h.Key, "content-type") {
			continue
		}
		v := strings.ToLower(strings.Trim(strings.TrimSpace(string(h.Value)), `"`))
		mt, params, _ := strings.Cut(v, ";") // application/json;charset=UTF-8
		switch strings.TrimSpace(mt) {
		case "application/json":
			f, found, err = FormatJSON, true, nil
			for _, p := range strings.Split(params, ";") {
				if k, cs, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.TrimSpace(k) == "charset" {
					if cs = strings.Trim(strings.TrimSpace(cs), `"`); cs != "utf-8" && cs != "utf8" {
						err = fmt.Errorf("%w: contentType %q: JSON change events are UTF-8", ErrInvalidEvent, h.Value)
					}
				}
			}
		case "application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf":
			f, found, err = FormatProtobuf, true, nil
		}
	}
	return f, found, err
}

// jsonEvent is the JSON form of a change event. Unknown fields are ignored.
type jsonEvent struct {
	Key         *string           `json:"key"`
	Version     json.RawMessage   `json:"version"`
	Op          string            `json:"op"`
	Value       json.RawMessage   `json:"value"`
	CommittedAt string            `json:"committed_at"`
	Source      string            `json:"source"`
	Trace       map[string]string `json:"trace"`
}

// DecodeJSON parses the JSON form of a change event and validates it under l. recordKey is the
// Kafka record's key, which the event's key must equal. Every error wraps ErrInvalidEvent.
//
//		{"key": "user:42", "version": 7, "op": "UPSERT", "value": "Ada",
//		 "committed_at": "2026-11-26T10:00:00Z", "source": "users-service", "trace": {"traceparent": "00-..."}}
//
//	  - key: a string, equal to the record key;
//	  - version: a number or a decimal string, above 0 (absent or 0 for EVICT);
//	  - op: UPSERT, DELETE, INVALIDATE or EVICT, with or without the OP_ prefix, any case;
//	  - value: a JSON string becomes its UTF-8 bytes, any other JSON value its compact JSON text;
//	    absent or null means the event carries no value;
//	  - committed_at (RFC 3339), source and trace (an object of strings) are optional.
func DecodeJSON(recordKey, raw []byte, l Limits) (Event, error) {
	j, err := parseJSONEvent(raw)
	if err != nil {
		return Event{}, fmt.Errorf("%w: not a JSON change event: %w", ErrInvalidEvent, err)
	}
	if j.Key == nil {
		return Event{}, fmt.Errorf("%w: JSON change event without a key", ErrInvalidEvent)
	}
	e := Event{Key: *j.Key, Source: j.Source, Trace: j.Trace}
	if string(recordKey) != e.Key {
		return Event{}, fmt.Errorf("%w: key %q differs from the record key %q (the record key is the cache key, which partitions the topic)", ErrInvalidEvent, e.Key, recordKey)
	}
	op := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(j.Op)), "OP_")
	if !isASCII(j.Op) {
		op = ""
	}
	switch op {
	case "UPSERT":
		e.Op = OpUpsert
	case "DELETE":
		e.Op = OpDelete
	case "INVALIDATE":
		e.Op = OpInvalidate
	case "EVICT":
		e.Op = OpEvict
	default:
		return Event{}, fmt.Errorf("%w: key %q: op %q (want UPSERT, DELETE, INVALIDATE or EVICT)", ErrInvalidEvent, e.Key, j.Op)
	}
	v, err := jsonVersion(j.Version)
	if err != nil {
		return Event{}, fmt.Errorf("%w: key %q: version: %w", ErrInvalidEvent, e.Key, err)
	}
	e.Version = v
	if len(j.Value) > 0 && string(j.Value) != "null" {
		e.HasValue = true
		if j.Value[0] == '"' {
			s, err := jsonText(j.Value)
			if err != nil {
				return Event{}, fmt.Errorf("%w: key %q: value: %w", ErrInvalidEvent, e.Key, err)
			}
			e.Value = []byte(s)
		} else {
			var b bytes.Buffer
			if err := json.Compact(&b, j.Value); err != nil {
				return Event{}, fmt.Errorf("%w: key %q: value: %w", ErrInvalidEvent, e.Key, err)
			}
			e.Value = b.Bytes()
		}
	}
	if j.CommittedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, j.CommittedAt)
		if err != nil {
			return Event{}, fmt.Errorf("%w: key %q: committed_at %q is not RFC 3339", ErrInvalidEvent, e.Key, j.CommittedAt)
		}
		e.CommittedAt = t
	}
	if err := l.Validate(&e); err != nil {
		return Event{}, err
	}
	return e, nil
}

// jsonFields are the fields of a JSON change event; any other field is ignored.
var jsonFields = []string{"key", "version", "op", "value", "committed_at", "source", "trace"}

// parseJSONEvent reads one JSON object, strictly: UTF-8, nothing after it, each known field at
// most once and spelled exactly (encoding/json would take "Version" for "version", and the last
// of two "op"s: other parsers read such events otherwise).
func parseJSONEvent(raw []byte) (jsonEvent, error) {
	var j jsonEvent
	if !utf8.Valid(raw) {
		return j, errors.New("not valid UTF-8")
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return j, fmt.Errorf("want a JSON object (%v)", err)
	}
	seen := map[string]bool{}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return j, err
		}
		name, _ := t.(string)
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return j, fmt.Errorf("field %q: %w", name, err)
		}
		for _, f := range jsonFields {
			if strings.EqualFold(name, f) && name != f {
				return j, fmt.Errorf("field %q: spelled %q", name, f)
			}
		}
		if seen[name] {
			return j, fmt.Errorf("field %q appears twice", name)
		}
		seen[name] = true
		var err2 error
		switch name {
		case "key":
			if string(v) == "null" {
				continue
			}
			var k string
			if k, err2 = jsonText(v); err2 == nil {
				j.Key = &k
			}
		case "version":
			j.Version = v
		case "op":
			if string(v) != "null" {
				j.Op, err2 = jsonText(v)
			}
		case "value":
			j.Value = v
		case "committed_at":
			if string(v) != "null" {
				j.CommittedAt, err2 = jsonText(v)
			}
		case "source":
			if string(v) != "null" {
				j.Source, err2 = jsonText(v)
			}
		case "trace":
			err2 = json.Unmarshal(v, &j.Trace)
		}
		if err2 != nil {
			return j, fmt.Errorf("field %q: %w", name, err2)
		}
	}
	if _, err := d.Token(); err != nil { // the closing brace
		return j, err
	}
	if _, err := d.Token(); err != io.EOF {
		return j, errors.New("data after the JSON object")
	}
	return j, nil
}

// jsonText unquotes a JSON string, refusing escapes that are not Unicode text (a lone
// surrogate, which encoding/json would turn into U+FFFD).
func jsonText(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", err
	}
	if strings.Count(s, "\uFFFD") > replacementChars(v) {
		return "", errors.New(`a \u escape that is not Unicode text (a lone surrogate)`)
	}
	return s, nil
}

// replacementChars counts the U+FFFD a JSON string literal spells: as the character itself, or
// as the escape \uFFFD (any case).
func replacementChars(lit []byte) int {
	n := bytes.Count(lit, []byte("\uFFFD"))
	for i := 0; i+1 < len(lit); i++ {
		if lit[i] != '\\' {
			continue
		}
		if lit[i+1] == 'u' && i+6 <= len(lit) && strings.EqualFold(string(lit[i+2:i+6]), "fffd") {
			n++
		}
		i++ // the escaped character
	}
	return n
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// jsonVersion reads a version given as a JSON number or a decimal string; absent or null is 0.
func jsonVersion(raw json.RawMessage) (uint64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, errors.New("want a whole number from 1 to 18446744073709551615, as a JSON number or a decimal string, got " + strconv.Quote(string(raw)))
	}
	return v, nil
}

// EncodeJSON returns the JSON form of e (the value as a JSON string, which must be UTF-8 text).
// For tests and tools; producers in other languages write the same shape.
func EncodeJSON(e *Event) ([]byte, error) {
	if e.HasValue && !utf8.Valid(e.Value) {
		return nil, fmt.Errorf("invalidation: key %q: the JSON form carries text values only; this value is not UTF-8 (use the protobuf form)", e.Key)
	}
	j := map[string]any{"key": e.Key, "op": e.Op.String()}
	if e.Version != 0 {
		j["version"] = e.Version
	}
	if e.HasValue {
		j["value"] = string(e.Value)
	}
	if !e.CommittedAt.IsZero() {
		j["committed_at"] = e.CommittedAt.UTC().Format(time.RFC3339Nano)
	}
	if e.Source != "" {
		j["source"] = e.Source
	}
	if len(e.Trace) > 0 {
		j["trace"] = e.Trace
	}
	return json.Marshal(j)
}

// Trace context headers (W3C Trace Context), on the records Publisher writes and read by Decode.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// TraceHeaders are the record headers that carry trace (an event's Trace): traceparent and
// tracestate, when set.
func TraceHeaders(trace map[string]string) []kafka.Header {
	var hs []kafka.Header
	for _, k := range [...]string{HeaderTraceparent, HeaderTracestate} {
		if v := trace[k]; v != "" {
			hs = append(hs, kafka.Header{Key: k, Value: []byte(v)})
		}
	}
	return hs
}

// maxTraceHeader bounds a trace context header taken from a record (W3C: traceparent is 55
// bytes, tracestate at most 32 members of 256).
const maxTraceHeader = 8192

// traceFromHeaders reads the trace context headers of a record, or returns nil without them. A
// header that is not UTF-8 or is too long is not trace context: it is left out (the event is
// applied all the same).
func traceFromHeaders(hs []kafka.Header) map[string]string {
	var t map[string]string
	for _, h := range hs {
		if (h.Key == HeaderTraceparent || h.Key == HeaderTracestate) && len(h.Value) > 0 && len(h.Value) <= maxTraceHeader && utf8.Valid(h.Value) {
			if t == nil {
				t = make(map[string]string, 2)
			}
			t[h.Key] = string(h.Value)
		}
	}
	return t
}
