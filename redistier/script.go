package redistier

import "github.com/redis/go-redis/v9"

// Entries are stored as: version (20 zero-padded digits), kind (v value, n not found, t
// tombstone; w and u are a value and a not-found from a versionless origin, stored under a lease
// at a version they are at least as new as), the epoch they were written in (epochLen characters), then the value. Entries
// written before epochs existed used upper-case kinds and no epoch: they count only as version
// floors, and nodes from before epochs cannot decode the lower-case kinds, so during a rolling
// upgrade neither side serves what the other wrote.
const (
	epochLen  = 16
	headerLen = 20 + 1 + epochLen
)

// applyScript and eventsScript are the only write paths into the tier: applyScript writes fills,
// leases and drops, mirroring invalidation.AcceptFill (mode "fill"), and eventsScript applies
// change events, mirroring invalidation.Decide; TestScriptMatchesGoRules checks both.
// Every write first checks the epoch: a write that began under another epoch than the one Redis
// holds now (or under any epoch, when Redis lost its epoch key) changes nothing. An entry of an
// older epoch (or format) still counts for its version, but not as held: Redis may have lost
// newer writes to it, so refresh-held leaves a tombstone there rather than a value.
// A fill over a tombstone never shortens how long the key is remembered.
//
// An EVICT ('X', written by eventsScript) leaves a tombstone marked with an x after the epoch. Redis cannot tell when a
// fill's load began, and a load begun before the EVICT may carry the value it dropped (read from
// Redis itself, or from the origin before it was repaired), on a node whose L1 has not seen the
// EVICT yet and so admits it. So every fill is refused (0) while that tombstone lives (until
// TombstoneTTL, or a newer event replaces it), above its version too: Redis then holds a lower
// version than the fill's, but no value that could send a reader back. The marked tombstone is
// written over a tombstone or a missing key too (at version 0 then), for the same reason; only a
// dropped value counts as applied. The key is not cached in Redis while it lives.
//
//	KEYS[1] the entry key
//	KEYS[2] the epoch key (in the entry's hash slot)
//	ARGV[1] version, 20 zero-padded digits
//	ARGV[2] mode: "fill", "lease" or "drop"
//	ARGV[3] fill: kind to store, v (value) or n (not found); lease: w or u
//	ARGV[4] lease: the SHA-1 (hex) of the entry when the lease was taken, or "none" when there
//	        was none
//	ARGV[5] value
//	ARGV[6] TTL in ms of a stored value (v or n)
//	ARGV[7] TTL in ms of a tombstone
//	ARGV[8] the epoch the write began under (epochLen characters)
//
// A lease fill (an answer from a versionless origin, Meta's leases) is a compare-and-set: it
// stores at ARGV[1], the version the entry had when the load began, and only if the entry is
// still byte for byte what it was then (any event, fill or expiry in between changes it). What
// it stores (kind w or u) may be newer than an event above that version carrying a value, so
// such an event evicts it rather than refreshing it, and leaves a tombstone marked with an l
// after the epoch: while it lives, events above it leave marked tombstones too, and no event's
// value is written for the key (refresh-all), lest it be older than the answer that was served.
// A drop leaves the same marked tombstone at the version held (0 over nothing), whatever was
// held (an EVICT's tombstone keeps its x, and gets the l after it; an EVICT keeps an l), then
// '#' and ARGV[5], a nonce: a drop always changes the entry, so that a lease taken before it
// (on a tombstone a drop would otherwise write again byte for byte) is refused: a node whose versionless answer Redis did not take drops what Redis holds instead, as
// it may be older than that answer.
//
// It returns -1 when the epoch differs, 0 when nothing changed (stale fill, fill of an evicted
// key; for an event: a duplicate or older one, an EVICT of no value), 1 when it wrote a
// tombstone, 2 when it stored a value.
var applyScript = redis.NewScript(`
local ep = redis.call('GET', KEYS[2])
if not ep or string.sub(ep, 1, 16) ~= ARGV[8] then return -1 end
local cur = redis.call('GET', KEYS[1])
local known, cv, held, leased = false, '', false, false
if cur and string.len(cur) >= 21 then
  known, cv = true, string.sub(cur, 1, 20)
  local k = string.sub(cur, 21, 21)
  held = (k == 'v' or k == 'n' or k == 'w' or k == 'u') and string.sub(cur, 22, 37) == ARGV[8]
  leased = k == 'w' or k == 'u'
end
local v = ARGV[1]
if ARGV[2] == 'drop' then
  local mark = 'l'
  if known and string.sub(cur, 21, 21) == 't' and string.sub(cur, 38, 38) == 'x' then mark = 'xl' end
  if not known then cv = '00000000000000000000' end
  local ttl = tonumber(ARGV[7])
  if known then
    local rem = redis.call('PTTL', KEYS[1])
    if rem > ttl then ttl = rem end
  end
  redis.call('SET', KEYS[1], cv .. 't' .. ARGV[8] .. mark .. '#' .. ARGV[5], 'PX', ttl)
  return 1
end
if ARGV[2] == 'lease' then
  local sum = 'none'
  if cur then sum = redis.sha1hex(cur) end
  if sum ~= ARGV[4] then return 0 end
  local ttl = tonumber(ARGV[6])
  if known and not held then
    local rem = redis.call('PTTL', KEYS[1])
    if rem > ttl then ttl = rem end
  end
  redis.call('SET', KEYS[1], v .. ARGV[3] .. ARGV[8] .. ARGV[5], 'PX', ttl)
  return 2
end
if ARGV[2] == 'fill' then
  if known and v < cv then return 0 end
  if known and string.sub(cur, 21, 21) == 't' and string.sub(cur, 38, 38) == 'x' then return 0 end
  local ttl = tonumber(ARGV[6])
  if known and not held then
    local rem = redis.call('PTTL', KEYS[1])
    if rem > ttl then ttl = rem end
  end
  redis.call('SET', KEYS[1], v .. ARGV[3] .. ARGV[8] .. ARGV[5], 'PX', ttl)
  return 2
end
return redis.error_reply('unknown mode ' .. ARGV[2])
`)

// eventsScript applies a batch of change events whose keys share one epoch key (the whole tier,
// or one hash slot in cluster mode), in order, in one call: one round trip and one script run
// per batch and slot instead of one per event. Each event follows invalidation.Decide, with the
// entry kinds and marks applyScript describes (TestScriptMatchesGoRules checks it through
// Apply, which runs this script with one event): an R above the version held stores its value
// when the policy allows (never over a leased answer or an l-marked tombstone), an X turns a
// held value into a tombstone at its own version marked x (ARGV version unused), anything else
// above the version held leaves a tombstone. A key may occur several times: each event sees
// what the one before it wrote.
//
//	KEYS[1]   the epoch key
//	KEYS[1+i] event i's entry key (i from 1)
//	ARGV[1] the epoch the batch began under; ARGV[2] the policy ("held", "all" or "evict");
//	ARGV[3] the TTL in ms of a stored value; ARGV[4] the TTL in ms of a tombstone;
//	ARGV[2+3i], ARGV[3+3i], ARGV[4+3i] event i's version (20 digits), kind (R, X or E) and value
//
// It returns -1 (nothing applied) when the epoch differs, else one result per event, as
// applyScript's.
var eventsScript = redis.NewScript(`
local ep = redis.call('GET', KEYS[1])
if not ep or string.sub(ep, 1, 16) ~= ARGV[1] then return -1 end
local epoch, policy, vttl, tttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
for i = 1, #KEYS - 1 do
  local key, v, kind = KEYS[i + 1], ARGV[2 + 3 * i], ARGV[3 + 3 * i]
  local cur = redis.call('GET', key)
  local known, cv, k, held, leased = false, '', '', false, false
  if cur and string.len(cur) >= 21 then
    known, cv, k = true, string.sub(cur, 1, 20), string.sub(cur, 21, 21)
    held = (k == 'v' or k == 'n' or k == 'w' or k == 'u') and string.sub(cur, 22, 37) == epoch
    leased = k == 'w' or k == 'u'
  end
  local lt = leased or (k == 't' and string.find(string.sub(cur, 38, 39), 'l', 1, true) ~= nil)
  if kind == 'X' then
    local r, mark = 0, 'x'
    if known then
      if k ~= 't' and k ~= 'T' then r = 1 end
      if lt then mark = 'xl' end
    else
      cv = '00000000000000000000'
    end
    redis.call('SET', key, cv .. 't' .. epoch .. mark, 'PX', tttl)
    out[i] = r
  elseif known and v <= cv then
    out[i] = 0
  elseif kind == 'R' and not lt and (policy == 'all' or (policy == 'held' and held)) then
    redis.call('SET', key, v .. 'v' .. epoch .. ARGV[4 + 3 * i], 'PX', vttl)
    out[i] = 2
  else
    local mark = ''
    if lt then mark = 'l' end
    redis.call('SET', key, v .. 't' .. epoch .. mark, 'PX', tttl)
    out[i] = 1
  end
end
return out
`)

// epochScript returns the epoch Redis holds, starting one when it holds none (a new Redis, or
// one that lost its data). With ARGV[3] = "stamp", it also starts a new epoch when the one held
// was not started by this server process: the value records the run_id of the server that
// started it, so a restart that reloaded a snapshot, or a replica promoted after a failover,
// begins a new epoch even though the old epoch key came back with the data.
//
//	KEYS[1] the epoch key
//	ARGV[1] a new epoch (epochLen characters), used if one is started
//	ARGV[2] the run_id of the server, as read on this connection ("" when unknown)
//	ARGV[3] "stamp" or "get"
var epochScript = redis.NewScript(`
local e = redis.call('GET', KEYS[1])
if e and (ARGV[3] ~= 'stamp' or ARGV[2] == '' or string.sub(e, 18) == ARGV[2]) then return e end
local n = ARGV[1] .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], n)
return n
`)
