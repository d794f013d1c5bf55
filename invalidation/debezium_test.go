package invalidation

import (
	"errors"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

// Records as Debezium's PostgreSQL connector writes them through JsonConverter.
const (
	dbzKeyPlain  = `{"id":42}`
	dbzKeySchema = `{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}],"optional":false,"name":"pg.public.users.Key"},"payload":{"id":42}}`
	dbzUpdate    = `{"before":null,"after":{"id":42,"name":"Ada","version":7},"source":{"version":"3.3.1.Final","connector":"postgresql","name":"pg","ts_ms":1795730000000,"db":"app","schema":"public","table":"users","txId":771,"lsn":24023128},"op":"u","ts_ms":1795730000123,"transaction":null}`
	dbzDelete    = `{"before":{"id":42,"name":"Ada","version":7},"after":null,"source":{"connector":"postgresql","lsn":24023300},"op":"d","ts_ms":1795730000456}`
	dbzSnapshot  = `{"before":null,"after":{"id":42,"name":"Ada","version":7},"source":{"connector":"postgresql","lsn":100,"snapshot":"true"},"op":"r","ts_ms":1}`
)

func withSchema(payload string) string {
	return `{"schema":{"type":"struct","fields":[],"optional":false,"name":"pg.public.users.Envelope"},"payload":` + payload + `}`
}

func TestDecodeDebezium(t *testing.T) {
	byColumn := DebeziumMapping{Key: "user:{id}", Version: "after.version", Value: "after"}
	byLSN := DebeziumMapping{Key: "user:{id}", Version: "source.lsn", Value: "name"}
	cases := []struct {
		name, key, value string
		m                DebeziumMapping
		want             Event
	}{
		{"update, version column, row as value", dbzKeyPlain, dbzUpdate, byColumn,
			Event{Key: "user:42", Version: 7, Op: OpUpsert, Value: []byte(`{"id":42,"name":"Ada","version":7}`), HasValue: true}},
		{"update, schemas enabled", dbzKeySchema, withSchema(dbzUpdate), byColumn,
			Event{Key: "user:42", Version: 7, Op: OpUpsert, Value: []byte(`{"id":42,"name":"Ada","version":7}`), HasValue: true}},
		{"update, lsn, one column", dbzKeyPlain, dbzUpdate, byLSN,
			Event{Key: "user:42", Version: 24023128, Op: OpUpsert, Value: []byte("Ada"), HasValue: true}},
		{"delete, version column: the row's last version + 1", dbzKeyPlain, dbzDelete, byColumn,
			Event{Key: "user:42", Version: 8, Op: OpDelete}},
		{"delete, lsn, schemas enabled", dbzKeySchema, withSchema(dbzDelete), byLSN,
			Event{Key: "user:42", Version: 24023300, Op: OpDelete}},
		{"snapshot read", dbzKeyPlain, dbzSnapshot, byColumn,
			Event{Key: "user:42", Version: 7, Op: OpUpsert, Value: []byte(`{"id":42,"name":"Ada","version":7}`), HasValue: true}},
		{"no value configured: evict only", dbzKeyPlain, dbzUpdate, DebeziumMapping{Key: "u:{id}:{name}", Version: "after.version"},
			Event{Key: "u:42:Ada", Version: 7, Op: OpUpsert}},
		{"key field from the row when the record key lacks it", `{"other":1}`, dbzUpdate, byColumn,
			Event{Key: "user:42", Version: 7, Op: OpUpsert, Value: []byte(`{"id":42,"name":"Ada","version":7}`), HasValue: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeDebezium([]byte(tc.key), []byte(tc.value), tc.m, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Key != tc.want.Key || got.Version != tc.want.Version || got.Op != tc.want.Op || string(got.Value) != string(tc.want.Value) || got.HasValue != tc.want.HasValue {
				t.Fatalf("got %+v %q, want %+v %q", got, got.Value, tc.want, tc.want.Value)
			}
			if got.CommittedAt.IsZero() || got.Source != "debezium-postgresql" {
				t.Fatalf("committed_at %v, source %q", got.CommittedAt, got.Source)
			}
		})
	}
}

func TestDecodeDebeziumRefusesBadRecords(t *testing.T) {
	m := DebeziumMapping{Key: "user:{id}", Version: "after.version", Value: "after"}
	if _, err := DecodeDebezium([]byte(dbzKeyPlain), nil, m, Limits{}); !errors.Is(err, ErrTombstone) || errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("tombstone: %v, want ErrTombstone (not invalid)", err)
	}
	cases := []struct{ name, value, want string }{
		{"not JSON", `{"op":`, "not a Debezium change event"},
		{"no op", `{"after":{"id":1,"version":1}}`, "without an op"},
		{"truncate", `{"op":"t","source":{}}`, `op "t"`},
		{"update without after", `{"op":"u","before":{"id":1}}`, "without its row"},
		{"delete without before", `{"op":"d","after":null}`, "REPLICA IDENTITY FULL"},
		{"key field missing", `{"op":"u","after":{"name":"x","version":1}}`, `no field "id"`},
		{"key field an object", `{"op":"u","after":{"id":{"a":1},"version":1}}`, "not a scalar"},
		{"version missing", `{"op":"u","after":{"id":1}}`, "missing"},
		{"version not a number", `{"op":"u","after":{"id":1,"version":"x"}}`, "not a whole number"},
		{"version zero", `{"op":"u","after":{"id":1,"version":0}}`, "greater than zero"},
		{"null payload", `{"schema":{},"payload":null}`, "null payload"},
		{"delete without the version column (REPLICA IDENTITY DEFAULT)", `{"op":"d","before":{"id":1}}`, "REPLICA IDENTITY FULL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeDebezium(nil, []byte(tc.value), m, Limits{})
			if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidEvent naming %q", err, tc.want)
			}
		})
	}
}

func TestParseTopicFormat(t *testing.T) {
	topic, tf, err := ParseTopicFormat("pg.public.users=debezium;key=user:{id};version=source.lsn;value=name")
	if err != nil || topic != "pg.public.users" || tf.Format != FormatDebezium ||
		tf.Debezium != (DebeziumMapping{Key: "user:{id}", Version: "source.lsn", Value: "name"}) {
		t.Fatalf("got %q %+v %v", topic, tf, err)
	}
	if topic, tf, err := ParseTopicFormat("t=json"); err != nil || topic != "t" || tf.Format != FormatJSON {
		t.Fatalf("t=json: %q %+v %v", topic, tf, err)
	}
	for spec, want := range map[string]string{
		"json":                                  "not TOPIC=FORMAT",
		"t=avro":                                `unknown format "avro"`,
		"t=json;key=x":                          "takes no options",
		"t=debezium;version=after.v":            "key template",
		"t=debezium;key=user;version=after.v":   "placeholders",
		"t=debezium;key=user:{id":               "want {field}",
		"t=debezium;key=user:{id}":              "version",
		"t=debezium;key=user:{id};version=lsn":  "after.COLUMN or source.FIELD",
		"t=debezium;key=user:{id};colour=blue":  "unknown debezium option",
		"t=debezium;key=user:{id};version":      "not NAME=VALUE",
		"t=debezium;key=user:{id}};version=a.b": "unbalanced",
	} {
		if _, _, err := ParseTopicFormat(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseTopicFormat(%q) = %v, want an error naming %q", spec, err, want)
		}
	}
}

// TestDebeziumTopicIgnoresContentType: a debezium topic's records are Debezium events whatever
// their headers say.
func TestDebeziumTopicIgnoresContentType(t *testing.T) {
	f := Formats{"pg": {Format: FormatDebezium, Debezium: DebeziumMapping{Key: "user:{id}", Version: "after.version"}}}
	e, err := f.Decode(kafka.Message{Topic: "pg", Key: []byte(dbzKeyPlain), Value: []byte(dbzUpdate),
		Headers: []kafka.Header{{Key: "contentType", Value: []byte("application/json")}}}, Limits{})
	if err != nil || e.Key != "user:42" || e.Version != 7 {
		t.Fatalf("Decode = %+v, %v", e, err)
	}
}

// FuzzDecodeDebezium: any record either decodes to a valid event, is a tombstone, or fails with
// ErrInvalidEvent; never a panic.
func FuzzDecodeDebezium(f *testing.F) {
	for _, s := range []string{dbzUpdate, dbzDelete, dbzSnapshot, withSchema(dbzUpdate), withSchema(dbzDelete),
		`{"op":"u","after":{"id":"a b","version":"9"}}`, `{"payload":{"op":"c","after":{"id":1,"version":1}}}`, `{}`, `null`, `[]`} {
		f.Add([]byte(dbzKeyPlain), []byte(s))
	}
	f.Add([]byte(dbzKeySchema), []byte(withSchema(dbzUpdate)))
	f.Fuzz(func(t *testing.T, key, raw []byte) {
		for _, m := range []DebeziumMapping{{Key: "user:{id}", Version: "after.version", Value: "after"}, {Key: "u:{id}", Version: "source.lsn", Value: "name"}} {
			e, err := DecodeDebezium(key, raw, m, Limits{})
			if err != nil {
				if !errors.Is(err, ErrInvalidEvent) && !errors.Is(err, ErrTombstone) {
					t.Fatalf("error wraps neither ErrInvalidEvent nor ErrTombstone: %v", err)
				}
				continue
			}
			if err := (Limits{}).Validate(&e); err != nil {
				t.Fatalf("decoded an invalid event: %v", err)
			}
		}
	})
}
