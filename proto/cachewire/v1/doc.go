// Package cachewirepb is cachewire's wire contract, generated from the .proto files beside it
// (scripts/genproto.sh regenerates it with pinned tools; CI fails when it is out of date):
//
//   - event.proto: ChangeEvent, the record value on the event topics (key, version, op, value,
//     committed_at, source, trace);
//   - cache.proto: CacheService, what a cache node serves (Get, BatchGet, Set, Invalidate, Stats);
//   - writer.proto: WriterService (Put, Delete) and OriginService.Get, the origin a node loads
//     misses from.
//
// Import it as pb or cachewirepb.
package cachewirepb
