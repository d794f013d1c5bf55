// Package redistier is cachewire's shared Redis tier (L2).
//
// Entries are stored under a configurable key prefix as one string each: the version as 20
// zero-padded decimal digits (so Lua compares uint64 versions exactly, as strings), one kind byte
// (v value, n cached "not found", t tombstone; upper case is the format from before epochs, read
// as a version floor only), the epoch it was written in, and the value.
// Fills and event applies run as
// atomic Lua scripts (EVALSHA, loading the script when Redis does not have it) that enforce the
// same rules as the in-process tier, invalidation.AcceptFill and invalidation.Decide, so two
// nodes racing a slow fill against an invalidation can never put an old value back.
//
// Epochs. Redis can lose what it held: a restart without persistence, FLUSHALL, a restart that
// reloaded an older snapshot, a failover to a replica that missed the newest writes. A lost
// tombstone would let a slow fill of an old version back in, and a lagging replica would serve
// old values. So the tier keeps an epoch key beside its entries (one per hash slot in cluster
// mode) holding a random epoch and the run_id of the server process that started it. The epoch
// starts anew when the key is missing (the data was lost with it) and, on every new connection,
// when the key was stamped by another server process (a restart or a failover). Every entry
// records its epoch. A write (fill or event) carries the epoch it began in and the script refuses
// it in any other, so nothing begun before the loss lands after it; fills are then dropped and
// event batches applied again in the new epoch. Entries of an older epoch are never served, but
// their versions still bound what can be written. OnNewEpoch tells the node, which then stops
// using L2 until the shared consumer group has caught up with its L1 (see package node).
//
// The client is a go-redis UniversalClient: one address, a Sentinel master name, or several
// Cluster addresses. Every call has explicit dial, read and write timeouts and honours the
// context's deadline. When Redis fails, the tier stops calling it for a back-off period and
// returns ErrUnavailable at once, so a node keeps serving from L1 and the origin without waiting
// on a dead L2.
//
// Usage:
//
//	t, err := redistier.New(redistier.Config{Addrs: []string{"127.0.0.1:6379"}})
//	tok := t.BeginFill(ctx, "user:1")              // before reading the origin
//	ok, err := t.Fill(ctx, tok, "user:1", 7, value) // refused if Redis has seen a newer version, or a new epoch began
//	e, found, err := t.Get(ctx, "user:1")
//
// A Tier is safe for concurrent use. After Close every call returns ErrClosed.
package redistier
