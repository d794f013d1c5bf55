package invalidation

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
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
		if strings.ContainsAny(rest[i+1:i+j], "{") {
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
	env, decimals, err := unwrapDebezium(raw)
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
	var keyDecimals map[string]int
	if len(recordKey) > 0 {
		if k, d, err := unwrapKey(recordKey); err == nil {
			keyFields, keyDecimals = k, d
		}
	}
	if e.Key, err = fillKey(m.Key, keyFields, keyDecimals, row, decimals); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if env.Op == "u" && env.Before != nil {
		// A template field from the row that the update changed: the old key would stay cached.
		if old, err := fillKey(m.Key, keyFields, keyDecimals, env.Before, decimals); err == nil && old != e.Key {
			return Event{}, fmt.Errorf("%w: key template %q: the update moves the row from %q to %q, and the old key would stay cached; build keys from the record key's fields (the primary key)",
				ErrInvalidEvent, m.Key, old, e.Key)
		}
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
			if e.Version == math.MaxUint64 {
				return Event{}, fmt.Errorf("%w: key %q: the deleted row's version is the largest there is; a delete needs a higher one", ErrInvalidEvent, e.Key)
			}
			e.Version++ // the delete comes after the row's last version
		}
	}
	if err != nil {
		return Event{}, fmt.Errorf("%w: key %q: version %s: %w", ErrInvalidEvent, e.Key, m.Version, err)
	}
	if e.Op == OpUpsert && m.Value != "" {
		if e.Value, err = debeziumValue(env.After, decimals, m.Value); err != nil {
			return Event{}, fmt.Errorf("%w: key %q: value %s: %w", ErrInvalidEvent, e.Key, m.Value, err)
		}
		e.HasValue = e.Value != nil
		if e.HasValue && l.CheckValue(len(e.Value)) != nil {
			e.Value, e.HasValue = nil, false // too large to travel: the change still evicts
		}
	}
	e.CommittedAt = debeziumTime(env)
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

// unwrapDebezium reads an envelope with or without JsonConverter's schema wrapper, and the
// Decimal columns its schema names (of the after/before row).
func unwrapDebezium(raw []byte) (debeziumEnvelope, map[string]int, error) {
	var env debeziumEnvelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return env, nil, err
	}
	if len(env.Payload) > 0 && env.Op == "" {
		if string(env.Payload) == "null" {
			return env, nil, errors.New("null payload")
		}
		var inner debeziumEnvelope
		if err := json.Unmarshal(env.Payload, &inner); err != nil {
			return env, nil, fmt.Errorf("payload: %w", err)
		}
		decimals, err := rowDecimals(env.Schema)
		return inner, decimals, err
	}
	return env, nil, nil
}

// connectSchema is the part of a JsonConverter schema that says which fields are Decimals.
type connectSchema struct {
	Field      string            `json:"field"`
	Name       string            `json:"name"`
	Parameters map[string]string `json:"parameters"`
	Fields     []connectSchema   `json:"fields"`
}

const connectDecimal = "org.apache.kafka.connect.data.Decimal"

// decimalFields maps each Decimal field of a struct schema to its scale.
func decimalFields(fields []connectSchema) (map[string]int, error) {
	m := map[string]int{}
	for _, f := range fields {
		if f.Name != connectDecimal {
			continue
		}
		scale, err := strconv.Atoi(f.Parameters["scale"])
		if err != nil || scale < 0 || scale > 1000 {
			return nil, fmt.Errorf("schema: Decimal field %q has scale %q", f.Field, f.Parameters["scale"])
		}
		m[f.Field] = scale
	}
	return m, nil
}

// rowDecimals reads the Decimal fields of an envelope schema's after (else before) struct.
func rowDecimals(raw json.RawMessage) (map[string]int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s connectSchema
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	for _, name := range []string{"after", "before"} {
		for _, f := range s.Fields {
			if f.Field == name {
				return decimalFields(f.Fields)
			}
		}
	}
	return nil, nil
}

// decimalText turns a Connect Decimal (base64 of the big-endian two's-complement unscaled value)
// into its decimal text.
func decimalText(v json.RawMessage, scale int) (string, error) {
	var b64 string
	if err := json.Unmarshal(v, &b64); err != nil {
		return "", fmt.Errorf("a Decimal is a base64 string: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) == 0 {
		return "", fmt.Errorf("a Decimal is base64 of its unscaled bytes, got %q", b64)
	}
	n := new(big.Int).SetBytes(raw)
	if raw[0]&0x80 != 0 { // negative: two's complement
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(raw))))
	}
	return new(big.Rat).SetFrac(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)).FloatString(scale), nil
}

// unwrapKey reads a record key's fields, with or without the schema wrapper, and its Decimal
// fields.
func unwrapKey(raw []byte) (map[string]json.RawMessage, map[string]int, error) {
	var k map[string]json.RawMessage
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, nil, err
	}
	if p, ok := k["payload"]; ok && len(k) <= 2 {
		if sch, hasSchema := k["schema"]; hasSchema || len(k) == 1 {
			var inner map[string]json.RawMessage
			if err := json.Unmarshal(p, &inner); err == nil {
				var s connectSchema
				var decimals map[string]int
				if hasSchema && json.Unmarshal(sch, &s) == nil {
					decimals, _ = decimalFields(s.Fields)
				}
				return inner, decimals, nil
			}
		}
	}
	return k, nil, nil
}

// debeziumTime is when the database committed the change (source.ts_ms), else when the
// connector read it (ts_ms).
func debeziumTime(env debeziumEnvelope) time.Time {
	var ms int64
	if v, ok := env.Source["ts_ms"]; ok && json.Unmarshal(v, &ms) == nil && ms > 0 {
		return time.UnixMilli(ms)
	}
	if env.TsMs != nil {
		return time.UnixMilli(*env.TsMs)
	}
	return time.Time{}
}

// fillKey fills a key template's {field}s from the key's fields, else from row, with Decimals
// decoded and whole numbers written without a fraction (42, whether sent as 42 or 42.0).
func fillKey(tmpl string, key map[string]json.RawMessage, keyDecimals map[string]int, row map[string]json.RawMessage, rowDecimals map[string]int) (string, error) {
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
		decimals := keyDecimals
		if !ok {
			v, ok = row[name]
			decimals = rowDecimals
		}
		if !ok || string(v) == "null" {
			return "", fmt.Errorf("key template %q: no field %q in the record key or the row", tmpl, name)
		}
		var s string
		var err error
		if scale, dec := decimals[name]; dec {
			s, err = decimalText(v, scale)
		} else {
			s, err = scalarText(v)
		}
		if err != nil {
			return "", fmt.Errorf("key template %q: field %q: %w", tmpl, name, err)
		}
		b.WriteString(s)
		rest = rest[i+j+1:]
	}
}

// scalarText is a JSON string's text, a boolean's literal, or a number's shortest decimal text
// (a whole number without a fraction or exponent).
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
	case 't', 'f':
		return string(v), nil
	}
	lit := string(v)
	if !strings.ContainsAny(lit, ".eE") {
		return lit, nil
	}
	r, ok := new(big.Rat).SetString(lit)
	if !ok {
		return "", fmt.Errorf("%q is not a number", lit)
	}
	if r.IsInt() {
		return r.Num().String(), nil
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'f', -1, 64), nil
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

// toastPlaceholder is what Debezium's PostgreSQL connector sends for an unchanged TOASTed column
// (unavailable.value.placeholder): not the column's value.
const toastPlaceholder = `"__debezium_unavailable_value"`

// debeziumValue is the value an UPSERT carries: the whole row, or one column (Decimals decoded).
// A row or column that holds Debezium's TOAST placeholder gives no value: the event only evicts.
func debeziumValue(after map[string]json.RawMessage, decimals map[string]int, what string) ([]byte, error) {
	if what == "after" {
		row := make(map[string]json.RawMessage, len(after))
		for k, v := range after {
			if string(v) == toastPlaceholder {
				return nil, nil
			}
			if scale, dec := decimals[k]; dec && string(v) != "null" {
				d, err := decimalText(v, scale)
				if err != nil {
					return nil, fmt.Errorf("column %q: %w", k, err)
				}
				v = json.RawMessage(d)
			}
			row[k] = v
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(row); err != nil { // compact, keys sorted
			return nil, err
		}
		return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
	}
	v, ok := after[what]
	if !ok {
		return nil, fmt.Errorf("no column %q in the row", what)
	}
	switch {
	case string(v) == "null", string(v) == toastPlaceholder:
		return nil, nil
	case len(v) > 0 && v[0] == '"':
		if scale, dec := decimals[what]; dec {
			d, err := decimalText(v, scale)
			return []byte(d), err
		}
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
