package writer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

var (
	bucketRecords = []byte("records")
	bucketOutbox  = []byte("outbox")
	bucketMeta    = []byte("meta")
	keySeq        = []byte("seq")
	// bucketDead keeps, under their outbox sequence number, the raw bytes of outbox rows that
	// cannot be published; bucketDeadReason keeps why, under the same key.
	bucketDead       = []byte("outbox_dead")
	bucketDeadReason = []byte("outbox_dead_reason")
)

// record is what the store holds for a key: a value, or the version of its deletion.
type record struct {
	Version     uint64
	Deleted     bool
	Value       []byte
	CommittedAt time.Time
}

// Record encoding: version (8 bytes big-endian), committed_at unix nanos (8), deleted flag (1), value.
func encodeRecord(r record) []byte {
	b := make([]byte, 17+len(r.Value))
	binary.BigEndian.PutUint64(b, r.Version)
	binary.BigEndian.PutUint64(b[8:], uint64(r.CommittedAt.UnixNano()))
	if r.Deleted {
		b[16] = 1
	}
	copy(b[17:], r.Value)
	return b
}

func decodeRecord(b []byte) (record, error) {
	if len(b) < 17 {
		return record{}, fmt.Errorf("writer: corrupt record of %d bytes", len(b))
	}
	return record{
		Version:     binary.BigEndian.Uint64(b),
		CommittedAt: time.Unix(0, int64(binary.BigEndian.Uint64(b[8:]))),
		Deleted:     b[16] == 1,
		Value:       append([]byte(nil), b[17:]...),
	}, nil
}

func seqKey(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// store is the system of record: records, the outbox and the commit sequence in one bbolt file.
// Each write commits its record and its outbox row in one transaction.
type store struct {
	db *bolt.DB
}

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("writer: %s is locked by another process", path)
		}
		return nil, fmt.Errorf("writer: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRecords, bucketOutbox, bucketMeta, bucketDead, bucketDeadReason} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("writer: init %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// write is one Put or Delete waiting for the group commit.
type write struct {
	key     string
	value   []byte
	deleted bool
	client  string            // the caller, when the server identifies callers: stamped into the event's source
	trace   map[string]string // the write's trace context, carried by its event
	// results
	version     uint64
	committedAt time.Time
	err         error
	done        chan struct{}
}

// commit applies writes in one transaction, in order: each gets the next commit sequence number
// as its version, its record, and an outbox row holding the event to publish. eventValueMax is
// the largest value an UPSERT event carries; larger ones travel as INVALIDATE.
func (s *store) commit(ws []*write, source string, eventValueMax int) error {
	now := time.Now()
	return s.db.Update(func(tx *bolt.Tx) error {
		recs, out, meta := tx.Bucket(bucketRecords), tx.Bucket(bucketOutbox), tx.Bucket(bucketMeta)
		seq := uint64(0)
		if b := meta.Get(keySeq); b != nil {
			seq = binary.BigEndian.Uint64(b)
		}
		for _, w := range ws {
			seq++
			w.version, w.committedAt = seq, now
			if err := recs.Put([]byte(w.key), encodeRecord(record{Version: seq, Deleted: w.deleted, Value: w.value, CommittedAt: now})); err != nil {
				return err
			}
			e := invalidation.Event{Key: w.key, Version: seq, Op: invalidation.OpUpsert, CommittedAt: now, Source: source, Trace: w.trace}
			if w.client != "" {
				e.Source = source + "/" + w.client
			}
			switch {
			case w.deleted:
				e.Op = invalidation.OpDelete
			case len(w.value) <= eventValueMax:
				e.Value, e.HasValue = w.value, true
			default:
				e.Op = invalidation.OpInvalidate
			}
			raw, err := invalidation.Encode(&e)
			if err != nil {
				return err
			}
			if err := out.Put(seqKey(seq), raw); err != nil {
				return err
			}
		}
		return meta.Put(keySeq, seqKey(seq))
	})
}

func (s *store) get(key string) (record, bool, error) {
	var r record
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords).Get([]byte(key))
		if b == nil {
			return nil
		}
		var err error
		r, err = decodeRecord(b)
		found = err == nil
		return err
	})
	return r, found, err
}

// outboxRow is one outbox row as stored: its commit sequence number and the encoded ChangeEvent.
type outboxRow struct {
	seq uint64
	raw []byte
}

// deadRow is an outbox row that cannot be published, and why.
type deadRow struct {
	outboxRow
	key    string // the event's key, when the row decodes far enough to say
	reason string
}

// pending returns up to limit outbox rows in commit order, undecoded: deciding what a row holds
// is the relay's job, so that one bad row cannot fail the read of every row behind it.
func (s *store) pending(limit int) ([]outboxRow, error) {
	var rows []outboxRow
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.First(); k != nil && len(rows) < limit; k, v = c.Next() {
			rows = append(rows, outboxRow{seq: binary.BigEndian.Uint64(k), raw: append([]byte(nil), v...)})
		}
		return nil
	})
	return rows, err
}

// bury moves rows from the outbox to the outbox_dead bucket, with their reasons, in one
// transaction: a row is in exactly one of the two at any time.
func (s *store) bury(rows []deadRow) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		out, dead, why := tx.Bucket(bucketOutbox), tx.Bucket(bucketDead), tx.Bucket(bucketDeadReason)
		for _, r := range rows {
			k := seqKey(r.seq)
			if err := out.Delete(k); err != nil {
				return err
			}
			if err := dead.Put(k, r.raw); err != nil {
				return err
			}
			if err := why.Put(k, []byte(r.reason)); err != nil {
				return err
			}
		}
		return nil
	})
}

// dead returns up to limit rows of the outbox_dead bucket, oldest first.
func (s *store) dead(limit int) ([]deadRow, error) {
	var rows []deadRow
	err := s.db.View(func(tx *bolt.Tx) error {
		why := tx.Bucket(bucketDeadReason)
		c := tx.Bucket(bucketDead).Cursor()
		for k, v := c.First(); k != nil && len(rows) < limit; k, v = c.Next() {
			raw := append([]byte(nil), v...)
			rows = append(rows, deadRow{outboxRow: outboxRow{seq: binary.BigEndian.Uint64(k), raw: raw},
				key: rowKey(raw), reason: string(why.Get(k))})
		}
		return nil
	})
	return rows, err
}

// unbury deletes rows from the outbox_dead bucket once the dead-letter topic holds them.
func (s *store) unbury(seqs []uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		dead, why := tx.Bucket(bucketDead), tx.Bucket(bucketDeadReason)
		for _, q := range seqs {
			if err := dead.Delete(seqKey(q)); err != nil {
				return err
			}
			if err := why.Delete(seqKey(q)); err != nil {
				return err
			}
		}
		return nil
	})
}

// prepare turns an outbox row into the event to publish under limits (the publisher's). A row
// that is not a valid ChangeEvent cannot be published at all: prepare returns an error naming
// why. An UPSERT whose value is larger than limits.MaxValueBytes (a row committed under a larger
// EventValueMax) is published as INVALIDATE, as EventValueMax says; downgraded reports that.
func prepare(raw []byte, limits invalidation.Limits) (e invalidation.Event, downgraded bool, err error) {
	e, err = invalidation.Decode(raw, invalidation.Limits{MaxKeyBytes: limits.MaxKeyBytes, MaxValueBytes: math.MaxInt})
	if err != nil {
		return invalidation.Event{}, false, err
	}
	if e.HasValue && len(e.Value) > limits.MaxValueBytes {
		e = asInvalidate(e)
		downgraded = true
	}
	return e, downgraded, nil
}

// asInvalidate returns e without its value: an INVALIDATE at the same version.
func asInvalidate(e invalidation.Event) invalidation.Event {
	e.Op, e.Value, e.HasValue = invalidation.OpInvalidate, nil, false
	return e
}

// rowKey returns the key of an encoded ChangeEvent, or "" if it does not decode.
func rowKey(raw []byte) string {
	var m pb.ChangeEvent
	if proto.Unmarshal(raw, &m) != nil {
		return ""
	}
	return m.GetKey()
}

// ack deletes published outbox rows.
func (s *store) ack(seqs []uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOutbox)
		for _, q := range seqs {
			if err := out.Delete(seqKey(q)); err != nil {
				return err
			}
		}
		return nil
	})
}

// depth counts outbox rows and dead rows, and seq returns the last commit sequence number.
func (s *store) depth() (n, dead int, seq uint64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketOutbox).Stats().KeyN
		dead = tx.Bucket(bucketDead).Stats().KeyN
		if b := tx.Bucket(bucketMeta).Get(keySeq); b != nil {
			seq = binary.BigEndian.Uint64(b)
		}
		return nil
	})
	return n, dead, seq, err
}
