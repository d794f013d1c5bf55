package invalidation

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Timestamp bounds, as google.protobuf.Timestamp defines them (0001-01-01 to 9999-12-31).
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// decodeWire parses a cachewire.v1.ChangeEvent straight into an Event, without building the
// generated message first (the L1 subscriber decodes every record of every partition). It
// accepts exactly what proto.Unmarshal accepts, with the same result (FuzzDecodeWire checks
// both): unknown fields and known fields of another wire type are skipped, a repeated scalar
// field keeps its last value, a repeated committed_at merges, strings must be UTF-8. The
// committed_at range is checked as Timestamp.CheckValid does.
func decodeWire(b []byte) (Event, error) {
	var e Event
	var secs, nanos int64
	hasTime := false
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return Event{}, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType, num == 6 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Event{}, protowire.ParseError(n)
			}
			if !utf8.Valid(v) {
				return Event{}, errInvalidUTF8
			}
			if num == 1 {
				e.Key = string(v)
			} else {
				e.Source = string(v)
			}
			b = b[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Event{}, protowire.ParseError(n)
			}
			e.Version, b = v, b[n:]
		case num == 3 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Event{}, protowire.ParseError(n)
			}
			e.Op, b = Op(int32(v)), b[n:]
		case num == 4 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Event{}, protowire.ParseError(n)
			}
			e.Value, e.HasValue, b = append(make([]byte, 0, len(v)), v...), true, b[n:]
		case num == 5 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Event{}, protowire.ParseError(n)
			}
			if err := decodeTimestamp(v, &secs, &nanos); err != nil {
				return Event{}, err
			}
			hasTime, b = true, b[n:]
		case num == 7 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Event{}, protowire.ParseError(n)
			}
			k, val, err := decodeMapEntry(v)
			if err != nil {
				return Event{}, err
			}
			if e.Trace == nil {
				e.Trace = map[string]string{}
			}
			e.Trace[k], b = val, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Event{}, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	if hasTime {
		if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos >= 1e9 {
			return e, fmt.Errorf("%w: key %q: committed_at: invalid timestamp (seconds %d, nanos %d)", ErrInvalidEvent, e.Key, secs, nanos)
		}
		e.CommittedAt = time.Unix(secs, nanos).UTC()
	}
	return e, nil
}

// consumeTag is protowire.ConsumeTag that also refuses field numbers above the largest valid
// one (2^29-1), as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -2 // protowire's errCodeFieldNumber: "invalid field number"
	}
	return num, typ, n
}

// decodeTimestamp merges a google.protobuf.Timestamp into secs and nanos.
func decodeTimestamp(b []byte, secs, nanos *int64) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if num == 1 {
				*secs = int64(v)
			} else {
				*nanos = int64(int32(v))
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// decodeMapEntry parses one entry of a map<string, string>.
func decodeMapEntry(b []byte) (k, v string, err error) {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			s, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", "", protowire.ParseError(n)
			}
			if !utf8.Valid(s) {
				return "", "", errInvalidUTF8
			}
			if num == 1 {
				k = string(s)
			} else {
				v = string(s)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
	}
	return k, v, nil
}
