// Package redistier is cachewire's shared Redis tier (L2).
//
// Entries are stored under a configurable key prefix as one string each: the version as 20
// zero-padded decimal digits (so Lua compares uint64 versions exactly, as strings), one kind byte
// (V value, N cached "not found", T tombstone) and the value. Fills and event applies run as
// atomic Lua scripts (EVALSHA, loading the script when Redis does not have it) that enforce the
// same rules as the in-process tier, invalidation.AcceptFill and invalidation.Decide, so two
// nodes racing a slow fill against an invalidation can never put an old value back.
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
//	ok, err := t.Fill(ctx, "user:1", 7, value)   // refused if Redis has seen a newer version
//	e, found, err := t.Get(ctx, "user:1")
//
// A Tier is safe for concurrent use. After Close every call returns ErrClosed.
package redistier
