// Package lru is cachewire's in-process cache tier (L1): a versioned LRU bounded by entry count
// and by bytes, built on hashicorp/golang-lru/v2.
//
// Every entry carries the version it was written at. The tier applies change events with
// invalidation.Decide (a newer event refreshes or evicts, an older or duplicate one changes
// nothing), and accepts a fill from a slower tier or the origin only when the fill's version is
// at least the highest version it has seen for the key. Evictions by events leave tombstones
// (key and version, no value), kept for TombstoneTTL, which must be longer than the loader
// timeout: a slow loader that read old data before an invalidation arrived cannot put it back.
// When the tier must forget a version it learned less than TombstoneTTL ago (its tombstone
// budget is full, or it was flushed), it raises a fence, and every fill that began before that
// (see BeginFill) is rejected.
//
// Usage:
//
//	c, _ := lru.New(lru.Config{MaxEntries: 10000, MaxBytes: 64 << 20})
//	tok := c.BeginFill()        // before reading the origin
//	v, ver := loadFromOrigin(key)
//	c.Fill(key, ver, v, tok)    // rejected if an invalidation at a newer version arrived meanwhile
//	if it, ok := c.Get(key); ok { use(it.Value, it.Version) }
//
// A Cache is safe for concurrent use.
package lru
