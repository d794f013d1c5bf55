package invalidation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DebeziumMapping turns Debezium change events (JsonConverter, schemas enabled or not) of one
// topic into cache events.
type DebeziumMapping struct {
	// Key is the cache key template: each {field} is filled from the record key's fields, else
	// from the row (after; before for a delete). Required, e.g. "user:{id}".
	Key string
	// Version says where an event's version comes from: "after.COLUMN" (a version column the
	// application bumps on every write; a delete gets before.COLUMN + 1) or "source.FIELD" (the
	// source position, e.g. "source.lsn" for PostgreSQL). Required.
	Version string
	// Value is what an UPSERT carries: "after" (the row as compact JSON), a column name (its
	// value: a string's bytes, else its JSON text), or "" (no value: the event only evicts).
	Value string
}

// Validate reports whether m is complete and well-formed.
func (m DebeziumMapping) Validate() error {
	if m.Key == "" || !strings.Contains(m.Key, "{") {
		return fmt.Errorf("invalidation: debezium: key template %q: want one with {field} placeholders, e.g. user:{id}", m.Key)
	}
	if _, err := templateFields(m.Key); err != nil {
		return err
	}
	where, field, ok := strings.Cut(m.Version, ".")
	if !ok || field == "" || (where != "after" && where != "source") {
		return fmt.Errorf("invalidation: debezium: version %q: want after.COLUMN or source.FIELD (source.lsn for PostgreSQL)", m.Version)
	}
	return nil
}

// templateFields returns the {field} names of a key template.
func templateFields(tmpl string) ([]string, error) {
	var fields []string
	rest := tmpl
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			if strings.IndexByte(rest, '}') >= 0 {
				return nil, fmt.Errorf("invalidation: debezium: key template %q: unbalanced }", tmpl)
			}
			return fields, nil
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 || j == 1 {
			return nil, fmt.Errorf("invalidation: debezium: key template %q: want {field}", tmpl)
		}
		fields = append(fields, rest[i+1:i+j])
		rest = rest[i+j+1:]
	}
}

// debeziumEnvelope is a change event's payload (schemas disabled), or its "payload" (enabled).
type debeziumEnvelope struct {
	Before  map[string]json.RawMessage `json:"before"`
	After   map[string]json.RawMessage `json:"after"`
	Source  map[string]json.RawMessage `json:"source"`
	Op      string                     `json:"op"`
	TsMs    *int64                     `json:"ts_ms"`
	Payload json.RawMessage            `json:"payload"`
	Schema  json.RawMessage            `json:"schema"`
}

// ErrTombstone is returned by DecodeDebezium for a Kafka tombstone (a record with no value, which
// Debezium writes after a delete for log compaction): there is nothing to apply, and nothing
// wrong.
var ErrTombstone = errors.New("invalidation: debezium tombstone")

// DecodeDebezium turns one Debezium record (key and value as JsonConverter writes them) into an
// event under m and validates it under l. c, u and r become UPSERT, d DELETE. A tombstone gives
// ErrTombstone; every other error wraps ErrInvalidEvent.
func DecodeDebezium(recordKey, raw []byte, m DebeziumMapping, l Limits) (Event, error) {
	if raw == nil {
		return Event{}, ErrTombstone
	}
	env, err := unwrapDebezium(raw)
	if err != nil {
		return Event{}, fmt.Errorf("%w: not a Debezium change event: %w", ErrInvalidEvent, err)
	}
	var e Event
	var row map[string]json.RawMessage // the row the key and value come from
	switch env.Op {
	case "c", "u", "r":
		e.Op, row = OpUpsert, env.After
	case "d":
		e.Op, row = OpDelete, env.Before
	case "":
		return Event{}, fmt.Errorf("%w: Debezium change event without an op", ErrInvalidEvent)
	default:
		return Event{}, fmt.Errorf("%w: Debezium op %q (want c, u, r or d)", ErrInvalidEvent, env.Op)
	}
	if row == nil {
		return Event{}, fmt.Errorf("%w: Debezium %q event without its row (before for d, after otherwise; for deletes the table needs REPLICA IDENTITY FULL or the key fields in the record key)", ErrInvalidEvent, env.Op)
	}
	keyFields := map[string]json.RawMessage{}
	if len(recordKey) > 0 {
		if k, err := unwrapKey(recordKey); err == nil {
			keyFields = k
		}
	}
	if e.Key, err = fillKey(m.Key, keyFields, row); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	where, field, _ := strings.Cut(m.Version, ".")
	switch where {
	case "source":
		e.Version, err = jsonUint(env.Source[field])
	default:
		v, ok := row[field]
		if !ok && e.Op == OpDelete {
			return Event{}, fmt.Errorf("%w: key %q: the delete's before row has no %q: give the table REPLICA IDENTITY FULL, so that Debezium sends the whole old row", ErrInvalidEvent, e.Key, field)
		}
		e.Version, err = jsonUint(v)
		if err == nil && e.Op == OpDelete {
			e.Version++ // the delete comes after the row's last version
		}
	}
	if err != nil {
		return Event{}, fmt.Errorf("%w: key %q: version %s: %w", ErrInvalidEvent, e.Key, m.Version, err)
	}
	if e.Op == OpUpsert && m.Value != "" {
		if e.Value, err = debeziumValue(env.After, m.Value); err != nil {
			return Event{}, fmt.Errorf("%w: key %q: value %s: %w", ErrInvalidEvent, e.Key, m.Value, err)
		}
		e.HasValue = e.Value != nil
	}
	if env.TsMs != nil {
		e.CommittedAt = time.UnixMilli(*env.TsMs)
	}
	if src, ok := env.Source["connector"]; ok {
		var s string
		if json.Unmarshal(src, &s) == nil {
			e.Source = "debezium-" + s
		}
	}
	if err := l.Validate(&e); err != nil {
		return Event{}, err
	}
	return e, nil
}

// unwrapDebezium reads an envelope with or without JsonConverter's schema wrapper.
func unwrapDebezium(raw []byte) (debeziumEnvelope, error) {
	var env debeziumEnvelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return env, err
	}
	if len(env.Payload) > 0 && env.Op == "" {
		if string(env.Payload) == "null" {
			return env, errors.New("null payload")
		}
		var inner debeziumEnvelope
		if err := json.Unmarshal(env.Payload, &inner); err != nil {
			return env, fmt.Errorf("payload: %w", err)
		}
		return inner, nil
	}
	return env, nil
}

// unwrapKey reads a record key's fields, with or without the schema wrapper.
func unwrapKey(raw []byte) (map[string]json.RawMessage, error) {
	var k map[string]json.RawMessage
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, err
	}
	if p, ok := k["payload"]; ok && len(k) <= 2 {
		if _, hasSchema := k["schema"]; hasSchema || len(k) == 1 {
			var inner map[string]json.RawMessage
			if err := json.Unmarshal(p, &inner); err == nil {
				return inner, nil
			}
		}
	}
	return k, nil
}

// fillKey fills a key template's {field}s from the key's fields, else from row.
func fillKey(tmpl string, key, row map[string]json.RawMessage) (string, error) {
	var b strings.Builder
	rest := tmpl
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("key template %q: want {field}", tmpl)
		}
		b.WriteString(rest[:i])
		name := rest[i+1 : i+j]
		v, ok := key[name]
		if !ok {
			v, ok = row[name]
		}
		if !ok || string(v) == "null" {
			return "", fmt.Errorf("key template %q: no field %q in the record key or the row", tmpl, name)
		}
		s, err := scalarText(v)
		if err != nil {
			return "", fmt.Errorf("key template %q: field %q: %w", tmpl, name, err)
		}
		b.WriteString(s)
		rest = rest[i+j+1:]
	}
}

// scalarText is a JSON string's text, or a number's or boolean's literal.
func scalarText(v json.RawMessage) (string, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "", errors.New("empty")
	}
	switch v[0] {
	case '"':
		var s string
		err := json.Unmarshal(v, &s)
		return s, err
	case '{', '[':
		return "", errors.New("not a scalar")
	}
	return string(v), nil
}

// jsonUint reads a whole number given as a JSON number or a decimal string.
func jsonUint(v json.RawMessage) (uint64, error) {
	if len(v) == 0 || string(v) == "null" {
		return 0, errors.New("missing")
	}
	s, err := scalarText(v)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	return n, nil
}

// debeziumValue is the value an UPSERT carries: the whole row, or one column.
func debeziumValue(after map[string]json.RawMessage, what string) ([]byte, error) {
	if what == "after" {
		return json.Marshal(after) // compact, keys sorted
	}
	v, ok := after[what]
	if !ok {
		return nil, fmt.Errorf("no column %q in the row", what)
	}
	if string(v) == "null" {
		return nil, nil
	}
	if len(v) > 0 && v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
